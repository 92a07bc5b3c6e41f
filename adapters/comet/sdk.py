"""Import ``comet_ml`` for bridge without leaving a setting behind in the host process.

Settings that belong to one experiment (no code, git, environment or output capture, ...)
go through ``comet_ml.ExperimentConfig`` (``names.QUIET_CONFIG``) and never touch the
process. Three settings (``names.IMPORT_ENV``: no Sentry reporting, no import hooks on ML
frameworks, console at WARNING) are read by comet_ml only while ``import comet_ml`` runs,
and only from environment variables or its config files: comet_ml builds a fresh config from
``os.environ`` on every lookup and has no config object to set before it is imported. They
are therefore set as environment variables, but only:

- in a process bridge owns for the job (``bridge sync``, ``bridge import``, a script that
  drives an adapter): not in a user's training process, recognised by the in-process
  background sync thread (:func:`host_process`). There comet_ml is imported exactly as the
  user's own ``import comet_ml`` would be, since the settings it reads at import stay with
  the module for the life of the process (the price: comet_ml's "comet upload" hint is
  logged once per offline archive);
- when bridge is the one importing comet_ml (it is not in ``sys.modules`` yet);
- for a variable the user has not set (a user's own setting wins);
- for the duration of the import only, under a lock, and then restored exactly (a variable
  is removed again only if it still holds the value bridge gave it).
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator, Mapping

from bridge.adapters.base import require
from bridge.adapters.comet.names import IMPORT_ENV

__all__ = ["BACKGROUND_SYNC_THREAD", "host_process", "load_comet_ml", "scoped_env"]

BACKGROUND_SYNC_THREAD = "bridge-background-sync"  # bridge.agent.background's thread name

_LOCK = threading.Lock()


def host_process() -> bool:
    """Whether this is a user's process with an in-process background sync running."""
    return any(t.name == BACKGROUND_SYNC_THREAD for t in threading.enumerate())


@contextmanager
def scoped_env(defaults: Mapping[str, str]) -> Iterator[None]:
    """Give the environment ``defaults`` for unset variables, then restore it exactly."""
    added = {k: v for k, v in defaults.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k, v in added.items():
            if os.environ.get(k) == v:  # unless someone set it meanwhile
                del os.environ[k]


def load_comet_ml() -> ModuleType:
    """``comet_ml`` (with ``comet_ml.messages``), quiet when bridge imports it in a process of
    its own; an install hint when it is missing."""
    with _LOCK:
        if "comet_ml" in sys.modules or host_process():
            comet = require("comet_ml", "comet")
        else:
            with scoped_env(IMPORT_ENV):
                comet = require("comet_ml", "comet")
        require("comet_ml.messages", "comet")
    return comet
