"""Checking spool files and salvaging what a damaged one still holds.

``check_file`` says whether a file is sound (``PRAGMA quick_check`` and the schema version).
``salvage`` copies every readable run and event of a damaged file into a new file with the
same file id and the same seqs (so the agent's cursors stay valid), moves the damaged file to
``<spool dir>/quarantine/`` and reports what could not be read. Nothing is deleted.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import SpoolError
from bridge.spool.points import POINTS
from bridge.spool.schema import SCHEMA_VERSION, check_version, create_schema, read_only_uri

__all__ = ["FileCheck", "SalvageReport", "check_file", "salvage"]

_COLUMNS = "seq, run_id, kind, key, step, ts_ms, value, payload"


@dataclass
class FileCheck:
    path: Path
    ok: bool
    problem: str | None = None


@dataclass
class SalvageReport:
    source: Path
    target: Path | None
    quarantined: Path | None
    runs: int = 0
    events: int = 0
    unreadable_rows: int = 0
    error: str | None = None


def check_file(path: Path) -> FileCheck:
    """A spool file is sound when SQLite's quick_check passes and bridge knows its schema."""
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True)
        try:
            result = conn.execute("PRAGMA quick_check").fetchall()
            if result != [("ok",)]:
                return FileCheck(path, False, "; ".join(r[0] for r in result)[:500])
            check_version(conn, str(path))
            conn.execute("SELECT count(*) FROM events").fetchone()
        finally:
            conn.close()
    except (sqlite3.Error, SpoolError) as exc:
        return FileCheck(path, False, str(exc))
    return FileCheck(path, True)


def _rows(conn: sqlite3.Connection, lo: int, hi: int, report: SalvageReport) -> list[tuple]:
    """Events with lo <= seq < hi, splitting around unreadable pages."""
    try:
        return conn.execute(f"SELECT {_COLUMNS} FROM events WHERE seq >= ? AND seq < ? "
                            "ORDER BY seq", (lo, hi)).fetchall()
    except sqlite3.DatabaseError:
        if hi - lo <= 1:
            report.unreadable_rows += 1
            return []
        mid = (lo + hi) // 2
        return _rows(conn, lo, mid, report) + _rows(conn, mid, hi, report)


def _max_seq(conn: sqlite3.Connection) -> int:
    for sql in ("SELECT max(seq) FROM events", "SELECT max(rowid) FROM events"):
        try:
            return int(conn.execute(sql).fetchone()[0] or 0)
        except sqlite3.DatabaseError:
            continue
    return 0


def salvage(path: Path, spool_dir: Path) -> SalvageReport:
    """Copy what is readable of ``path`` into a new spool file; quarantine the original."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.stem}-repaired-{stamp}.db")
    report = SalvageReport(path, None, None)
    try:
        src = sqlite3.connect(read_only_uri(path), uri=True)
    except sqlite3.Error as exc:
        report.error = f"cannot open: {exc}"
        return report
    try:
        try:
            meta = dict(src.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            meta = {}
        version = int(meta.get("schema_version", SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            report.error = (f"schema {version} is newer than this bridge ({SCHEMA_VERSION}); "
                            "upgrade bridge instead of repairing")
            return report
        try:
            runs = src.execute("SELECT * FROM runs").fetchall()
        except sqlite3.DatabaseError as exc:
            runs = []
            report.error = f"runs table unreadable: {exc}"
        old = os.umask(0o077)
        try:
            dst = sqlite3.connect(target, isolation_level=None)
        finally:
            os.umask(old)
        try:
            dst.execute("PRAGMA journal_mode=WAL")
            keep = {k: v for k, v in meta.items() if k != "schema_version"}
            keep.setdefault("file_id", path.stem)
            keep["repaired_from"] = path.name
            create_schema(dst, keep)
            dst.execute("BEGIN")
            if runs:
                marks = ",".join("?" * len(runs[0]))
                dst.executemany(f"INSERT OR IGNORE INTO runs VALUES ({marks})", runs)
            report.runs = len(runs)
            top = _max_seq(src)
            step = 5000
            for lo in range(0, top + 1, step):
                rows = _rows(src, lo, lo + step, report)
                if rows:
                    dst.executemany(f"INSERT INTO events ({_COLUMNS}) VALUES "
                                    "(?, ?, ?, ?, ?, ?, ?, ?)", rows)
                    # A packed row (an import's file) holds its value's count of points.
                    report.events += sum(int(r[6]) if r[2] == POINTS else 1 for r in rows)
            try:
                blobs = src.execute("SELECT sha256, size FROM blobs").fetchall()
                dst.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?)", blobs)
            except sqlite3.DatabaseError:
                pass
            dst.execute("COMMIT")
        finally:
            dst.close()
    finally:
        src.close()
    os.chmod(target, 0o600)
    quarantine = Path(spool_dir) / "quarantine"
    quarantine.mkdir(parents=True, exist_ok=True, mode=0o700)
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            os.replace(p, quarantine / p.name)
    report.target = target
    report.quarantined = quarantine / path.name
    return report
