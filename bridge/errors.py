"""Every error a user of bridge can see.

Hierarchy::

    BridgeError
    ├── ConfigError          bad init() arguments, bridge.toml or BRIDGE_* values
    ├── InvalidValueError    a logged key or value bridge cannot store (strict=True only;
    │                        otherwise a BridgeWarning is emitted and counted on the run)
    ├── RunStateError        a call on a finished run, resume="must" of an unknown run, ...
    ├── SpoolError           the spool cannot be opened or written
    │   └── SchemaVersionError  a spool written by a newer bridge
    └── SyncError            `bridge sync` could not deliver everything

Terminated (a SystemExit) is raised in the main thread on SIGTERM once a run is open, so the
stack unwinds and every open run is finished as KILLED; the process exits with status 143.

BridgeWarning is the warning category for input bridge normalized or refused.
"""

from __future__ import annotations

__all__ = [
    "BridgeError",
    "BridgeWarning",
    "ConfigError",
    "InvalidValueError",
    "RunStateError",
    "SchemaVersionError",
    "SpoolError",
    "SyncError",
    "Terminated",
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


class SyncError(BridgeError):
    """Some events could not be delivered."""


class BridgeWarning(UserWarning):
    """Input that bridge normalized or refused without stopping the training loop."""


class Terminated(SystemExit):
    """SIGTERM arrived: the process is exiting; open runs end as KILLED."""
