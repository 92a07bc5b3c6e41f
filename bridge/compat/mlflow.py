"""MLflow's fluent API over bridge: ``import bridge.compat.mlflow as mlflow``.

A script written for ``mlflow.start_run`` / ``mlflow.log_metric`` records into the bridge
spool and reaches MLflow (or any backend) through the sync agent. Mapping:

- an experiment is a bridge *project*; its ``experiment_id`` is its name;
- ``start_run`` → :func:`bridge.init` (``run_name`` → name, ``description`` → notes,
  ``run_id=`` resumes that bridge run, ``nested=True`` records the parent's bridge run id in
  the tags ``mlflow.parentRunId`` and ``bridge.parent_run_id``);
- run ids are bridge run ids (32 hex characters), so they are known before any sync;
- ``set_tracking_uri(uri)`` makes later runs deliver to MLflow at ``uri``;
  :func:`configure` sets any other :func:`bridge.init` argument (``dir``, ``sync``, ...).

Like MLflow, logging without an active run starts one, and runs still open at exit are
finished by bridge. ``autolog`` is accepted and does nothing.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bridge.adapters.mlflow.names import BRIDGE_PARENT_TAG
from bridge.adapters.mlflow.names import MLFLOW_PARENT_TAG as PARENT_TAG
from bridge.errors import BridgeWarning, RunStateError, Terminated

__all__ = [
    "ActiveRun", "Experiment", "RunData", "RunInfo", "active_run", "autolog", "configure",
    "end_run", "get_experiment_by_name", "get_tracking_uri", "last_active_run",
    "log_artifact", "log_artifacts", "log_dict", "log_figure", "log_metric", "log_metrics",
    "log_param", "log_params", "log_text", "set_experiment", "set_tag", "set_tags",
    "set_tracking_uri", "start_run",
]  # fmt: skip


@dataclass
class Experiment:
    experiment_id: str
    name: str
    lifecycle_stage: str = "active"
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str | None
    status: str = "RUNNING"
    start_time: int = 0
    end_time: int | None = None
    lifecycle_stage: str = "active"
    artifact_uri: str | None = None

    @property
    def run_uuid(self) -> str:
        return self.run_id


@dataclass
class RunData:
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class ActiveRun:
    """What ``start_run`` returns: ``.info``, ``.data`` and the bridge run as ``.run``;
    as a context manager it ends the run (FAILED when an exception escapes)."""

    def __init__(self, run: Any, experiment_id: str) -> None:
        self.run = run
        self.info = RunInfo(run_id=run.id, experiment_id=experiment_id, run_name=run.name,
                            start_time=getattr(run, "start_ms", 0))
        self.data = RunData(tags=run.tags)
        self._sampler: Any = None

    def __enter__(self) -> "ActiveRun":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, (KeyboardInterrupt, Terminated)):
            status = "KILLED"
        else:
            status = "FAILED"
        if self in _stack:
            # Runs nested inside and left open end first, as MLflow does.
            while _stack and _stack[-1] is not self:
                end_run(status)
            end_run(status)
        return False

    def __repr__(self) -> str:
        return f"<ActiveRun: run_id={self.info.run_id}, name={self.info.run_name}>"


_stack: list[ActiveRun] = []
_last: ActiveRun | None = None
_experiment: str | None = None
_tracking_uri: str | None = None
_defaults: dict[str, Any] = {}


def configure(**init_kwargs: Any) -> None:
    """Arguments every later ``start_run`` passes to :func:`bridge.init` (``dir``,
    ``backends``, ``sync``, ...). ``configure()`` with no arguments clears them."""
    global _tracking_uri
    if not init_kwargs:
        _defaults.clear()
        _tracking_uri = None
    _defaults.update(init_kwargs)


def set_tracking_uri(uri: str | os.PathLike) -> None:
    """Later runs deliver to MLflow at ``uri`` (an ``http(s)://`` server or a database URI)."""
    global _tracking_uri
    _tracking_uri = str(uri)


def get_tracking_uri() -> str | None:
    return _tracking_uri


def set_experiment(experiment_name: str | None = None,
                   experiment_id: str | None = None) -> Experiment:
    """Later runs go to this project (MLflow's experiment); returns it."""
    global _experiment
    name = experiment_name or experiment_id
    if not name:
        raise ValueError("set_experiment needs experiment_name or experiment_id")
    _experiment = str(name)
    return Experiment(experiment_id=_experiment, name=_experiment)


def get_experiment_by_name(name: str) -> Experiment:
    return Experiment(experiment_id=name, name=name)


def start_run(run_id: str | None = None, experiment_id: str | None = None,
              run_name: str | None = None, nested: bool = False,
              parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None,
              description: str | None = None, log_system_metrics: bool | None = None,
              **_ignored: Any) -> ActiveRun:
    """Start (or with ``run_id`` resume) a run and make it the active one."""
    global _last
    if _stack and not nested and parent_run_id is None:
        raise RunStateError(
            f"Run with UUID {_stack[-1].info.run_id} is already active. To start a new run, "
            "first end the current run with mlflow.end_run(). To start a nested run, call "
            "start_run with nested=True"
        )
    parent = parent_run_id or (_stack[-1].info.run_id if _stack else None)
    all_tags = {str(k): v for k, v in (tags or {}).items()}
    if parent:
        all_tags[PARENT_TAG] = parent
        all_tags[BRIDGE_PARENT_TAG] = parent
    kwargs = dict(_defaults)
    project = experiment_id or _experiment or kwargs.pop("project", None)
    kwargs.pop("project", None)
    if _tracking_uri is not None and "backends" not in _defaults:
        kwargs["backends"] = [{"name": "mlflow", "tracking_uri": _tracking_uri}]
    if run_id is not None:
        kwargs.update(run_id=run_id, resume="must")
    import bridge

    run = bridge.init(project=project, name=run_name, notes=description,
                      tags=all_tags or None, **kwargs)
    active = ActiveRun(run, experiment_id=run.project)
    if log_system_metrics:
        from bridge.system_metrics import start_for

        active._sampler = start_for(run, True)
    _stack.append(active)
    _last = active
    return active


def active_run() -> ActiveRun | None:
    return _stack[-1] if _stack else None


def last_active_run() -> ActiveRun | None:
    return _stack[-1] if _stack else _last


def end_run(status: str = "FINISHED") -> None:
    """End the active run (no-op when there is none)."""
    if not _stack:
        return
    active = _stack.pop()
    if active._sampler is not None:
        active._sampler.stop()
    active.run.finish(status)
    active.info.status = status
    active.info.end_time = int(time.time() * 1000)


def _target(run_id: str | None = None) -> ActiveRun:
    if run_id is not None:
        for a in reversed(_stack):
            if a.info.run_id == run_id:
                return a
        warnings.warn(f"run {run_id} is not active in this process; logging to the active "
                      "run instead", BridgeWarning, stacklevel=3)
    return _stack[-1] if _stack else start_run()


# -- params, metrics, tags --------------------------------------------------------------


def log_param(key: str, value: Any, synchronous: bool | None = None) -> Any:
    a = _target()
    a.run.log_param(key, value)
    a.data.params[key] = str(value)
    return value


def log_params(params: Mapping[str, Any], synchronous: bool | None = None,
               run_id: str | None = None) -> None:
    a = _target(run_id)
    a.run.log_params(params)
    a.data.params.update({k: str(v) for k, v in dict(params).items()})


def log_metric(key: str, value: Any, step: int | None = None, timestamp: int | None = None,
               synchronous: bool | None = None, run_id: str | None = None,
               **_ignored: Any) -> None:
    """``timestamp`` is in milliseconds, as in MLflow; a metric without step is stepless."""
    a = _target(run_id)
    a.run.log_metric(key, value, step=step, timestamp=timestamp)
    a.data.metrics[key] = value


def log_metrics(metrics: Mapping[str, Any], step: int | None = None,
                timestamp: int | None = None, synchronous: bool | None = None,
                run_id: str | None = None, **_ignored: Any) -> None:
    a = _target(run_id)
    a.run.log_metrics(metrics, step=step, timestamp=timestamp)
    a.data.metrics.update(dict(metrics))


def set_tag(key: str, value: Any, synchronous: bool | None = None) -> None:
    _target().run.set_tag(key, value)


def set_tags(tags: Mapping[str, Any], synchronous: bool | None = None) -> None:
    _target().run.set_tags(dict(tags))


# -- files -----------------------------------------------------------------------------


def _artifact_name(artifact_path: str | None, file_name: str) -> str:
    """A bridge artifact lands in MLflow under ``<name>/``: the folder MLflow would use."""
    return artifact_path.strip("/") if artifact_path and artifact_path.strip("/") else file_name


def log_artifact(local_path: str | os.PathLike, artifact_path: str | None = None,
                 run_id: str | None = None) -> None:
    """Copy a file into the run, under ``artifact_path`` (see docs: without it, the file
    lands in a folder of its own name)."""
    p = Path(local_path)
    _target(run_id).run.log_artifact(p, name=_artifact_name(artifact_path, p.name))


def log_artifacts(local_dir: str | os.PathLike, artifact_path: str | None = None,
                  run_id: str | None = None) -> None:
    """Copy a directory's files into the run, under ``artifact_path`` (default: its name)."""
    p = Path(local_dir)
    _target(run_id).run.log_artifact(p, name=_artifact_name(artifact_path, p.name))


def log_dict(dictionary: Any, artifact_file: str, run_id: str | None = None) -> None:
    _target(run_id).run.log_dict(dictionary, artifact_file)


def log_text(text: str, artifact_file: str, run_id: str | None = None) -> None:
    _target(run_id).run.log_text(text, artifact_file)


def log_figure(figure: Any, artifact_file: str, *, save_kwargs: dict | None = None,
               run_id: str | None = None) -> None:
    """Save a matplotlib figure (anything with ``savefig``) as an image artifact."""
    if not hasattr(figure, "savefig"):
        warnings.warn(f"log_figure: {type(figure).__name__} has no savefig(); only "
                      "matplotlib figures are supported; not recorded", BridgeWarning,
                      stacklevel=2)
        return
    target = Path(artifact_file)
    with tempfile.TemporaryDirectory(prefix="bridge-fig-") as tmp:
        path = Path(tmp) / target.name
        figure.savefig(path, **(save_kwargs or {}))
        parent = target.parent.as_posix()
        name = _artifact_name(None if parent == "." else parent, target.name)
        _target(run_id).run.log_artifact(path, name=name, type="image")


def autolog(*args: Any, **kwargs: Any) -> None:
    """Accepted so scripts run unchanged; bridge does not patch frameworks."""
    warnings.warn("mlflow.autolog is not supported by bridge; use the framework "
                  "integrations in bridge.integrations", BridgeWarning, stacklevel=2)
