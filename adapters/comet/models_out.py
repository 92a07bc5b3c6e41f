"""MLflow 3 logged models (``model`` events) and dataset inputs (``dataset`` events), as the
MLflow tracking-store plugin recorded them, in Comet's native forms.

A logged model is a Comet model of the experiment: each of its files goes through
``Experiment.log_model(name, file, file_name=path, metadata=...)`` (an upload of type
``model-element`` grouped under the model's name, on the Models tab), the same path the
adapter takes for bridge artifacts of type ``model``. The model's name, id, type, status,
params and tags are kept per run (``run.state["comet_models"]``, updated from every model
event of a batch, replayed ones included, so a replay of ``files`` finds them) and written
twice: as each file's metadata, and as the "other" ``mlflow_model.<name>`` (JSON; Comet's
model metadata cannot change after upload, an other can), rewritten on every change. A
second model of the run with the same name is ``<name>-<model id>`` in Comet.

A dataset uses Comet's dataset info, ``log_dataset_info(name, version=digest, path=...)``
(the experiment's "dataset_info" other, ``<name>-<digest>, <uri or source type>``), and its
whole MLflow record (digest, source type, source, schema, profile, input tags) as the other
``mlflow_dataset.<name>`` (an asset when longer than Comet keeps an other). Comet holds one
dataset info per experiment: the last dataset wins there; each keeps its own other.
``log_dataset_hash`` is not used: it logs an MD5 of ``str(data)``, not MLflow's digest.

Replays follow the adapter: its ledger skips events an archive already holds.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from bridge.adapters.comet import names as N
from bridge.spool.events import apply_model_change
from bridge.adapters.comet.names import (DATASET_OTHER_PREFIX, META_MODEL_ID,
                                         MODEL_OTHER_PREFIX)

__all__ = [
    "ModelRefused",
    "model_refusal",
    "note_models",
    "write_dataset",
    "write_model",
]

STATE_KEY = "comet_models"


class ModelRefused(Exception):
    """Comet cannot take this model or dataset event as it is (a dead letter)."""


def note_models(state: dict, events: Iterable[Any]) -> None:
    """Apply the batch's model events to the run's model records, in order (idempotent:
    a replayed batch leaves the same records)."""
    models = state.setdefault(STATE_KEY, {})
    for ev in events:
        if ev.kind != "model":
            continue
        p, mid = ev.payload or {}, ev.key or ""
        op = p.get("op")
        if op == "create":
            name = str(p.get("name") or mid)
            taken = {m["comet_name"] for k, m in models.items() if k != mid}
            models[mid] = {
                "comet_name": name if name not in taken else f"{name}-{mid}",
                "name": name, "model_type": p.get("model_type"),
                "experiment": p.get("experiment"), "status": p.get("status"),
                "params": dict(p.get("params") or {}), "tags": dict(p.get("tags") or {})}
            continue
        model = models.get(mid)
        if model is None:
            continue
        apply_model_change(model, p)


def model_refusal(ev: Any, run: Any) -> str | None:
    """Why a ``model`` event cannot go to Comet, checked before anything is written."""
    p, mid = ev.payload or {}, ev.key or ""
    op = p.get("op")
    if op not in ("create", "params", "tags", "delete_tag", "status", "files", "metrics",
                  "output"):
        return f"unknown logged-model change {op!r}"
    if op != "create" and mid not in run.state.get(STATE_KEY, {}):
        return f"logged model {mid}: its 'create' event was not delivered to Comet"
    if op == "files":
        if run.blob_root is None:
            return "the run has no blob store"
        for f in p.get("files") or []:
            parts = str(f.get("path") or "").split("/")
            if not f.get("path") or ".." in parts:
                return f"unsafe model file path {f.get('path')!r}"
            if not run.blob_path(f["sha256"]).is_file():
                return f"model file {f['path']!r} (sha256 {f['sha256']}) is missing from the spool"
    return None


def _record(mid: str, model: Mapping[str, Any]) -> dict[str, Any]:
    return {"mlflow_model_id": mid, "name": model["name"], "model_type": model["model_type"],
            "experiment": model["experiment"], "status": model["status"],
            "params": model["params"], "tags": model["tags"]}


def write_model(writer: Any, ev: Any) -> None:
    """One ``model`` event into the experiment ``writer`` (the adapter's batch writer)."""
    p, mid = ev.payload or {}, ev.key or ""
    op = p.get("op")
    model = writer.run.state.get(STATE_KEY, {}).get(mid)
    if model is None:
        raise ModelRefused(f"logged model {mid}: its 'create' event was not delivered to Comet")
    if op in ("create", "params", "tags", "delete_tag", "status"):
        if len(MODEL_OTHER_PREFIX + model["comet_name"]) > N.MAX_KEY:
            raise ModelRefused(f"Comet keeps names of at most {N.MAX_KEY} characters: "
                               f"{MODEL_OTHER_PREFIX + model['comet_name']!r}")
        writer.other(MODEL_OTHER_PREFIX + model["comet_name"],
                     json.dumps(_record(mid, model), sort_keys=True))
    elif op == "files":
        base = [s for s in str(p.get("path") or "").split("/") if s]
        meta = {META_MODEL_ID: mid, "mlflow_model_name": model["name"],
                "model_type": model["model_type"], "status": model["status"],
                "params": json.dumps(model["params"], sort_keys=True),
                "tags": json.dumps(model["tags"], sort_keys=True)}
        for f in p.get("files") or []:
            rel = "/".join(base + [s for s in str(f["path"]).split("/") if s])
            blob = str(writer.run.blob_path(f["sha256"]))
            result = writer.exp.log_model(model["comet_name"], blob, file_name=rel,
                                          metadata={**meta, "sha256": f["sha256"]})
            if result is None:
                raise ModelRefused(f"comet_ml refused file {rel!r} of model "
                                   f"{model['comet_name']!r}")
            writer.uploads += 1
    # "metrics": the run's own points (already its metrics); "output": nothing to add.


def write_dataset(writer: Any, ev: Any) -> None:
    """One ``dataset`` event: Comet's dataset info and hash, and the whole record."""
    d = ev.payload or {}
    name, digest = str(d.get("name") or ""), str(d.get("digest") or "")
    if not name or not digest:
        raise ModelRefused("dataset without a name or digest")
    key = DATASET_OTHER_PREFIX + name
    if len(key) > N.MAX_KEY:
        raise ModelRefused(f"Comet keeps names of at most {N.MAX_KEY} characters: {key!r}")
    source = d.get("source")
    writer.exp.log_dataset_info(name=name, version=digest,
                                path=_source_path(source) or d.get("source_type"))
    record = {"name": name, "digest": digest, "source_type": d.get("source_type"),
              "source": source, "schema": d.get("schema"), "profile": d.get("profile"),
              "tags": dict(d.get("tags") or {})}
    writer.other(key, json.dumps(record, sort_keys=True))


def _source_path(source: Any) -> str | None:
    """The URI or path a dataset source names (MLflow serialises sources as JSON)."""
    try:
        decoded = json.loads(source) if isinstance(source, str) else source
    except ValueError:
        return source
    if isinstance(decoded, Mapping):
        found = decoded.get("uri") or decoded.get("url") or decoded.get("path")
        return str(found) if found else None
    return source if isinstance(source, str) else None
