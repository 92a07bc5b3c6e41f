"""Reads answered from the spool: a bridge run's events folded into MLflow's entities.

A run is the union of its writer files (bridge.spool.reader); its params, tags and latest
metrics are what MLflow's stores would hold after the same calls (the latest metric of a key
is the one with the highest (step, timestamp, value), as in MLflow's SQL store). Artifacts are
a virtual folder tree built from ``artifact`` events; logged models from ``model`` events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from mlflow.entities import (Dataset, DatasetInput, Experiment, ExperimentTag, InputTag,
                             LifecycleStage, LoggedModel, LoggedModelOutput,
                             LoggedModelParameter, LoggedModelStatus, LoggedModelTag, Metric,
                             Param, Run, RunData, RunInfo, RunInputs, RunOutputs, RunTag)

from bridge.adapters.base import flatten
from bridge.adapters.mlflow.names import NOTE_TAG, RUN_NAME_TAG
from bridge.adapters.mlflow.plugin import session
from bridge.spool.events import Kind
from bridge.spool.reader import KeptConnections, RunRecord, iter_events, list_runs

USER_TAG = "mlflow.user"


@dataclass
class ModelState:
    model_id: str
    run_id: str
    experiment: str
    name: str = ""
    model_type: str | None = None
    status: str = "PENDING"
    creation_ms: int = 0
    updated_ms: int = 0
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (sha, size)
    metrics: list[dict] = field(default_factory=list)


@dataclass
class RunState:
    record: RunRecord
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    history: dict[str, list[Metric]] = field(default_factory=dict)
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (sha, size)
    models: dict[str, ModelState] = field(default_factory=dict)
    outputs: list[tuple[str, int]] = field(default_factory=list)  # (model id, step)
    datasets: list[dict] = field(default_factory=list)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _join(folder: str | None, path: str) -> str:
    parts = [p for p in f"{folder or ''}/{path}".split("/") if p not in ("", ".")]
    return "/".join(parts)


# MLflow's code reads the same few files many times a second (get_run after every change):
# keep them open instead of opening and schema-checking each file on every read.
_KEPT = KeptConnections()


def fold(record: RunRecord) -> RunState:
    """Every event of the run, in the spool's merged order, as MLflow state."""
    st = RunState(record)
    for ev in iter_events(record.files, record.run_id, opener=_KEPT):
        kind = ev.kind
        if kind == Kind.METRIC:
            if ev.value is not None and ev.key:
                st.history.setdefault(ev.key, []).append(
                    Metric(ev.key, ev.value, ev.ts_ms, ev.step or 0, run_id=record.run_id))
        elif kind == Kind.PARAM:
            payload = ev.payload
            values = flatten(payload, ev.key) if isinstance(payload, Mapping) else {
                ev.key: payload}
            for k, v in values.items():
                st.params.setdefault(k, _text(v))  # MLflow keeps the first (refuses others)
        elif kind == Kind.TAG:
            st.tags[ev.key or ""] = _text(ev.payload)
        elif kind == Kind.NOTE:
            st.tags[NOTE_TAG] = _text(ev.payload or "")
        elif kind == Kind.ARTIFACT:
            payload = ev.payload or {}
            folder = payload.get("folder", ev.key)  # as the adapter delivers it
            for f in payload.get("files", []):
                st.files[_join(folder, f["path"])] = (f["sha256"], f["size"])
        elif kind == Kind.MODEL:
            _fold_model(st, ev)
        elif kind == Kind.DATASET:
            st.datasets.append(ev.payload)
    st.tags.setdefault(RUN_NAME_TAG, record.name or "")
    return st


def _fold_model(st: RunState, ev: Any) -> None:
    p = ev.payload or {}
    op = p.get("op")
    mid = ev.key or ""
    if op == "create":
        st.models[mid] = ModelState(
            model_id=mid, run_id=st.record.run_id, experiment=p.get("experiment") or
            st.record.project, name=p.get("name") or "", model_type=p.get("model_type"),
            status=p.get("status") or "PENDING", creation_ms=ev.ts_ms, updated_ms=ev.ts_ms,
            params=dict(p.get("params") or {}), tags=dict(p.get("tags") or {}))
        return
    m = st.models.get(mid)
    if m is None:
        if op == "output":
            st.outputs.append((mid, int(p.get("step") or 0)))
        return
    m.updated_ms = ev.ts_ms
    if op == "params":
        m.params.update(p.get("params") or {})
    elif op == "tags":
        m.tags.update(p.get("tags") or {})
    elif op == "delete_tag":
        m.tags.pop(p.get("key"), None)
    elif op == "status":
        m.status = p.get("status") or m.status
    elif op == "files":
        for f in p.get("files", []):
            m.files[_join(p.get("path"), f["path"])] = (f["sha256"], f["size"])
    elif op == "metrics":
        m.metrics.extend(p.get("metrics") or [])
    elif op == "output":
        st.outputs.append((mid, int(p.get("step") or 0)))


def latest(points: list[Metric]) -> Metric:
    return max(points, key=lambda m: (m.step, m.timestamp, m.value))


def to_run(st: RunState, spool: Path) -> Run:
    rec = st.record
    info = RunInfo(
        run_id=rec.run_id, experiment_id=session.experiment_id(rec.project),
        user_id=st.tags.get(USER_TAG, ""), status=rec.status, start_time=rec.start_ms,
        end_time=rec.end_ms, lifecycle_stage=LifecycleStage.ACTIVE,
        artifact_uri=session.artifact_uri(spool, "runs", rec.run_id),
        run_name=st.tags.get(RUN_NAME_TAG) or rec.name or "")
    data = RunData(metrics=[latest(v) for v in st.history.values()],
                   params=[Param(k, v) for k, v in st.params.items()],
                   tags=[RunTag(k, v) for k, v in st.tags.items()])
    inputs = RunInputs(dataset_inputs=[_dataset_input(d) for d in st.datasets],
                       model_inputs=[])
    outputs = RunOutputs(model_outputs=[LoggedModelOutput(mid, step) for mid, step in
                                        st.outputs])
    return Run(info, data, inputs, outputs)


def _dataset_input(d: Mapping[str, Any]) -> DatasetInput:
    ds = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                 source=d["source"], schema=d.get("schema"), profile=d.get("profile"))
    return DatasetInput(ds, [InputTag(k, v) for k, v in (d.get("tags") or {}).items()])


def to_model(m: ModelState, spool: Path) -> LoggedModel:
    metrics = [Metric(x["key"], x["value"], x["ts_ms"], x["step"], run_id=m.run_id,
                      model_id=m.model_id) for x in m.metrics]
    return LoggedModel(
        experiment_id=session.experiment_id(m.experiment), model_id=m.model_id, name=m.name,
        artifact_location=session.artifact_uri(spool, "models", m.model_id),
        creation_timestamp=m.creation_ms, last_updated_timestamp=m.updated_ms,
        model_type=m.model_type, source_run_id=m.run_id,
        status=LoggedModelStatus(m.status) if isinstance(m.status, str) else m.status,
        tags=[LoggedModelTag(k, v) for k, v in m.tags.items()],
        params=[LoggedModelParameter(k, v) for k, v in m.params.items()],
        metrics=metrics or None)


# -- experiments ---------------------------------------------------------------------------


def experiments(sp: session.Spool, records: list[RunRecord]) -> list[Experiment]:
    """Projects with runs, and experiments created without one, as MLflow experiments."""
    side = sp.experiments()
    first: dict[str, int] = {}
    for rec in records:
        first[rec.project] = min(first.get(rec.project, rec.start_ms), rec.start_ms)
    names = set(first) | set(side) | {session.DEFAULT_EXPERIMENT}
    out = []
    for name in sorted(names):
        entry = side.get(name, {})
        created = entry.get("creation_time") or first.get(name) or 0
        exp_id = session.experiment_id(name)
        out.append(Experiment(
            experiment_id=exp_id, name=name,
            artifact_location=f"{session.SCHEME}://{sp.path.as_posix()}/_bridge/experiments/"
                              f"{exp_id}",
            lifecycle_stage=entry.get("lifecycle_stage", LifecycleStage.ACTIVE),
            tags=[ExperimentTag(k, v) for k, v in (entry.get("tags") or {}).items()],
            creation_time=created, last_update_time=entry.get("last_update_time") or created))
    return out


def runs(sp: session.Spool) -> list[RunRecord]:
    sp.flush()
    return list_runs(sp.path, opener=_KEPT)


def find(sp: session.Spool, run_id: str) -> RunRecord | None:
    for rec in runs(sp):
        if rec.run_id == run_id:
            return rec
    return None


def all_models(sp: session.Spool, records: list[RunRecord]) -> Iterator[ModelState]:
    for rec in records:
        yield from fold(rec).models.values()
