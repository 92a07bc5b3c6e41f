"""The spool's SQLite schema, its version, and how a file is opened.

Every spool file has the same tables. A writer file (one per writer process) fills
``runs``, ``events`` and ``blobs``; the agent's ``state.db`` in the same directory holds
``run_map``, ``cursors``, ``dead_letters``, ``adapter_state`` and ``leases``, so writer files
are only ever written by their own writer.
"""

from __future__ import annotations

import os
import sqlite3
import time
from functools import lru_cache
from pathlib import Path

from bridge.errors import SchemaVersionError, SpoolError

__all__ = ["SCHEMA_VERSION", "connect", "create_schema", "check_version", "empty_spool_file",
           "is_network_fs", "read_only_uri", "record_meta"]

# 2: media events (kind "media", bridge.spool.media). A bridge that knows schema 1 refuses
# such a file with an upgrade message instead of dead-lettering every media event.
# 3: packed point rows in imported files (bridge.spool.points); 4: their rows layout (a step
# and a time a row of keys), which a bridge of schema 3 would call damaged.
SCHEMA_VERSION = 4

_DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    name       TEXT,
    notes      TEXT,
    group_name TEXT,
    backends   TEXT NOT NULL DEFAULT '[]',   -- JSON list of {"name": ..., **options}
    start_ms   INTEGER NOT NULL,
    end_ms     INTEGER,
    status     TEXT NOT NULL DEFAULT 'RUNNING',
    error      TEXT,
    warnings   INTEGER NOT NULL DEFAULT 0,   -- bad inputs normalized or refused
    dropped    INTEGER NOT NULL DEFAULT 0    -- events that could not be written
);
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY,             -- monotonic within the file
    run_id  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    key     TEXT,
    step    INTEGER,
    ts_ms   INTEGER NOT NULL,
    value   REAL,                            -- metrics; NULL with payload 'NaN' for NaN
    payload TEXT                             -- JSON for everything else
);
CREATE INDEX IF NOT EXISTS events_run_seq ON events (run_id, seq);
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    size   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS run_map (
    backend   TEXT NOT NULL,
    run_id    TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    url       TEXT,
    closed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (backend, run_id)
);
CREATE TABLE IF NOT EXISTS cursors (
    backend TEXT NOT NULL,
    run_id  TEXT NOT NULL,
    file_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,                -- last delivered (or dead-lettered) seq
    PRIMARY KEY (backend, run_id, file_id)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    backend TEXT NOT NULL,
    run_id  TEXT NOT NULL,
    file_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    ts_ms   INTEGER NOT NULL,
    PRIMARY KEY (backend, file_id, seq)
);
CREATE TABLE IF NOT EXISTS adapter_state (
    backend TEXT NOT NULL,
    run_id  TEXT NOT NULL,
    state   TEXT NOT NULL,
    PRIMARY KEY (backend, run_id)
);
CREATE TABLE IF NOT EXISTS sync_errors (
    backend TEXT NOT NULL,
    run_id  TEXT NOT NULL,
    error   TEXT NOT NULL,
    ts_ms   INTEGER NOT NULL,
    PRIMARY KEY (backend, run_id)
);
CREATE TABLE IF NOT EXISTS leases (
    run_id     TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
"""

_NETWORK_FS = {"nfs", "nfs4", "lustre", "gpfs", "cifs", "smbfs", "smb3", "fuse.sshfs", "beegfs",
               "ceph", "fuse.ceph", "9p", "afs", "panfs", "fuse.glusterfs", "glusterfs"}


def filesystem_type(path: Path) -> str:
    """The filesystem type of ``path`` from /proc/mounts ("" when unknown)."""
    try:
        target = os.path.realpath(path)
        best, fstype = "", ""
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(
                    mount
                ) >= len(best):
                    best, fstype = mount, parts[2]
        return fstype
    except OSError:
        return ""


def is_network_fs(path: Path) -> bool:
    """True on NFS, Lustre, GPFS and friends, where SQLite's WAL is unsafe."""
    if os.environ.get("BRIDGE_ASSUME_NETWORK_FS") == "1":
        return True
    return filesystem_type(path) in _NETWORK_FS


def connect(path: Path, *, wal: bool = True, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open a spool file with bridge's pragmas; autocommit mode, explicit transactions."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               timeout=30.0)
        conn.execute("PRAGMA busy_timeout=30000")
        want = "wal" if wal else "delete"
        # Changing the journal mode needs a lock the busy handler does not wait for: only ask
        # when the file is not in that mode yet (a new file), and retry briefly if busy.
        for attempt in range(50):
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != want:
                    conn.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.02 * (attempt + 1))
        conn.execute(f"PRAGMA synchronous={synchronous}")
        return conn
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot open spool file {path}: {exc}") from exc


def create_schema(conn: sqlite3.Connection, meta: dict[str, str]) -> None:
    """Create the tables (idempotent) and record the schema version and file facts."""
    conn.executescript(_DDL)
    record_meta(conn, meta)


@lru_cache(maxsize=1)
def empty_spool_file() -> bytes:
    """The bytes of a spool file holding the tables and no row, made once a process: a file
    begun with them needs only :func:`record_meta` (the import writer begins a file a run,
    and running the DDL was ~1 ms of each)."""
    import tempfile  # made on a disk file: Connection.serialize() needs Python 3.11

    with tempfile.TemporaryDirectory(prefix="bridge-empty-") as tmp:
        path = Path(tmp) / "empty.db"
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.executescript(_DDL)
        finally:
            conn.close()
        return path.read_bytes()


def record_meta(conn: sqlite3.Connection, meta: dict[str, str]) -> None:
    """Record the schema version and the file's facts (a fact already there stays)."""
    rows = {"schema_version": str(SCHEMA_VERSION), **meta}
    conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", list(rows.items()))
    check_version(conn, "<new file>")


def check_version(conn: sqlite3.Connection, where: str) -> int:
    """Refuse a spool written by a newer bridge with a clear message."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise SpoolError(f"{where} is not a readable spool file: {exc}") from exc
    if row is None:
        raise SpoolError(f"{where} has no schema version: not a bridge spool file")
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} uses spool schema {version}, newer than this bridge supports "
            f"({SCHEMA_VERSION}); upgrade tracking-bridge to read it"
        )
    return version


def read_only_uri(db: Path) -> str:
    """A SQLite URI that opens ``db`` read-only (a spool file being read, an import's source:
    never written to). The path is percent-encoded: a ``?``, ``#`` or ``%`` in it names the
    file, not a URI parameter that SQLite would otherwise cut it at."""
    return f"{Path(db).resolve().as_uri()}?mode=ro"
