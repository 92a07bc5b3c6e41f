"""Delivery of MLflow 3 logged models (``model`` events) and dataset inputs (``dataset``
events) to a real MLflow, as the MLflow tracking-store plugin recorded them.

A logged model is created on the server under the run's experiment with the run as its
source, its params and tags, and the tag ``bridge.model_id`` (the spool's model id: server
ids differ), so a replay finds it instead of creating a second one. Its files are uploaded
with ``log_model_artifacts`` at the same paths, its status set by ``finalize_logged_model``,
its metrics logged with the model's server id, the run's output link by ``log_outputs``.
Datasets go to the run by ``log_inputs``. Every step is idempotent: a replay after a crash
changes nothing.

These calls use MLflow's own ``MlflowClient`` (imported here only, when such an event is
delivered), also when the adapter speaks REST for the rest of the run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from bridge.adapters.mlflow.names import MODEL_ID_TAG

__all__ = ["deliver_dataset", "deliver_model"]


class Unsendable(Exception):
    """The event cannot be delivered as it is (a dead letter, with this reason)."""


def sdk_error() -> type[BaseException]:
    from mlflow.exceptions import MlflowException

    return MlflowException


def _sdk(adapter: Any) -> Any:
    sdk = getattr(adapter.client, "_client_sdk", None)
    return sdk() if sdk is not None else adapter.client


def _remote_model(adapter: Any, client: Any, exp_id: str, model_id: str) -> str | None:
    cache = adapter.__dict__.setdefault("_models", {})
    if model_id in cache:
        return cache[model_id]
    found = client.search_logged_models(
        experiment_ids=[exp_id], filter_string=f"tags.`{MODEL_ID_TAG}` = '{model_id}'",
        max_results=2)
    if found:
        cache[model_id] = found[0].model_id
        return found[0].model_id
    return None


def deliver_model(adapter: Any, run: Any, remote: str, ev: Any, tmp: Path) -> None:
    """One ``model`` event (see bridge.spool.events.model_payload) to the server."""
    from mlflow.entities import LoggedModelOutput, Metric

    client = _sdk(adapter)
    exp_id = adapter._experiment_id(run)
    p: Mapping[str, Any] = ev.payload or {}
    op = p.get("op")
    model_id = ev.key or ""
    server_id = _remote_model(adapter, client, exp_id, model_id)
    if op == "create":
        if server_id is None:
            created = client.create_logged_model(
                experiment_id=exp_id, name=p.get("name") or None, source_run_id=remote,
                tags={**(p.get("tags") or {}), MODEL_ID_TAG: model_id},
                params=dict(p.get("params") or {}) or None, model_type=p.get("model_type"))
            adapter._models[model_id] = created.model_id
        return
    if server_id is None:
        raise Unsendable(f"logged model {model_id} was not created on the server (its "
                         "'create' event is not delivered)")
    if op == "params":
        client.log_model_params(server_id, dict(p.get("params") or {}))
    elif op == "tags":
        client.set_logged_model_tags(server_id, dict(p.get("tags") or {}))
    elif op == "delete_tag":
        found = client.get_logged_model(server_id)
        if p.get("key") in found.tags:
            client.delete_logged_model_tag(server_id, p["key"])
    elif op == "status":
        client.finalize_logged_model(server_id, p.get("status") or "READY")
    elif op == "files":
        stage = tmp / "model-stage"
        shutil.rmtree(stage, ignore_errors=True)
        base = stage.joinpath(*[s for s in (p.get("path") or "").split("/") if s])
        for f in p.get("files") or []:
            rel = [s for s in str(f.get("path", "")).split("/") if s not in ("", ".")]
            if not rel or ".." in rel:
                raise Unsendable(f"unsafe model file path {f.get('path')!r}")
            src = run.blob_path(f["sha256"])
            if not src.is_file():
                raise Unsendable(f"{f['path']!r} (sha256 {f['sha256']}) is missing from the "
                                 "spool")
            dest = base.joinpath(*rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
        if stage.exists():
            client.log_model_artifacts(server_id, str(stage))
    elif op == "metrics":
        points = [Metric(m["key"], float(m["value"]), int(m["ts_ms"]), int(m["step"]),
                         model_id=server_id, run_id=remote) for m in p.get("metrics") or []]
        if points:
            client.log_batch(remote, metrics=points)
    elif op == "output":
        outputs = client.get_run(remote).outputs
        have = {(o.model_id, o.step) for o in (outputs.model_outputs if outputs else [])}
        step = int(p.get("step") or 0)
        if (server_id, step) not in have:
            client.log_outputs(remote, [LoggedModelOutput(server_id, step)])
    else:
        raise Unsendable(f"unknown logged-model change {op!r}")


def deliver_dataset(adapter: Any, run: Any, remote: str, ev: Any) -> None:
    """One ``dataset`` event (bridge.spool.events.dataset_payload) as a run input."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    d: Mapping[str, Any] = ev.payload or {}
    try:
        ds = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                     source=d["source"], schema=d.get("schema"), profile=d.get("profile"))
    except KeyError as exc:
        raise Unsendable(f"dataset without {exc}") from None
    tags = [InputTag(k, str(v)) for k, v in (d.get("tags") or {}).items()]
    _sdk(adapter).log_inputs(remote, datasets=[DatasetInput(ds, tags)])
