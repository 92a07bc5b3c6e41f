"""MLflow 3 logged models (``model`` events, recorded by the MLflow tracking-store plugin)
to W&B in its native form: a model artifact (type ``model``) of the run.

The model's name, params, tags and type arrive in its ``create`` event and later changes;
they are kept in the run's delivery state and written as the artifact's metadata when the
model's files arrive (``files``), with ``bridge_model_id`` naming the spool's model. Model
metrics are the run's own points (already in its history); the run's output link and the
status need no W&B call.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from bridge.adapters.wandb.names import check_artifact_name

__all__ = ["plan_model"]


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
    if op == "params":
        model["params"].update(p.get("params") or {})
    elif op == "tags":
        model["tags"].update(p.get("tags") or {})
    elif op == "delete_tag":
        model["tags"].pop(p.get("key"), None)
    elif op == "status":
        model["status"] = p.get("status")
    elif op == "files":
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
                         "model_type": model["model_type"], "params": model["params"],
                         "tags": model["tags"]}})
    elif op not in ("metrics", "output"):
        return f"unknown logged-model change {op!r}"
    return None
