"""MLflow 3 logged models (``model`` events) and dataset inputs (``dataset`` events), both
recorded by the MLflow tracking-store plugin, to W&B in its native form: a model artifact
(type ``model``) and a dataset artifact (type ``dataset``) of the run.

The model's name, params, tags and type arrive in its ``create`` event and later changes;
they are kept in the run's delivery state and written as the artifact's metadata when the
model's files arrive (``files``), with ``bridge_model_id`` naming the spool's model. Model
metrics are the run's own points (already in its history); the run's output link and the
status need no W&B call.

A dataset becomes an artifact named after the dataset, holding ``dataset.json`` (digest,
source type, source, schema, profile, input tags: MLflow's whole record) and, when the
source names a URI W&B can reference without reading it (``s3://``, ``gs://``,
``http(s)://``), a reference to that URI as ``source/<last part>`` (``checksum=False``:
nothing is fetched; the entry's digest is the URI). The same fields are the artifact's
metadata. Offline W&B refuses ``use_artifact`` ("Cannot use artifact when in offline
mode"), so the artifact is logged as the run's output in every mode;
``bridge_used_as: "input"`` in its metadata says what it was. A replay logs the same
bytes and metadata again: W&B gives identical contents the same digest, hence the same
version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from bridge.spool.events import apply_model_change
from bridge.adapters.wandb.names import (DATASET_FILE, REFERENCE_DIR, REFERENCE_SCHEMES,
                                         check_artifact_name)

__all__ = ["dataset_uri", "plan_dataset", "plan_model", "reference_name"]



def plan_model(run: Any, plan: Any, ev: Any,
               safe_relpath: Callable[[str | None], str | None]) -> str | None:
    """Add the W&B side of one ``model`` event to ``plan``; a reason when it cannot."""
    p = ev.payload or {}
    op = p.get("op")
    models = run.state.setdefault("mlflow_models", {})
    mid = ev.key or ""
    if op == "create":
        models[mid] = {"name": p.get("name") or mid, "model_type": p.get("model_type"),
                       "params": dict(p.get("params") or {}), "tags": dict(p.get("tags") or {}),
                       "status": p.get("status")}
        return None
    model = models.get(mid)
    if model is None:
        return f"logged model {mid}: its 'create' event was not delivered to W&B"
    if apply_model_change(model, p):  # params, tags, status: the artifact's metadata
        return None
    if op == "files":
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", model["name"])
        reason = check_artifact_name(name)
        if reason:
            return reason
        base = [s for s in (p.get("path") or "").split("/") if s]
        files = []
        for f in p.get("files") or []:
            rel = safe_relpath("/".join(base + [str(f.get("path") or "")]))
            if rel is None:
                return f"model file path {f.get('path')!r} is not a relative path"
            blob = run.blob_path(f["sha256"])
            if not blob.exists():
                return f"model file {rel!r} is missing from the spool blob store"
            files.append((rel, f["sha256"], blob))
        plan.artifacts.append({
            "name": name, "type": "model", "files": files,
            "metadata": {"bridge_run_id": run.run_id, "bridge_model_id": mid,
                         "mlflow_model_name": model["name"],
                         # copies: later changes in the same batch must not alter them
                         "model_type": model["model_type"], "params": dict(model["params"]),
                         "tags": dict(model["tags"])}})
    elif op not in ("metrics", "output"):
        return f"unknown logged-model change {op!r}"
    return None


def dataset_uri(source: Any) -> str | None:
    """The URI a dataset's source names, when W&B can hold it as a reference.

    MLflow serialises a dataset source as JSON (``{"uri": ...}`` for files, S3, HTTP;
    ``{"tags": ...}`` for data built in code); a bare string may be the URI itself."""
    uri = source
    if isinstance(source, str):
        try:
            decoded = json.loads(source)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            uri = decoded.get("uri") or decoded.get("url") or decoded.get("path")
    if not isinstance(uri, str):
        return None
    parsed = urlparse(uri)
    return uri if parsed.scheme in REFERENCE_SCHEMES and parsed.netloc else None


def reference_name(uri: str) -> str:
    """Where a dataset's reference sits in its artifact: ``source/<last part of the URI>``,
    apart from ``dataset.json`` whatever the URI is called."""
    last = [s for s in urlparse(uri).path.split("/") if s]
    return f"{REFERENCE_DIR}/{last[-1] if last else urlparse(uri).netloc}"


def plan_dataset(run: Any, plan: Any, ev: Any, stage_dir: Path) -> str | None:
    """Add one ``dataset`` event to ``plan`` as a W&B dataset artifact; a reason when it
    cannot. ``dataset.json`` is written content-addressed under ``stage_dir`` (where the
    adapter keeps offline copies of artifact files), so a replay reuses it."""
    d = ev.payload or {}
    logged = str(d.get("name") or ev.key or "")
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", logged)
    reason = check_artifact_name(name)
    if reason:
        return reason
    if not d.get("digest"):
        return f"dataset {logged!r} has no digest"
    record = {"name": logged, "digest": d.get("digest"), "source_type": d.get("source_type"),
              "source": d.get("source"), "schema": d.get("schema"),
              "profile": d.get("profile"), "tags": dict(d.get("tags") or {})}
    data = (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    sha = hashlib.sha256(data).hexdigest()
    blob = stage_dir / sha[:2] / sha
    if not blob.exists():
        blob.parent.mkdir(parents=True, exist_ok=True)
        part = blob.with_suffix(".part")
        part.write_bytes(data)
        os.replace(part, blob)
    uri = dataset_uri(d.get("source"))
    plan.artifacts.append({
        "name": name, "type": "dataset", "files": [(DATASET_FILE, sha, blob)],
        "references": [(uri, reference_name(uri))] if uri else [],
        "metadata": {"bridge_run_id": run.run_id, "bridge_used_as": "input",
                     "mlflow_dataset_name": logged, **{k: v for k, v in record.items()
                                                       if k != "name"}}})
    return None
