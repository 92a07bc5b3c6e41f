"""Every error a user of bridge can see.

Hierarchy::

    BridgeError
    ├── ConfigError          bad init() arguments, bridge.toml or BRIDGE_* values
    ├── InvalidValueError    a logged key or value bridge cannot store (strict=True only;
    │                        otherwise a BridgeWarning is emitted and counted on the run)
    ├── RunStateError        a call on a finished run, resume="must" of an unknown run, ...
    ├── SpoolError           the spool cannot be opened or written (also an OSError)
    │   ├── SchemaVersionError  a spool written by a newer bridge
    │   └── UnsafeBlobStore     a link planted in the blob store: nothing written through it
    ├── SyncError            `bridge sync` could not deliver everything
    ├── AdapterError         a backend cannot be found, loaded, configured or reached
    │   ├── TransientError   a failure that may pass: the agent retries (``retry_after``)
    │   ├── RemoteRunLost    the remote run bridge delivered to is gone: re-delivered whole
    │   └── MissingDependency  the vendor SDK a backend needs is not installed
    ├── ImportSourceError    an import source cannot be read (``bridge import``)
    └── VendorFormatError    a vendor's answer or file that bridge cannot use, e.g. an MLflow
                             server's error reply (MlflowRestError), a damaged W&B log
                             (WandbLogError); defined in the vendor's package

Terminated (a SystemExit) is raised in the main thread on SIGTERM once a run is open, so the
stack unwinds and every open run is finished as KILLED; the process exits with status 143.

BridgeWarning is the warning category for input bridge normalized or refused.
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "BridgeError",
    "BridgeWarning",
    "ConfigError",
    "ImportSourceError",
    "InvalidValueError",
    "MissingDependency",
    "RemoteRunLost",
    "RunStateError",
    "SchemaVersionError",
    "SpoolError",
    "SyncError",
    "Terminated",
    "TransientError",
    "UnsafeBlobStore",
    "VendorFormatError",
]


class BridgeError(Exception):
    """Base class of every bridge exception."""


class ConfigError(BridgeError, ValueError):
    """A configuration value is unknown or invalid."""


class InvalidValueError(BridgeError, ValueError):
    """A logged key or value cannot be stored (raised only with ``strict=True``)."""


class RunStateError(BridgeError, RuntimeError):
    """The call does not fit the run's state."""


class SpoolError(BridgeError, OSError):
    """The spool cannot be opened, read or written."""


class SchemaVersionError(SpoolError):
    """The spool file was written by a newer bridge than this one."""


class UnsafeBlobStore(SpoolError):
    """A blob store directory is a symlink or not a directory: nothing is written there."""


class SyncError(BridgeError):
    """Some events could not be delivered."""


class AdapterError(BridgeError):
    """An adapter could not be found, loaded or configured (not retried by the agent)."""


class TransientError(AdapterError):
    """A failure that may pass (server down, rate limit): the agent retries the call.

    Raise it from ``open_run``/``close_run``; ``export`` returns ``ExportResult.retry``.
    Any other exception from an adapter is treated the same way; :class:`AdapterError`
    itself (bad configuration, missing SDK) is not retried.
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RemoteRunLost(AdapterError):
    """The remote run this bridge run was delivered to is gone (or is not this run's).

    Raised by ``open_run``, ``export``, ``close_run`` or ``check_remote`` when the remote id
    the agent mapped no longer exists on the backend: its database was wiped or replaced,
    the run was purged, the tracking URI now points at another server. The agent forgets
    the mapping, the cursors, the adapter's state and the dead letters of that (backend,
    run) and delivers the whole run again from its first event. The adapter forgets its own
    caches for the run before raising.
    """


class MissingDependency(AdapterError):
    """A vendor SDK needed by an adapter is not installed."""


class ImportSourceError(BridgeError):
    """An import source cannot be read (unknown, missing, unsafe or damaged)."""


class VendorFormatError(BridgeError):
    """A vendor's answer or file that bridge cannot use; subclassed in the vendor's package."""


class BridgeWarning(UserWarning):
    """Input that bridge normalized or refused without stopping the training loop."""


class Terminated(SystemExit):
    """SIGTERM arrived: the process is exiting; open runs end as KILLED."""
