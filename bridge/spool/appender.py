"""Which appender writes the journal's records: the C one, or its Python twin.

The journal (:mod:`bridge.spool.segment`) appends each logged call to a memory-mapped
segment through an *appender* bound to one segment map at a time:

- ``attach(map, offset, segment)`` writes to ``map`` from ``offset`` on; the map before it
  is sealed (a write that reaches it fails, and goes to the new one);
- ``write(record)`` copies a whole record at the position, or raises ``ValueError`` when it
  does not fit (the journal then rotates to the next segment);
- ``detach()`` seals the map: every write fails from then on (a closed journal);
- ``segment`` is the attached segment's number (-1 when detached).

The C appender (``bridge.spool._appender``, built at install where a C compiler is found)
adds ``put_metrics`` and ``log``: a metric call encoded straight into the map, ~1 µs less
of the training loop's time per call than ``marshal.dumps`` + ``crc32`` + ``mmap.write``.
The records are the same bytes either way. ``BRIDGE_NO_EXTENSION=1`` in the environment
makes bridge use the Python twin even where the C one is built.
"""

from __future__ import annotations

import mmap
import os
import sys
from typing import Any, Callable

__all__ = ["FAST", "PyAppender", "new_appender", "prefault"]


def _refuse(record: bytes) -> int:
    raise ValueError("the journal is closed")


class PyAppender:
    """The appender in Python: ``write`` is the attached map's own ``mmap.write``, which
    copies at the map's position and advances it in one call, atomic under the GIL."""

    def __init__(self) -> None:
        self.segment = -1
        self._map: mmap.mmap | None = None
        self.write: Any = _refuse

    def attach(self, mm: mmap.mmap, offset: int, segment: int) -> None:
        mm.seek(offset)
        old, self._map = self._map, mm
        self.write = mm.write
        self.segment = segment
        if old is not None:
            _seal(old)

    def detach(self) -> None:
        old, self._map = self._map, None
        self.write = _refuse
        self.segment = -1
        if old is not None:
            _seal(old)


def _seal(mm: mmap.mmap) -> None:
    """A write through the map's ``write`` fails from now on (a thread that looked it up
    before the rotation retries on the new map)."""
    try:
        mm.seek(0, os.SEEK_END)
    except ValueError:  # closed already
        pass


def _extension() -> Any:
    """The C module, or None: not built here (no C compiler at install), or turned off."""
    if os.environ.get("BRIDGE_NO_EXTENSION", "").strip() not in ("", "0"):
        return None
    try:
        from bridge.spool import _appender
    except ImportError:
        return None
    return _appender


_EXT = _extension()
_C = _EXT.Appender if _EXT is not None else None
_prefault: Callable[[mmap.mmap], bool] | None = _EXT.prefault if _EXT is not None else None
FAST: bool = _C is not None  # the C appender is in use


def prefault(mm: mmap.mmap) -> bool:
    """Map every page of a new segment writable ahead of the caller (Linux's
    ``MADV_POPULATE_WRITE``): the first write to each 4 KB page otherwise takes a page fault
    on the training loop's thread. Writes nothing, so a segment already in use may be
    prefaulted. False where the kernel cannot."""
    if _prefault is not None:
        return bool(_prefault(mm))  # the interpreter lock released meanwhile
    if _MADV_POPULATE_WRITE is None:
        return False
    try:
        mm.madvise(_MADV_POPULATE_WRITE)  # holds the interpreter lock meanwhile
    except (AttributeError, OSError, ValueError):  # an older kernel; a closed map
        return False
    return True


# Linux >= 5.14 (Python defines the name from 3.12 on); elsewhere the number means another
# advice or none.
_MADV_POPULATE_WRITE: int | None = getattr(
    mmap, "MADV_POPULATE_WRITE", 23 if sys.platform.startswith("linux") else None)


def new_appender() -> Any:
    """An appender: the C one where built (and not turned off), else :class:`PyAppender`."""
    return _C() if _C is not None else PyAppender()
