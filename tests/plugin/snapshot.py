"""What an MLflow tracking server holds, normalized for a field-by-field comparison of two
servers: ids and times aside (run ids, model ids, timestamps differ between two executions),
bridge's own bookkeeping aside (``bridge.*`` tags, the ``bridge/`` artifact folder)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

# Files whose bytes name ids or times: MLmodel (run id, model id, creation time), and
# model.skops (a zip archive: its entries carry the time they were written).
VOLATILE_FILES = {"MLmodel", "model.skops"}


def _files(list_fn, download_fn, path: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in list_fn(path or None):
        if f.path == "bridge" or f.path.startswith("bridge/"):
            continue
        if f.is_dir:
            out.update(_files(list_fn, download_fn, f.path))
        elif f.path.rsplit("/", 1)[-1] in VOLATILE_FILES:
            out[f.path] = "volatile"
        else:
            with tempfile.TemporaryDirectory() as d:
                local = Path(download_fn(f.path, d))
                out[f.path] = hashlib.sha256(local.read_bytes()).hexdigest()
    return out


def _tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if not k.startswith("bridge.")
            and k not in ("mlflow.parentRunId",)}


def snapshot(client: Any) -> dict[str, Any]:
    from mlflow.entities import ViewType

    out: dict[str, Any] = {}
    for exp in client.search_experiments(view_type=ViewType.ALL):
        runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL,
                                  max_results=1000)
        names = {r.info.run_id: r.info.run_name for r in runs}
        exp_out: dict[str, Any] = {"lifecycle_stage": exp.lifecycle_stage, "runs": {},
                                   "models": {}}
        for r in runs:
            rid = r.info.run_id
            history = {k: sorted((m.step, m.value) for m in client.get_metric_history(rid, k))
                       for k in r.data.metrics}
            exp_out["runs"][r.info.run_name] = {
                "status": r.info.status,
                "ended": r.info.end_time is not None,
                "parent": names.get(r.data.tags.get("mlflow.parentRunId")),
                "params": dict(r.data.params),
                "tags": _tags(dict(r.data.tags)),
                "metrics": dict(r.data.metrics),
                "history": history,
                "artifacts": _files(lambda p, rid=rid: client.list_artifacts(rid, p),
                                    lambda p, d, rid=rid: client.download_artifacts(rid, p, d)),
                "datasets": sorted((d.dataset.name, d.dataset.digest, d.dataset.source_type,
                                    tuple(sorted((t.key, t.value) for t in d.tags)))
                                   for d in (r.inputs.dataset_inputs if r.inputs else [])),
                "outputs": len(r.outputs.model_outputs) if r.outputs else 0,
            }
        for m in client.search_logged_models([exp.experiment_id]):
            from mlflow.artifacts import download_artifacts

            def list_fn(p, m=m):
                from mlflow.store.artifact.artifact_repository_registry import \
                    get_artifact_repository
                return get_artifact_repository(m.artifact_location).list_artifacts(p)

            def dl_fn(p, d, m=m):
                return download_artifacts(f"{m.artifact_location}/{p}", dst_path=d)

            exp_out["models"][(names.get(m.source_run_id), m.name)] = {
                "status": str(m.status), "model_type": m.model_type,
                "params": dict(m.params), "tags": _tags(dict(m.tags)),
                "metrics": sorted((x.key, x.step, x.value) for x in m.metrics or []),
                "artifacts": _files(list_fn, dl_fn),
            }
        out[exp.name] = exp_out
    return out
