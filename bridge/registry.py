"""The live runs of this process: the current run for module-level calls, and the runs that
exit, signal and fork handling must finish or hand over.

It imports nothing of bridge, so the run, the disabled run and the hooks can all use it
without importing each other.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["active", "current", "forget", "register", "reset_after_fork"]

_lock = threading.RLock()
_active: list[Any] = []  # Run or DisabledRun, oldest first


def register(run: Any) -> None:
    """``run`` becomes the current run (and is finished at exit if still open)."""
    with _lock:
        _active.append(run)


def forget(run: Any) -> None:
    with _lock:
        if run in _active:
            _active.remove(run)


def current() -> Any:
    """The most recently started run that is still open, or None."""
    with _lock:
        return _active[-1] if _active else None


def active() -> list[Any]:
    """A snapshot of the open runs, oldest first."""
    with _lock:
        return list(_active)


def reset_after_fork() -> list[Any]:
    """In a forked child: forget the parent's runs (the child's exit must not finish them)
    and return them, so the writer pool can hand them a writer of the child's own."""
    global _lock
    _lock = threading.RLock()  # the parent's lock may have been held by another thread
    runs = list(_active)
    _active.clear()
    return runs
