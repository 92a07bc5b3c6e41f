"""The spool writers of this process, one per spool directory, and their fork recovery.

One writer (a thread and an open file) per process, directory, durability and node:
writers never contend for a lock. Writers with no open run stay open for the
``IDLE_WRITERS_KEPT`` most recently used directories only, so a process that opens runs in
many directories (a trial per directory, a test suite) keeps threads and files bounded.
After ``fork()`` the child forgets the parent's writers and each inherited run gets a writer
of the child's own on its first write.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from bridge import registry
from bridge.spool.writer import SpoolWriter

if TYPE_CHECKING:
    from bridge.config import Settings

__all__ = ["IDLE_WRITERS_KEPT", "close_all", "writer_for"]

IDLE_WRITERS_KEPT = 4

_lock = threading.RLock()
_writers: dict[tuple, SpoolWriter] = {}


def writer_for(settings: "Settings", node: str) -> SpoolWriter:
    """This process's writer for a spool directory (one file per process and directory)."""
    key = (str(settings.dir), settings.durability, node)
    with _lock:
        w = _writers.pop(key, None)
        if w is None or w._closed:
            w = SpoolWriter(
                settings.dir, durability=settings.durability,
                flush_interval=settings.flush_interval, max_queue=settings.max_queue, node=node,
            )
        _writers[key] = w  # most recently used last
        _close_idle(keep=IDLE_WRITERS_KEPT, spare=w)
        return w


def _close_idle(keep: int, spare: SpoolWriter) -> None:
    """Close the least recently used writers that no open run writes to, beyond ``keep``."""
    busy = {id(getattr(run, "_writer", None)) for run in registry.active()}
    idle = [k for k, w in _writers.items() if id(w) not in busy and w is not spare]
    for k in idle[: max(0, len(idle) - keep)]:
        w = _writers.pop(k)
        try:
            w.close()  # commits what its finished runs left queued
        except Exception:
            pass


def close_all() -> None:
    """Commit and close every writer (at exit; tests use it to checkpoint the WAL)."""
    with _lock:
        for w in list(_writers.values()):
            try:
                w.close()
            except Exception:
                pass


class _WriterOnFirstUse:
    """Stands in for a run's writer in a forked child until the child first writes."""

    def __init__(self, run: Any) -> None:
        self._run = run

    def _real(self) -> SpoolWriter:
        run = self._run
        real = writer_for(run.settings, run.node)
        run._use_writer(real)
        return real

    def __getattr__(self, name: str) -> Any:
        if name in ("flush", "close"):
            return lambda *a, **k: True
        return getattr(self._real(), name)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()
    for w in _writers.values():
        w.abandon()
    _writers.clear()
    for run in registry.reset_after_fork():
        detach = getattr(run, "_detach_after_fork", None)
        if detach is not None:  # a disabled run has nothing to hand over
            detach(_WriterOnFirstUse(run))


os.register_at_fork(after_in_child=_after_fork_in_child)
