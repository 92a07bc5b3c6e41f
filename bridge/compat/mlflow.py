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
finished by bridge.

Everything else of MLflow's API — ``mlflow.sklearn.log_model`` and the other flavors,
``autolog``, ``MlflowClient``, ``log_input`` — is MLflow's own code reached through this
module (:mod:`bridge.compat.mlflow_passthrough`): MLflow is pointed at bridge's
tracking-store plugin on the same spool, and the shim's active run becomes MLflow's active
run, so a flavor's model or an autologged fit lands in the same bridge run.

Media: ``log_image(image, key=, step=, timestamp=)`` records an image at its step (MLflow's
image grid once synced), ``log_image(image, artifact_file)`` a file; ``log_table`` records a
table whose rows accumulate per ``artifact_file`` within the run, as MLflow appends to the
file (each call records the table so far; the last one is what MLflow holds);
``log_figure(..., step=)`` records the figure as an image at that step.
"""

from __future__ import annotations

import os
import re
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
    "log_artifact", "log_artifacts", "log_dict", "log_figure", "log_image", "log_metric",
    "log_metrics", "log_param", "log_params", "log_table", "log_text", "set_experiment",
    "set_tag", "set_tags", "set_tracking_uri", "start_run",
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
    from bridge.compat import mlflow_passthrough

    if mlflow_passthrough.enabled():
        mlflow_passthrough.bind(run)
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
    for held in [k for k in _tables if k[0] == active.info.run_id]:
        del _tables[held]
    if active._sampler is not None:
        active._sampler.stop()
    from bridge.compat import mlflow_passthrough

    mlflow_passthrough.unbind(active.info.run_id, status)
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
               run_id: str | None = None, step: int | None = None,
               timestamp: int | None = None) -> None:
    """Save a matplotlib figure (anything with ``savefig``) as an image artifact; with
    ``step``, as an image at that step under the key ``artifact_file`` without its extension
    (MLflow's image grid), so a figure drawn each epoch keeps its epoch."""
    if not hasattr(figure, "savefig"):
        warnings.warn(f"log_figure: {type(figure).__name__} has no savefig(); only "
                      "matplotlib figures are supported; not recorded", BridgeWarning,
                      stacklevel=2)
        return
    if step is not None:
        import io

        import bridge

        buf = io.BytesIO()
        figure.savefig(buf, **{**(save_kwargs or {}), "format": "png"})
        key = str(artifact_file).rsplit(".", 1)[0] if "." in Path(artifact_file).name \
            else str(artifact_file)
        _target(run_id).run.log_media(key, bridge.Image(buf.getvalue()), step=step,
                                      timestamp=timestamp)
        return
    target = Path(artifact_file)
    with tempfile.TemporaryDirectory(prefix="bridge-fig-") as tmp:
        path = Path(tmp) / target.name
        figure.savefig(path, **(save_kwargs or {}))
        parent = target.parent.as_posix()
        name = _artifact_name(None if parent == "." else parent, target.name)
        _target(run_id).run.log_artifact(path, name=name, type="image")


def _pil(image: Any) -> Any:
    """A PIL image from what ``mlflow.log_image`` takes (numpy array, PIL image,
    ``mlflow.Image``), converted as bridge converts arrays."""
    if hasattr(image, "to_pil"):  # mlflow.Image
        return image.to_pil()
    if hasattr(image, "save") and hasattr(image, "mode"):
        return image
    import io

    from PIL import Image as PILImage

    from bridge.media.encode import array_to_png

    try:
        png, _, _ = array_to_png(image)
    except ValueError as exc:
        raise TypeError(f"Unsupported image object: {exc}") from None
    return PILImage.open(io.BytesIO(png))


_IMAGE_KEY = re.compile(r"^[a-zA-Z0-9_\-./ ]+$")  # the keys mlflow.log_image accepts


def log_image(image: Any, artifact_file: str | None = None, key: str | None = None,
              step: int | None = None, timestamp: int | None = None,
              synchronous: bool | None = None, run_id: str | None = None) -> None:
    """An image at a step (``key``, ``step`` default 0, ``timestamp`` in ms), shown in
    MLflow's image grid once synced; or, with ``artifact_file``, an image file."""
    if artifact_file is not None and any(a is not None for a in (key, step, timestamp)):
        raise TypeError("log_image: artifact_file cannot be given with key, step or timestamp")
    if artifact_file is None and key is None:
        raise TypeError("log_image: give key (an image at a step) or artifact_file (a file)")
    pil = _pil(image)
    a = _target(run_id)
    if key is not None:
        if not _IMAGE_KEY.match(key):
            raise ValueError(f"log_image: the key {key!r} may only contain alphanumerics, "
                             "underscores, dashes, periods, spaces and slashes")
        import bridge

        a.run.log_media(key, bridge.Image(pil), step=step or 0, timestamp=timestamp)
        return
    target = Path(str(artifact_file))
    with tempfile.TemporaryDirectory(prefix="bridge-img-") as tmp:
        path = Path(tmp) / target.name
        pil.save(path)
        parent = target.parent.as_posix()
        a.run.log_artifact(path, name=_artifact_name(None if parent == "." else parent,
                                                     target.name), type="image")


_TABLE_FORBIDDEN = set("\"',:[]{}")
# Rows of each table recorded so far, per bridge run and artifact_file: MLflow appends.
_tables: dict[tuple[str, str], tuple[list[str], list[list[Any]]]] = {}


def _table_cell(value: Any) -> Any:
    if hasattr(value, "to_pil"):  # mlflow.Image
        value = value.to_pil()
    if hasattr(value, "save") and hasattr(value, "resize") and hasattr(value, "size"):
        import bridge

        return bridge.Image(value)
    return value


def log_table(data: Any, artifact_file: str, run_id: str | None = None) -> None:
    """A table (a dict of columns or a DataFrame; PIL or ``mlflow.Image`` cells are images)
    delivered to MLflow as ``log_table`` writes it, at ``artifact_file``. Calls with the same
    ``artifact_file`` append rows, as in MLflow."""
    bad = sorted(_TABLE_FORBIDDEN & set(artifact_file))
    if bad:
        raise ValueError(f"The artifact_file contains forbidden character: {bad[0]}")
    if not artifact_file.endswith((".json", ".parquet")):
        raise ValueError(f"Invalid artifact file path {artifact_file!r}: a table file ends "
                         "with .json or .parquet")
    import pandas as pd

    import bridge

    if isinstance(data, dict):
        try:
            frame = pd.DataFrame(data)
        except ValueError:  # scalars only: one row
            frame = pd.DataFrame([data])
    elif isinstance(data, pd.DataFrame):
        frame = data
    else:
        raise TypeError("data must be a pandas.DataFrame or a dictionary")
    a = _target(run_id)
    columns = [str(c) for c in frame.columns]
    rows = [[_table_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    held = _tables.get((a.run.id, artifact_file))
    if held is not None:
        old_cols, old_rows = held
        merged = old_cols + [c for c in columns if c not in old_cols]
        pad = [[*r, *([None] * (len(merged) - len(r)))] for r in old_rows]
        place = {c: merged.index(c) for c in columns}
        new = []
        for row in rows:
            cells: list[Any] = [None] * len(merged)
            for c, v in zip(columns, row):
                cells[place[c]] = v
            new.append(cells)
        columns, rows = merged, pad + new
    _tables[(a.run.id, artifact_file)] = (columns, rows)
    table = bridge.Table(columns=columns, data=rows)
    table.source = {"vendor": "mlflow", "descriptor": {"artifact_file": artifact_file}}
    a.run.log_media(artifact_file, table)


def autolog(*args: Any, **kwargs: Any) -> Any:
    """MLflow's own ``mlflow.autolog``, recording into the spool through the plugin (the
    active shim run, or a run per fit as MLflow starts them)."""
    return __getattr__("autolog")(*args, **kwargs)


def __getattr__(name: str) -> Any:
    """What the shim does not define is MLflow's own (``mlflow.sklearn``, ``MlflowClient``,
    ``log_input``…), recording into the same spool and run."""
    if name.startswith("__"):
        raise AttributeError(name)
    from bridge.compat import mlflow_passthrough

    run = _stack[-1].run if _stack else None
    spool = _defaults.get("dir")
    return mlflow_passthrough.attribute(name, run, Path(spool) if spool else None)
