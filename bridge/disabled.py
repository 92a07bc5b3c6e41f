"""``bridge.init(mode="disabled")``: a run whose every call does nothing (omega-ml's ``notrack``).

Training code keeps calling ``run.log(...)``, reading ``run.config`` and using ``with`` as
usual while nothing touches the disk or the network: for debugging, CI, or a rank that
should not log. ``config`` and ``summary`` still hold what is set, so code reading them back
works; ``data()`` is an empty DataFrame with the usual columns.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, MutableMapping, Sequence

from bridge import registry
from bridge.errors import Terminated

__all__ = ["DisabledRun", "init"]


class _Store(MutableMapping):
    """A plain dict with attribute reads, standing in for ``run.config`` / ``run.summary``."""

    def __init__(self) -> None:
        self.__dict__["_data"] = {}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_data"][key]
        except KeyError:
            raise AttributeError(key) from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


class DisabledRun:
    """The public API of :class:`bridge.Run`; every call is a no-op."""

    disabled = True

    def __init__(self, project: str | None = None, name: str | None = None,
                 config: Mapping[str, Any] | None = None,
                 tags: Mapping[str, Any] | Sequence[str] | None = None,
                 notes: str | None = None, group: str | None = None,
                 run_id: str | None = None, dir: str | os.PathLike | None = None,
                 **_ignored: Any) -> None:
        self.id = run_id or uuid.uuid4().hex
        self.project = project or "default"
        self.name = name
        self.notes = notes
        self.group = group
        self.backends: list[dict] = []
        self.dir = Path(dir).expanduser() if dir is not None else None
        self.strict = False
        self.resumed = False
        self.node = ""
        self.start_ms = 0
        self.status = "RUNNING"
        self.warnings = 0
        self.config = _Store()
        self.summary = _Store()
        self.tags: dict[str, str] = {}
        self._step = 0
        self._finished = False
        if config:
            self.config.update(dict(config))
        if tags:
            self.set_tags(tags)

    def __repr__(self) -> str:
        return f"<bridge.DisabledRun {self.project}/{self.name or self.id}>"

    @property
    def step(self) -> int:
        return self._step

    # Metrics keep the step counter so code that reads run.step behaves the same.
    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        if step is None:
            self._step += 1
        elif isinstance(step, int) and step >= self._step:
            self._step = step + 1

    def log_metric(self, key: str, value: Any, step: int | None = None,
                   timestamp: int | None = None) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None,
                    timestamp: int | None = None) -> None:
        pass

    def log_param(self, key: str, value: Any) -> None:
        self.config[key] = value

    def log_params(self, params: Mapping[str, Any]) -> None:
        try:
            self.config.update(dict(params))
        except (TypeError, ValueError):
            pass

    def set_tag(self, key: str, value: Any) -> None:
        self.tags[key] = value if isinstance(value, str) else str(value)

    def set_tags(self, tags: Mapping[str, Any] | Sequence[str]) -> None:
        if isinstance(tags, Mapping):
            for k, v in tags.items():
                self.set_tag(k, v)
        elif isinstance(tags, (list, tuple, set)):
            for t in tags:
                self.set_tag(t, "")

    def log_text(self, text: str, name: str) -> None:
        pass

    def log_dict(self, dictionary: Any, name: str) -> None:
        pass

    def log_event(self, name: str, payload: Any = None) -> None:
        pass

    def log_features(self, names: Sequence[str]) -> None:
        pass

    def log_artifact(self, path: str | os.PathLike, name: str | None = None,
                     type: str = "file", copy: bool | None = None) -> None:
        pass

    def log_model(self, model: Any, name: str) -> None:
        pass

    def log_media(self, key: str, value: Any, step: int | None = None,
                  timestamp: int | None = None) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def finish(self, status: str = "FINISHED", error: str | None = None,
               timeout: float | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        self.status = status
        registry.forget(self)

    def __enter__(self) -> "DisabledRun":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, (KeyboardInterrupt, Terminated)):
            self.finish("KILLED")
        else:
            self.finish("FAILED")

    def data(self, **filters: Any):
        """An empty DataFrame with the columns of :func:`bridge.data`."""
        import pandas as pd

        from bridge.query import DATA_COLUMNS

        df = pd.DataFrame({c: [] for c in DATA_COLUMNS})
        df["dt"] = pd.to_datetime(df["dt"], unit="ms", utc=True)
        df["step"] = df["step"].astype("Int64")
        return df


def init(**kwargs: Any) -> DisabledRun:
    """A disabled run that is also the current run, so ``bridge.log(...)`` is a no-op too."""
    run = DisabledRun(**kwargs)
    registry.register(run)
    return run
