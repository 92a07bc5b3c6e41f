"""Replay the journal of a dead ``durability="journal"`` writer into its spool file, once.

A writer killed before it committed leaves segment files (:mod:`bridge.spool.segment`) whose
records past ``meta.journal_pos`` are calls ``log()`` returned from and SQLite never saw.
The first opener of the spool directory afterwards (a resumed run, ``bridge sync``,
``bridge doctor``: every reader lists files through :func:`bridge.spool.reader.spool_files`)
commits them with the new position in one transaction, then deletes the segments.

Exactly once: the recoverer holds the writer's sidecar lock exclusively (which also proves the
writer dead: a live one holds it shared, see :mod:`bridge.spool.liveness`), so two openers
never replay the same records; the position moves in the transaction that commits the rows,
so a recoverer killed midway leaves either nothing or everything done.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import BridgeWarning
from bridge.spool import liveness, segment

__all__ = ["LOCK_AFTER_DEATH_SECONDS", "Recovered", "recover_dir", "recover_file"]

# How long a dead writer's lock may stay held by a child it was forking (see _lock).
LOCK_AFTER_DEATH_SECONDS = 2.0


@dataclass(frozen=True)
class Recovered:
    """What one recovery did: calls replayed, records dropped as cut short."""

    path: Path
    calls: int
    torn: int


def recover_dir(spool_dir: Path) -> list[Recovered]:
    """Recover every spool file of ``spool_dir`` that a dead journal writer left behind.

    Cheap when there is nothing to do (one directory listing). A failure is a warning:
    reading what is already committed must still work (a read-only spool, a full disk).
    """
    files = Path(spool_dir) / "spool"
    dbs = {p.name.split(".", 1)[0] for p in files.glob("*.seg")}
    out = []
    for stem in sorted(dbs):
        db = files / f"{stem}.db"
        if not db.exists():
            continue
        try:
            done = recover_file(db)
        except (OSError, sqlite3.Error) as exc:
            warnings.warn(f"bridge: cannot recover the journal of {db}: {exc}; it is kept and "
                          "tried again at the next open", BridgeWarning, stacklevel=2)
            continue
        if done is not None:
            out.append(done)
    return out


def recover_file(db: Path) -> Recovered | None:
    """Replay ``db``'s journal if its writer is dead; None when there was nothing to do or
    its writer (or another recoverer) still holds it."""
    db = Path(db)
    if not segment.segments_of(db):
        return None
    fd = _lock(db)
    if fd is False:
        return None
    try:
        if not segment.segments_of(db):  # another recoverer finished meanwhile
            return None
        return _replay(db)
    finally:
        liveness.release(fd or None)


def _lock(db: Path) -> int | None | bool:
    """The sidecar lock, exclusively; False when its writer (or a recoverer) holds it."""
    side = liveness.lock_path(db)
    if not side.exists():
        return None if liveness.writer_alive(db) is None else False
    fd = os.open(side, os.O_RDWR | os.O_CLOEXEC)
    # A writer killed while it forked a child (its system-info thread runs `git`) leaves the
    # lock held by that child's copy of its descriptors until the child execs or dies, a
    # moment after the writer is gone: when the writer's pid is gone, wait that moment out.
    deadline = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if deadline is None and liveness.alive_by_meta(db) is None:
                deadline = time.monotonic() + LOCK_AFTER_DEATH_SECONDS
            if deadline is None or time.monotonic() >= deadline:
                os.close(fd)
                return False
            time.sleep(0.01)
        except OSError:
            os.close(fd)
            raise


def _replay(db: Path) -> Recovered:
    from bridge.spool.writer import _BAD_VALUE, _MEDIA_JOURNALED, JOURNAL_BATCH, SpoolWriter

    conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False,
                           timeout=30.0)
    calls = torn = 0
    segments: list[Path] = []
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        row = conn.execute("SELECT value FROM meta WHERE key='journal_pos'").fetchone()
        start = segment.parse_pos(row[0] if row else None)
        # The writer's own commit path, on this connection: the rows are written exactly as
        # the dead writer would have written them, each batch with its end position in the
        # same transaction (a recoverer killed midway leaves a prefix and its position).
        replayer = SpoolWriter.__new__(SpoolWriter)
        replayer._conn = conn
        replayer.path = db
        replayer._dropped_pending = {}
        replayer.dropped_by_run = {}
        replayer.dropped = 0
        replayer.committed_calls = 0
        replayer.spool_dir = db.parent.parent
        replayer._media_bytes = 0
        replayer.last_error = None
        for part in segment.scan_batches(db, start, JOURNAL_BATCH):
            segments, torn = part.segments, torn + part.torn
            mark = f"{part.end[0]}:{part.end[1]}"
            if part.items:
                replayer._journal_mark = mark
                items = part.items
                if any(it[0] == _MEDIA_JOURNALED for it in items):
                    # Media calls: their blobs stored (fsynced) before their events commit.
                    deferred: list = []
                    items = replayer._encode_media(replayer._unjournal(items), deferred)
                    if deferred:
                        raise OSError(replayer.last_error or "cannot store media blobs")
                try:
                    replayer._write(items)
                except _BAD_VALUE:  # stores the position itself once every part is in
                    replayer._write_isolating(items)
                calls += len(part.items)
            elif part.end != start:
                _store_mark(conn, mark)
    finally:
        conn.close()
    for path in segments:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    if torn:
        warnings.warn(f"bridge: {db.name}: the last journal record was cut short by the "
                      "process's end (its call had not returned); dropped", BridgeWarning,
                      stacklevel=3)
    return Recovered(db, calls, torn)


def _store_mark(conn: sqlite3.Connection, mark: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('journal_pos', ?)", (mark,))
