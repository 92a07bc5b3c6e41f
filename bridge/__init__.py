"""bridge: local-first experiment tracking that never loses data.

``run = bridge.init(project=..., backends=["mlflow", "wandb"])`` records every call into a
local SQLite spool first; a sync agent delivers it to the backends, now or later.
Module-level shortcuts act on the current run and, like MLflow's fluent API, start one
when none is open.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from bridge import errors
from bridge.errors import BridgeError, BridgeWarning
from bridge.registry import current
from bridge.run import Run, init

__all__ = [
    "Audio",
    "BridgeError",
    "BridgeWarning",
    "DisabledRun",
    "Histogram",
    "Html",
    "Image",
    "Object3D",
    "Table",
    "Video",
    "Run",
    "SummaryWriter",
    "data",
    "errors",
    "finish",
    "flush",
    "init",
    "log",
    "log_artifact",
    "log_dict",
    "log_event",
    "log_media",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "log_text",
    "run",
    "runs",
    "set_tag",
    "set_tags",
    "track",
    "__version__",
]

__version__ = "0.1.0"

F = TypeVar("F", bound=Callable[..., Any])


def run() -> Run | None:
    """The current run, or None."""
    return current()


def _current() -> Run:
    r = current()
    return r if r is not None else init()


def log(data: Mapping[str, Any], step: int | None = None) -> None:
    _current().log(data, step=step)


def log_metric(key: str, value: Any, step: int | None = None, timestamp: int | None = None) -> None:
    _current().log_metric(key, value, step=step, timestamp=timestamp)


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    _current().log_metrics(metrics, step=step)


def log_param(key: str, value: Any) -> None:
    _current().log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    _current().log_params(params)


def set_tag(key: str, value: Any) -> None:
    _current().set_tag(key, value)


def set_tags(tags: Any) -> None:
    _current().set_tags(tags)


def log_artifact(path: Any, name: str | None = None, type: str = "file") -> None:
    _current().log_artifact(path, name=name, type=type)


def log_text(text: str, name: str) -> None:
    _current().log_text(text, name)


def log_dict(dictionary: Any, name: str) -> None:
    _current().log_dict(dictionary, name)


def log_event(name: str, payload: Any = None) -> None:
    _current().log_event(name, payload)


def log_model(model: Any, name: str) -> None:
    _current().log_model(model, name)


def log_media(key: str, value: Any, step: int | None = None,
              timestamp: int | None = None) -> None:
    _current().log_media(key, value, step=step, timestamp=timestamp)


def flush(timeout: float | None = None) -> bool:
    r = current()
    return r.flush(timeout) if r is not None else True


def finish(status: str = "FINISHED") -> None:
    r = current()
    if r is not None:
        r.finish(status)


def track(func: F | None = None, /, **init_kwargs: Any) -> Any:
    """Decorate a training function so each call is one run (Lab's ``@e.start_run``).

    ``@bridge.track(project="p")`` or ``@bridge.track``; the run is passed as ``run=`` when
    the function accepts that keyword.
    """
    import functools
    import inspect

    def wrap(fn: F) -> F:
        takes_run = "run" in inspect.signature(fn).parameters

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with init(**init_kwargs) as r:
                if takes_run:
                    kwargs.setdefault("run", r)
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap(func) if func is not None else wrap


def data(*args: Any, **kwargs: Any):
    """Events as a pandas DataFrame (omega-ml's ``exp.data()``); see :func:`bridge.query.data`."""
    from bridge.query import data as _data

    return _data(*args, **kwargs)


def runs(*args: Any, **kwargs: Any):
    """Runs as a pandas DataFrame; see :func:`bridge.query.runs`."""
    from bridge.query import runs as _runs

    return _runs(*args, **kwargs)


_LAZY = {"DisabledRun": "bridge.disabled", "SummaryWriter": "bridge.summary_writer",
         **{n: "bridge.media" for n in ("Audio", "Histogram", "Html", "Image", "Object3D",
                                        "Table", "Video")}}


def __getattr__(name: str) -> Any:
    """Load rarely used classes on first use, keeping ``import bridge`` light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
