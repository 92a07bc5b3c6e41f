"""The adapter contract: what every backend implements and what the agent relies on.

Modelled on OpenTelemetry's exporters: an adapter is small and synchronous, starts no
threads and never sleeps. It translates spool events into one vendor's calls and says
what happened (:class:`ExportResult`). Retries, cursors, batching, leases and dead
letters belong to the agent (``bridge.agent``); an adapter never touches the spool.

Third-party adapters register a class under the entry-point group ``bridge.adapters``::

    [project.entry-points."bridge.adapters"]
    mybackend = "mypkg.bridge_adapter:MyAdapter"
"""

from __future__ import annotations

import enum
import importlib
import os
import math
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

from bridge.errors import AdapterError, MissingDependency, RemoteRunLost, TransientError
from bridge.spool.events import Event, Kind

__all__ = [
    "Adapter",
    "AdapterState",
    "BaseAdapter",
    "AdapterError",
    "Event",
    "ExportResult",
    "Kind",
    "Limits",
    "Outcome",
    "RunInfo",
    "MissingDependency",
    "RemoteRunLost",
    "TransientError",
    "available_adapters",
    "capability",
    "is_known_adapter",
    "flatten",
    "keep_private",
    "load_adapter",
    "require",
]

ENTRY_POINT_GROUP = "bridge.adapters"

# Event kinds (bridge.spool.events.Kind, the one definition), as names adapters compare with.
METRIC = Kind.METRIC
PARAM = Kind.PARAM
TAG = Kind.TAG
SUMMARY = Kind.SUMMARY
ARTIFACT = Kind.ARTIFACT
TEXT = Kind.TEXT
DICT = Kind.DICT
EVENT = Kind.EVENT
SYSTEM = Kind.SYSTEM
NOTE = Kind.NOTE


class Outcome(enum.Enum):
    """What a backend said about a batch."""

    SUCCESS = "success"
    RETRY = "retry"
    PERMANENT = "permanent"


class AdapterState(dict):
    """The adapter's own memory for one (backend, run), e.g. the last step delivered per
    series: **mutable by design**, the one thing an adapter changes in what it is given.

    JSON-serializable. The agent hands it over in ``RunInfo.state``, saves it in the same
    transaction as the cursor after every SUCCESS (so it always describes what the backend
    confirmed), and hands it back on the next sync session; it is forgotten with the
    cursors when the remote run is lost.
    """


@dataclass(frozen=True)
class RunInfo:
    """What the agent knows about a run when it talks to a backend."""

    run_id: str
    project: str
    name: str | None = None
    notes: str | None = None
    group: str | None = None
    start_ms: int = 0
    end_ms: int | None = None
    status: str = "RUNNING"  # RUNNING | FINISHED | FAILED | KILLED
    options: Mapping[str, Any] = field(default_factory=dict)  # this backend's options
    blob_root: Path | None = None
    remote_id: str | None = None  # from run_map, when a previous sync opened it
    # The adapter's own memory for this (backend, run): see AdapterState.
    state: "AdapterState" = field(default_factory=lambda: AdapterState())
    # Files logged with ``log_artifact(copy=False)``: sha256 -> the source file, filled by
    # the agent once it checked the file still holds those bytes.
    references: dict = field(default_factory=dict)

    def blob_path(self, sha256: str) -> Path:
        """Where the bytes of a content-addressed artifact file are: the spool's blob store,
        or the user's own file for one logged by reference."""
        if sha256 in self.references:
            return Path(self.references[sha256])
        if self.blob_root is None:
            raise AdapterError("this run has no blob store")
        return self.blob_root / sha256[:2] / sha256


@dataclass(frozen=True)
class ExportResult:
    """The answer to one ``export`` call.

    SUCCESS: every event of the batch is confirmed by the backend, except those in
    ``rejected`` (uid -> reason), which the backend refused for good.
    RETRY: nothing is confirmed; try the same batch again, after ``retry_after`` seconds
    when the backend said so.
    PERMANENT: the whole batch was refused for good, for ``reason``.
    """

    outcome: Outcome
    reason: str = ""
    retry_after: float | None = None
    rejected: Mapping[tuple[str, int], str] = field(default_factory=dict)

    @classmethod
    def success(cls, rejected: Mapping[tuple[str, int], str] | None = None) -> "ExportResult":
        return cls(Outcome.SUCCESS, rejected=dict(rejected or {}))

    @classmethod
    def retry(cls, reason: str, retry_after: float | None = None) -> "ExportResult":
        return cls(Outcome.RETRY, reason=reason, retry_after=retry_after)

    @classmethod
    def permanent(cls, reason: str) -> "ExportResult":
        return cls(Outcome.PERMANENT, reason=reason)


@dataclass(frozen=True)
class Limits:
    """What the agent needs to know of a backend: how many events one export may carry.

    A vendor's own limits (entities per request, key lengths) live in its names module and
    are enforced by its adapter, which splits or refuses within a batch."""

    max_events: int = 1000  # events per export call


@runtime_checkable
class Adapter(Protocol):
    """The four calls the agent makes; see the module docstring."""

    name: ClassVar[str]
    limits: ClassVar[Limits]
    # Optional: ``concurrent_runs`` (int attribute, default 1) lets the agent sync that many
    # runs of this backend at once, each through its own adapter instance.
    # Optional: ``check_remote(run) -> None`` verifies cheaply (one request) that the mapped
    # remote run still exists, raising :class:`RemoteRunLost` when it does not; the agent
    # calls it for a (backend, run) with nothing left to deliver, so a wiped backend is
    # noticed even when no new event would open the run.

    def open_run(self, run: RunInfo) -> str:
        """Create or find the remote run (idempotent) and return its remote id."""

    def export(self, run: RunInfo, batch: Sequence[Event]) -> ExportResult:
        """Deliver a batch of the run's events, in the agent's order."""

    def close_run(self, run: RunInfo, status: str, end_time_ms: int) -> None:
        """Mark the remote run ended, with bridge's status and end time."""

    def shutdown(self) -> None:
        """Release everything the adapter holds (clients, files, SDK processes)."""


class BaseAdapter:
    """Base class of bridge's adapters; third-party adapters may subclass it too.

    It declares the optional capabilities with their defaults, so the agent reads them as
    attributes instead of probing for them; an adapter that does not subclass it gets these
    defaults.
    """

    name: ClassVar[str]
    limits: ClassVar[Limits] = Limits()
    #: Runs of this backend the agent may sync at once, each through its own instance.
    concurrent_runs: ClassVar[int] = 1
    #: Each export opens and closes a vendor session (W&B, Comet offline): background sync
    #: delivers such a backend every ``agent.session_interval`` while the run trains.
    session_per_export: ClassVar[bool] = False
    #: ``check_remote`` does something (one request): the agent calls it for a (backend,
    #: run) with nothing left to deliver, so a wiped backend is noticed.
    checks_remote: ClassVar[bool] = False

    def run_url(self, run: RunInfo, remote_id: str) -> str | None:
        """Where a person sees the run (shown by `bridge status`), or None."""
        return None

    def check_remote(self, run: RunInfo) -> None:
        """Raise :class:`RemoteRunLost` when the mapped remote run no longer exists."""
        return None

    def shutdown(self) -> None:
        """Release everything the adapter holds (clients, files, SDK processes)."""
        return None


def capability(adapter: Any, name: str) -> Any:
    """``adapter``'s declared capability ``name``, or :class:`BaseAdapter`'s default."""
    return getattr(adapter, name, getattr(BaseAdapter, name))


_REQUIRED = ("open_run", "export", "close_run", "shutdown")

_BUILTIN = {
    "memory": "bridge.adapters.memory:MemoryAdapter",
    "mlflow": "bridge.adapters.mlflow:MlflowAdapter",
    "wandb": "bridge.adapters.wandb:WandbAdapter",
    "neptune": "bridge.adapters.neptune:NeptuneAdapter",
    "comet": "bridge.adapters.comet:CometAdapter",
    "trackio": "bridge.adapters.trackio:TrackioAdapter",
    "tensorboard": "bridge.adapters.tensorboard:TensorboardAdapter",
}


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def is_known_adapter(name: str) -> bool:
    """Whether ``name`` is a backend: built-in names answer without scanning the installed
    distributions' entry points (tens of ms, paid by every ``bridge.init`` otherwise)."""
    return name in _BUILTIN or name in _entry_points()


def available_adapters() -> list[str]:
    """Names accepted in ``backends=[...]``: built-in ones and registered entry points."""
    return sorted(set(_BUILTIN) | set(_entry_points()))


def _check_contract(name: str, cls: Any) -> type:
    if not isinstance(cls, type):
        raise AdapterError(f"adapter {name!r} must be a class, got {cls!r}")
    missing = [m for m in _REQUIRED if not callable(getattr(cls, m, None))]
    if missing:
        raise AdapterError(
            f"adapter {name!r} ({cls.__module__}.{cls.__qualname__}) does not implement "
            f"the bridge adapter contract: missing {', '.join(missing)}"
        )
    if not isinstance(getattr(cls, "limits", None), Limits):
        raise AdapterError(f"adapter {name!r} must declare `limits = Limits(...)`")
    return cls


def load_adapter(name: str) -> type:
    """Return the adapter class for a backend name, checked against the contract."""
    if name in _BUILTIN:
        module_name, _, attr = _BUILTIN[name].partition(":")
        module = importlib.import_module(module_name)
        return _check_contract(name, getattr(module, attr))
    eps = _entry_points()
    if name not in eps:
        raise AdapterError(
            f"unknown backend {name!r}; known: {', '.join(available_adapters())}"
        )
    return _check_contract(name, eps[name].load())


def require(module: str, extra: str) -> Any:
    """Import a vendor SDK lazily, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"the {extra} backend needs {module!r}: pip install 'tracking-bridge[{extra}]'"
        ) from exc


def flatten(value: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (how MLflow and Comet show nested config)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = f"{prefix}{sep}{k}" if prefix else str(k)
            out.update(flatten(v, key, sep))
        return out
    return {prefix: value}


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def keep_private(path: Path) -> None:
    """Vendor output bridge wrote (an offline run directory, an archive) readable by its
    owner only, as the spool is: files 0600, directories 0700. The vendors' SDKs write with
    the process umask (often 0644), and a library must not change the umask of its host."""
    try:
        if path.is_symlink():
            return
        if path.is_dir():
            os.chmod(path, 0o700)
            for root, dirs, files in os.walk(path):
                for name in dirs:
                    p = os.path.join(root, name)
                    if not os.path.islink(p):
                        os.chmod(p, 0o700)
                for name in files:
                    p = os.path.join(root, name)
                    if not os.path.islink(p):
                        os.chmod(p, 0o600)
        elif path.exists():
            os.chmod(path, 0o600)
    except OSError:
        pass  # a file removed meanwhile; never fail a confirmed delivery over modes
