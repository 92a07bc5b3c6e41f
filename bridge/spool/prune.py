"""Removing chosen runs from a spool: their events, the files left empty, unreferenced blobs.

Which runs may go is the agent's decision (:mod:`bridge.agent.retention`: every backend
confirmed them); this module only removes them safely:

- a writer file whose writer is alive (:mod:`bridge.spool.liveness`) is never deleted nor
  written: runs with events in such a file are refused here too, whatever the caller says;
- a file that holds only removed runs is deleted whole (with its ``-wal``/``-shm`` and lock);
  a file that also holds kept runs has the removed runs' rows deleted and is vacuumed;
- a blob goes only when a removed event referenced it, no kept event of any file (live ones
  included) does, and it was not touched within ``blob_grace_s`` (a writer reusing a blob
  touches it before its event commits: see :mod:`bridge.spool.blobs`).

Every artifact, model-file and media item (tables' media cells included) names its blob as
``"sha256": "<hex>"`` in the payload JSON, so references are read from the text without
decoding each payload.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bridge.spool.blobs import blob_path
from bridge.spool.liveness import lock_path, writer_alive
from bridge.spool.points import PACKED_META, POINTS, SPAN
from bridge.spool.segment import segments_of
from bridge.spool.reader import spool_files
from bridge.spool.schema import connect, is_network_fs, read_only_uri

__all__ = ["BLOB_GRACE_S", "FileRuns", "RemovalReport", "blob_refs", "file_bytes",
           "remove_runs", "scan_files"]

# A blob touched (stored or reused) this recently is never removed.
BLOB_GRACE_S = 600.0

_SHA = re.compile(r'"sha256"\s*:\s*"([0-9a-f]{64})"')


def blob_refs(payload_text: str | None) -> set[str]:
    """Every blob a payload's JSON text names (artifacts, model files, media items)."""
    return set(_SHA.findall(payload_text)) if payload_text else set()


def file_bytes(db: Path) -> int:
    """A writer file's bytes on disk, its WAL and shared-memory files included."""
    total = 0
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


@dataclass
class FileRuns:
    """What one writer file holds: events and blob references per run, its size, its writer."""

    path: Path
    events: dict[str, int] = field(default_factory=dict)
    refs: dict[str, set[str]] = field(default_factory=dict)
    run_rows: set[str] = field(default_factory=set)
    bytes: int = 0
    live: str | None = None  # why the file may still be written; None when its writer is gone
    error: str | None = None

    @property
    def runs(self) -> set[str]:
        return set(self.events) | self.run_rows


_COUNTS = "SELECT run_id, count(*) FROM events GROUP BY run_id"
_PACKED_COUNTS = f"SELECT run_id, sum({SPAN}) FROM events GROUP BY run_id"
_REFERENCES = (f"SELECT run_id, payload FROM events WHERE kind NOT IN ('metric', '{POINTS}') "
               "AND payload LIKE '%sha256%'")


def scan_files(spool_dir: Path) -> list[FileRuns]:
    """One read of every writer file: events per run, blob references per run."""
    out = []
    for path in spool_files(spool_dir):
        fr = FileRuns(path=path, bytes=file_bytes(path), live=writer_alive(path))
        try:
            conn = sqlite3.connect(read_only_uri(path), uri=True, timeout=30.0)
            try:
                conn.execute("BEGIN")
                packed = conn.execute("SELECT 1 FROM meta WHERE key = ? AND value = '1'",
                                      (PACKED_META,)).fetchone() is not None
                fr.events = dict(conn.execute(  # a packed points row counts its points
                    _PACKED_COUNTS if packed else _COUNTS).fetchall())
                fr.run_rows = {r[0] for r in conn.execute("SELECT run_id FROM runs")}
                for run_id, payload in conn.execute(_REFERENCES):
                    shas = blob_refs(payload)
                    if shas:
                        fr.refs.setdefault(run_id, set()).update(shas)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            fr.error = str(exc)
        out.append(fr)
    return out


@dataclass
class RemovalReport:
    """What :func:`remove_runs` freed (or, in a dry run, would free)."""

    runs: list[str] = field(default_factory=list)
    events: int = 0
    event_bytes: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    files_deleted: int = 0
    files_rewritten: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # run id -> why it was kept

    @property
    def bytes(self) -> int:
        return self.event_bytes + self.blob_bytes


def remove_runs(spool_dir: Path, run_ids: Iterable[str], *, dry_run: bool = False,
                blob_grace_s: float = BLOB_GRACE_S,
                scanned: list[FileRuns] | None = None) -> RemovalReport:
    """Remove ``run_ids`` from the spool (see the module's rules); report what was freed."""
    spool_dir = Path(spool_dir)
    wanted = set(run_ids)
    files = scanned if scanned is not None else scan_files(spool_dir)
    report = RemovalReport()
    for fr in files:  # a run touching a live or unreadable file stays whole
        for run_id in fr.runs & wanted:
            if fr.live is not None:
                report.refused[run_id] = f"{fr.path.name}: {fr.live}"
            elif fr.error is not None:
                report.refused[run_id] = f"{fr.path.name} is unreadable ({fr.error})"
            elif segments_of(fr.path):  # recovery failed at this open: calls not in SQLite
                report.refused[run_id] = (f"{fr.path.name} has a journal not replayed yet "
                                          "(see `bridge doctor`)")
    gone = wanted - set(report.refused)
    report.runs = sorted(r for r in gone if any(r in fr.runs for fr in files))
    candidates: set[str] = set()
    kept_refs: set[str] = set()
    for fr in files:
        for run_id, shas in fr.refs.items():
            (candidates if run_id in gone else kept_refs).update(shas)
    for fr in files:
        mine = fr.runs & gone
        if not mine:
            continue
        report.events += sum(fr.events.get(r, 0) for r in mine)
        if fr.runs <= gone:
            report.event_bytes += fr.bytes
            report.files_deleted += 1
            if not dry_run:
                _delete_file(fr.path)
        else:
            report.files_rewritten += 1
            if dry_run:
                total = sum(fr.events.values()) or 1
                report.event_bytes += fr.bytes * sum(fr.events.get(r, 0) for r in mine) // total
            else:
                _delete_rows(spool_dir, fr.path, sorted(mine))
                report.event_bytes += max(0, fr.bytes - file_bytes(fr.path))
    cutoff = time.time() - blob_grace_s
    for sha in sorted(candidates - kept_refs):
        path = blob_path(spool_dir, sha)
        try:
            st = path.lstat()
        except OSError:
            continue
        if st.st_mtime > cutoff:
            continue
        report.blobs += 1
        report.blob_bytes += st.st_size
        if not dry_run:
            path.unlink(missing_ok=True)
    return report


def _delete_file(db: Path) -> None:
    """The database first: a reader that opens it afterwards finds no file, never half one."""
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), lock_path(db)):
        p.unlink(missing_ok=True)
    for _, seg in segments_of(db):  # replayed already (remove_runs refuses a file otherwise)
        seg.unlink(missing_ok=True)


def _delete_rows(spool_dir: Path, db: Path, run_ids: list[str]) -> None:
    """Delete runs' rows from a file whose writer is gone, then give the pages back."""
    conn = connect(db, wal=not is_network_fs(spool_dir))
    try:
        marks = ",".join("?" * len(run_ids))
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"DELETE FROM events WHERE run_id IN ({marks})", run_ids)
            conn.execute(f"DELETE FROM runs WHERE run_id IN ({marks})", run_ids)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    os.chmod(db, 0o600)
