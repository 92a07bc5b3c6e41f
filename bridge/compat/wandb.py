"""W&B's SDK surface over bridge: ``import bridge.compat.wandb as wandb``.

``wandb.init`` → :func:`bridge.init`; ``wandb.log`` keeps W&B's step rules (the step
advances on each commit; ``commit=False`` adds to the current step; an explicit ``step``
below the current one is dropped with a warning), but every call is written to the spool at
once, at the step it belongs to, so nothing waits for a commit. Other mapping:

- ``id``: a 32-hex id is used as the bridge run id; any other W&B id (``"abc123xy"``) is
  mapped to a stable bridge id (md5 of it), so ``resume`` finds the same run again; the
  given id stays ``run.id`` and is kept as tag ``wandb.id``;
- ``mode="disabled"`` → a :class:`~bridge.disabled.DisabledRun`; ``"offline"`` → bridge's
  ``sync="offline"``; ``dir`` → the spool directory; ``job_type`` → tag ``wandb.job_type``;
- nested dicts in ``log`` are flattened with dots (``{"train": {"loss": 1}}`` →
  ``train.loss``); ``wandb.Image``, ``Histogram``, ``Table``, ``Audio``, ``Video``,
  ``Html`` and ``Object3D`` (this module's, built on :mod:`bridge.media`, or the real
  wandb SDK's) are recorded as media events at the row's step, a string as a text point
  (see :mod:`bridge.compat.wandb_media`);
- ``watch(model, log=..., log_freq=...)`` records parameter/gradient histograms through
  torch hooks, as W&B does.

Module attributes ``wandb.run``, ``wandb.config`` and ``wandb.summary`` follow the current
run, as in W&B.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import operator
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, MutableMapping, Sequence

from bridge.adapters.wandb.names import COMPAT_ID_TAG, COMPAT_JOB_TYPE_TAG, MODE_ENV
from bridge.compat.wandb_media import (
    Audio,
    Histogram,
    Html,
    Image,
    Object3D,
    Table,
    Video,
    unwatch_run,
)
from bridge.errors import BridgeWarning

__all__ = [
    "Artifact", "Audio", "Config", "Histogram", "Html", "Image", "Object3D", "Run",
    "Summary", "Table", "Video", "config", "define_metric", "finish", "init", "log",
    "log_artifact", "login", "run", "save", "summary", "unwatch", "watch",
]  # fmt: skip

run: "Run | None" = None
config: "Config | None" = None
summary: "Summary | None" = None

_HEX = frozenset("0123456789abcdef")


def _bridge_id(wandb_id: str) -> str:
    if len(wandb_id) == 32 and set(wandb_id) <= _HEX:
        return wandb_id
    return hashlib.md5(wandb_id.encode()).hexdigest()


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Config(MutableMapping):
    """``run.config``: item and attribute access; every assignment is logged as a param."""

    def __init__(self, brun: Any) -> None:
        object.__setattr__(self, "_run", brun)

    def __getitem__(self, key: str) -> Any:
        return self._run.config[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._run.log_param(key, value)

    def __delitem__(self, key: str) -> None:
        raise TypeError("config entries cannot be deleted once logged")

    def __iter__(self) -> Iterator[str]:
        return iter(self._run.config)

    def __len__(self) -> int:
        return len(self._run.config)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._run.config[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def update(self, d: Any = None, allow_val_change: bool | None = None,  # type: ignore[override]
               **kw: Any) -> None:
        items = {**(dict(vars(d)) if hasattr(d, "__dict__") and not isinstance(d, Mapping)
                    else dict(d or {})), **kw}
        if items:
            self._run.log_params(items)

    def setdefaults(self, d: Mapping[str, Any]) -> None:
        self.update({k: v for k, v in d.items() if k not in self._run.config})

    def as_dict(self) -> dict[str, Any]:
        return dict(self._run.config)

    def __repr__(self) -> str:
        return f"Config({dict(self._run.config)!r})"


class Summary(MutableMapping):
    """``run.summary``: values set here are recorded as the run's summary."""

    def __init__(self, brun: Any) -> None:
        object.__setattr__(self, "_run", brun)

    def __getitem__(self, key: str) -> Any:
        return self._run.summary[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._run.summary[key] = value

    def __delitem__(self, key: str) -> None:
        raise TypeError("summary entries cannot be deleted once logged")

    def __iter__(self) -> Iterator[str]:
        return iter(self._run.summary)

    def __len__(self) -> int:
        return len(self._run.summary)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._run.summary[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def update(self, d: Any = None, **kw: Any) -> None:  # type: ignore[override]
        for k, v in {**dict(d or {}), **kw}.items():
            self[k] = v


class Artifact:
    """A named set of files (``wandb.Artifact(name, type)``), logged as one bridge artifact."""

    def __init__(self, name: str, type: str, description: str | None = None,
                 metadata: dict | None = None, **_ignored: Any) -> None:
        self.name = name
        self.type = type
        self.description = description
        self.metadata = dict(metadata or {})
        self._entries: list[tuple[Path, str]] = []

    def add_file(self, local_path: str | os.PathLike, name: str | None = None,
                 **_ignored: Any) -> None:
        p = Path(local_path)
        self._entries.append((p, name or p.name))

    def add_dir(self, local_path: str | os.PathLike, name: str | None = None,
                **_ignored: Any) -> None:
        p = Path(local_path)
        self._entries.append((p, name or ""))

    def _stage(self, root: Path) -> None:
        for src, dest in self._entries:
            target = root / dest if dest else root
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)


class Run:
    """The object ``wandb.init`` returns; the bridge run is ``.bridge_run``."""

    def __init__(self, brun: Any, wandb_id: str | None) -> None:
        self.bridge_run = brun
        self.id = wandb_id or brun.id
        self.config = Config(brun)
        self.summary = Summary(brun)
        self._step = brun.step

    # identity, read by scripts
    name = property(lambda self: self.bridge_run.name)
    project = property(lambda self: self.bridge_run.project)
    notes = property(lambda self: self.bridge_run.notes)
    group = property(lambda self: self.bridge_run.group)
    tags = property(lambda self: tuple(self.bridge_run.tags))
    dir = property(lambda self: str(self.bridge_run.dir))
    url = None
    entity = None

    @property
    def step(self) -> int:
        return self._step

    def log(self, data: Mapping[str, Any], step: int | None = None,
            commit: bool | None = None) -> None:
        """W&B's ``log``: see the module docstring for the step rules."""
        try:
            row = _flatten(data)
        except AttributeError:
            self.bridge_run.log(data)  # bridge reports the bad input
            return
        if step is not None:
            try:
                step = operator.index(step)  # int, numpy and torch integers
            except TypeError:
                warnings.warn(f"wandb.log: step must be an integer, got {step!r:.80}; row "
                              "dropped", BridgeWarning, stacklevel=2)
                return
            if step < self._step:
                warnings.warn(f"wandb.log: step {step} is below the current step "
                              f"{self._step}; row dropped (as W&B does)", BridgeWarning,
                              stacklevel=2)
                return
            self._step = step
            if row:
                self.bridge_run.log(row, step=step)
            if commit:
                self._step += 1
            return
        if row:
            self.bridge_run.log(row, step=self._step)
        if commit is None or commit:
            self._step += 1

    def save(self, glob_str: str | os.PathLike, base_path: str | os.PathLike | None = None,
             policy: str = "live") -> list[str]:
        """Copy matching files into the run, each as an artifact named by its path relative
        to ``base_path`` (default: its file name)."""
        paths = sorted(Path(p) for p in _glob.glob(str(glob_str), recursive=True))
        saved = []
        for p in paths:
            if not p.is_file():
                continue
            name = p.relative_to(base_path).as_posix() if base_path else p.name
            self.bridge_run.log_artifact(p, name=name, type="file")
            saved.append(str(p))
        return saved

    def log_artifact(self, artifact_or_path: Any, name: str | None = None,
                     type: str | None = None, aliases: Sequence[str] | None = None,
                     **_ignored: Any) -> Any:
        """A path (file or directory) or an :class:`Artifact`."""
        if isinstance(artifact_or_path, Artifact):
            art = artifact_or_path
            with tempfile.TemporaryDirectory(prefix="bridge-artifact-") as tmp:
                art._stage(Path(tmp))
                self.bridge_run.log_artifact(tmp, name=name or art.name, type=type or art.type)
            return art
        p = Path(artifact_or_path)
        self.bridge_run.log_artifact(p, name=name or p.name, type=type or "file")
        return artifact_or_path

    def define_metric(self, *args: Any, **kwargs: Any) -> None:
        """Accepted; backends chart every series against its step."""

    def watch(self, models: Any, criterion: Any = None, log: str | None = "gradients",
              log_freq: int = 1000, idx: int | None = None, log_graph: bool = False) -> None:
        """Histograms of a torch model's gradients and/or parameters every ``log_freq``
        passes, at the current step (``gradients/<name>``, ``parameters/<name>``)."""
        from bridge.compat.wandb_media import watch as _watch

        if log_graph:
            warnings.warn("wandb.watch: log_graph is not recorded by bridge", BridgeWarning,
                          stacklevel=2)
        _watch(self, models, criterion, log=log, log_freq=log_freq, idx=idx)

    def unwatch(self, models: Any = None) -> None:
        from bridge.compat.wandb_media import unwatch as _unwatch

        _unwatch(models)

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        global run, config, summary
        unwatch_run(self)  # the model outlives the run: its hooks must not log into it
        self.bridge_run.finish("FINISHED" if not exit_code else "FAILED")
        if run is self:
            run, config, summary = None, None, None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.finish(exit_code=0 if exc_type is None else 1)
        return False

    def __repr__(self) -> str:
        return f"<wandb Run {self.project}/{self.name or self.id} (bridge)>"


def init(project: str | None = None, entity: str | None = None, config: Any = None,
         name: str | None = None, notes: str | None = None, tags: Sequence[str] | None = None,
         group: str | None = None, job_type: str | None = None, id: str | None = None,
         resume: bool | str | None = None, mode: str | None = None,
         dir: str | os.PathLike | None = None, reinit: bool | str | None = None,
         settings: Any = None, **bridge_kwargs: Any) -> Run:
    """Start a run (W&B arguments); extra keyword arguments go to :func:`bridge.init`."""
    global run
    if run is not None:
        if reinit in (None, "default", "return_previous", False):
            return run
        if reinit in (True, "finish_previous"):
            run.finish()
    if resume in (True, "auto"):
        resume = "allow"
    elif resume is False:
        resume = None
    mode = mode or os.environ.get(MODE_ENV) or None
    cfg = _as_config(config)
    kwargs: dict[str, Any] = dict(project=project, name=name, notes=notes, group=group,
                                  config=cfg, tags=list(tags) if tags else None, **bridge_kwargs)
    if dir is not None:
        kwargs["dir"] = dir
    if id is not None:
        kwargs["run_id"] = _bridge_id(str(id))
        if resume is not None:
            kwargs["resume"] = resume
    if mode == "disabled":
        from bridge.disabled import init as disabled_init

        brun: Any = disabled_init(**kwargs)
    else:
        if mode in ("offline", "dryrun"):
            kwargs.setdefault("sync", "offline")
        import bridge

        brun = bridge.init(**kwargs)
        if id is not None and kwargs["run_id"] != id:
            brun.set_tag(COMPAT_ID_TAG, str(id))
        if job_type:
            brun.set_tag(COMPAT_JOB_TYPE_TAG, job_type)
    _set_current(Run(brun, str(id) if id is not None else None))
    assert run is not None
    return run


def _as_config(config: Any) -> dict | None:
    if config is None:
        return None
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "__dict__"):  # argparse.Namespace and the like
        return dict(vars(config))
    return dict(config)


def _set_current(r: Run | None) -> None:
    global run, config, summary
    run = r
    config = r.config if r is not None else None
    summary = r.summary if r is not None else None


def _require() -> Run:
    if run is None:
        raise RuntimeError("You must call wandb.init() before wandb.log()")
    return run


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    _require().log(data, step=step, commit=commit)


def save(glob_str: str | os.PathLike, base_path: str | os.PathLike | None = None,
         policy: str = "live") -> list[str]:
    return _require().save(glob_str, base_path=base_path, policy=policy)


def log_artifact(artifact_or_path: Any, name: str | None = None, type: str | None = None,
                 aliases: Sequence[str] | None = None, **kwargs: Any) -> Any:
    return _require().log_artifact(artifact_or_path, name=name, type=type, aliases=aliases)


def define_metric(*args: Any, **kwargs: Any) -> None:
    """Accepted for compatibility; see :meth:`Run.define_metric`."""


def watch(models: Any, criterion: Any = None, log: str | None = "gradients",
          log_freq: int = 1000, idx: int | None = None, log_graph: bool = False) -> None:
    """W&B's ``watch``: see :meth:`Run.watch`."""
    _require().watch(models, criterion, log=log, log_freq=log_freq, idx=idx,
                     log_graph=log_graph)


def unwatch(models: Any = None) -> None:
    """Remove the hooks ``watch`` added."""
    from bridge.compat.wandb_media import unwatch as _unwatch

    _unwatch(models)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    if run is not None:
        run.finish(exit_code=exit_code)


def login(*args: Any, **kwargs: Any) -> bool:
    """Accepted; bridge never handles credentials (backends read their own)."""
    return True
