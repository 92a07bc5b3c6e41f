"""The agent's own state, in ``<spool dir>/state.db`` beside the writer files.

Cursors (per backend, run and writer file: the last seq delivered or dead-lettered), the
run map (bridge run -> remote id), dead letters, each adapter's saved state, the last error,
and leases. A cursor, the adapter's state and the batch's dead letters are saved in one
transaction, and only after the backend confirmed the batch.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from bridge.errors import SpoolError
from bridge.spool.schema import check_version, connect, create_schema, is_network_fs

__all__ = ["DeadLetter", "StateStore", "dead_letter_query", "holder_alive", "holder_id", "now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class DeadLetter:
    backend: str
    run_id: str
    file_id: str
    seq: int
    reason: str
    ts_ms: int


def dead_letter_query(backend: str | None, run_id: str | None) -> tuple[str, list[Any]]:
    """The dead letters of one backend and/or run: SQL and its parameters (a state file's
    own reader and the read-only view over every shard's file ask the same question)."""
    sql = "SELECT backend, run_id, file_id, seq, reason, ts_ms FROM dead_letters WHERE 1=1"
    args: list[Any] = []
    if backend is not None:
        sql += " AND backend=?"
        args.append(backend)
    if run_id is not None:
        sql += " AND run_id=?"
        args.append(run_id)
    return sql, args


class StateStore:
    """One connection to ``state.db`` (or a shard's own file, see
    :mod:`bridge.agent.shards`); use one instance per thread."""

    def __init__(self, spool_dir: Path, file_name: str = "state.db") -> None:
        self.path = Path(spool_dir) / file_name
        Path(spool_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        old = os.umask(0o077)
        try:
            self.conn = connect(self.path, wal=not is_network_fs(Path(spool_dir)))
            try:  # an existing state file needs only its version checked
                check_version(self.conn, str(self.path))
            except SpoolError:
                create_schema(self.conn, {"file_id": "state", "role": "agent-state"})
        finally:
            os.umask(old)

    def close(self) -> None:
        self.conn.close()

    # -- reads ---------------------------------------------------------------------------

    def cursors(self, backend: str, run_id: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT file_id, seq FROM cursors WHERE backend=? AND run_id=?", (backend, run_id)
        ).fetchall()
        return dict(rows)

    def remote(self, backend: str, run_id: str) -> tuple[str | None, str | None, bool]:
        row = self.conn.execute(
            "SELECT remote_id, url, closed FROM run_map WHERE backend=? AND run_id=?",
            (backend, run_id),
        ).fetchone()
        return (row[0], row[1], bool(row[2])) if row else (None, None, False)

    def adapter_state(self, backend: str, run_id: str) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT state FROM adapter_state WHERE backend=? AND run_id=?", (backend, run_id)
        ).fetchone()
        return json.loads(row[0]) if row else {}

    def dead_letters(self, backend: str | None = None, run_id: str | None = None) -> list[DeadLetter]:
        sql, args = dead_letter_query(backend, run_id)
        return [DeadLetter(*r) for r in self.conn.execute(sql + " ORDER BY file_id, seq", args)]

    def dead_count(self, backend: str, run_id: str) -> int:
        return self.conn.execute(
            "SELECT count(*) FROM dead_letters WHERE backend=? AND run_id=?", (backend, run_id)
        ).fetchone()[0]

    def backends_for(self, run_id: str) -> list[str]:
        """Backends with cursors or dead letters for the run (also ones it no longer names)."""
        rows = self.conn.execute(
            "SELECT DISTINCT backend FROM cursors WHERE run_id=? UNION "
            "SELECT DISTINCT backend FROM dead_letters WHERE run_id=?", (run_id, run_id))
        return [r[0] for r in rows]

    def last_error(self, backend: str, run_id: str) -> str | None:
        row = self.conn.execute(
            "SELECT error FROM sync_errors WHERE backend=? AND run_id=?", (backend, run_id)
        ).fetchone()
        return row[0] if row else None

    # -- writes --------------------------------------------------------------------------

    def _tx(self) -> "_Tx":
        return _Tx(self.conn)

    def save_remote(self, backend: str, run_id: str, remote_id: str, url: str | None) -> None:
        with self._tx():
            self.conn.execute(
                "INSERT INTO run_map (backend, run_id, remote_id, url) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(backend, run_id) DO UPDATE SET remote_id=excluded.remote_id, "
                "url=COALESCE(excluded.url, run_map.url)",
                (backend, run_id, remote_id, url),
            )

    def mark_closed(self, backend: str, run_id: str) -> None:
        with self._tx():
            self.conn.execute("UPDATE run_map SET closed=1 WHERE backend=? AND run_id=?",
                              (backend, run_id))

    def commit_batch(self, backend: str, run_id: str, cursors: Mapping[str, int],
                     state: Mapping[str, Any], dead: Mapping[tuple[str, int], str]) -> None:
        """Advance cursors, save the adapter's state and the dead letters atomically."""
        ts = now_ms()
        with self._tx():
            self.conn.executemany(
                "INSERT INTO cursors (backend, run_id, file_id, seq) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(backend, run_id, file_id) DO UPDATE SET seq=max(seq, excluded.seq)",
                [(backend, run_id, f, s) for f, s in cursors.items()],
            )
            self.conn.execute(
                "INSERT INTO adapter_state (backend, run_id, state) VALUES (?, ?, ?) "
                "ON CONFLICT(backend, run_id) DO UPDATE SET state=excluded.state",
                (backend, run_id, json.dumps(state)),
            )
            self.conn.executemany(
                "INSERT INTO dead_letters (backend, run_id, file_id, seq, reason, ts_ms) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(backend, file_id, seq) DO UPDATE SET "
                "reason=excluded.reason, ts_ms=excluded.ts_ms",
                [(backend, run_id, f, s, str(r)[:4000], ts) for (f, s), r in dead.items()],
            )
            self.conn.execute("DELETE FROM sync_errors WHERE backend=? AND run_id=?",
                              (backend, run_id))

    def resolve_dead(self, backend: str, run_id: str, uids: list[tuple[str, int]]) -> None:
        with self._tx():
            self.conn.executemany(
                "DELETE FROM dead_letters WHERE backend=? AND run_id=? AND file_id=? AND seq=?",
                [(backend, run_id, f, s) for f, s in uids],
            )

    def forget_delivery(self, backend: str, run_id: str) -> None:
        """The remote run is lost: forget its mapping, cursors, state and dead letters.

        Everything of the run is then pending again for this backend, and the next
        delivery starts from the first event into a new (or re-found) remote run.
        """
        key = (backend, run_id)
        with self._tx():
            self.conn.execute("DELETE FROM cursors WHERE backend=? AND run_id=?", key)
            self.conn.execute("DELETE FROM run_map WHERE backend=? AND run_id=?", key)
            self.conn.execute("DELETE FROM adapter_state WHERE backend=? AND run_id=?", key)
            self.conn.execute("DELETE FROM dead_letters WHERE backend=? AND run_id=?", key)
            self.conn.execute("DELETE FROM sync_errors WHERE backend=? AND run_id=?", key)

    def forget_pruned(self, run_ids: list[str]) -> None:
        """Runs removed by `bridge prune`: their cursors, dead letters and leases point at
        events that no longer exist. The run map and adapter state stay, so a resumed run
        finds its remote run again."""
        rows = [(r,) for r in run_ids]
        with self._tx():
            self.conn.executemany("DELETE FROM cursors WHERE run_id=?", rows)
            self.conn.executemany("DELETE FROM dead_letters WHERE run_id=?", rows)
            self.conn.executemany("DELETE FROM sync_errors WHERE run_id=?", rows)
            self.conn.executemany("DELETE FROM leases WHERE run_id=?", rows)

    def record_error(self, backend: str, run_id: str, error: str) -> None:
        with self._tx():
            self.conn.execute(
                "INSERT INTO sync_errors (backend, run_id, error, ts_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(backend, run_id) DO UPDATE SET error=excluded.error, "
                "ts_ms=excluded.ts_ms",
                (backend, run_id, error[:4000], now_ms()),
            )

    # -- leases --------------------------------------------------------------------------

    def acquire_lease(self, run_id: str, holder: str, seconds: float) -> bool:
        """Take or renew the run's lease; False while another live holder has it."""
        now = now_ms()
        with self._tx():
            row = self.conn.execute("SELECT holder, expires_ms FROM leases WHERE run_id=?",
                                    (run_id,)).fetchone()
            if row and row[0] != holder and row[1] > now and holder_alive(row[0]):
                return False
            self.conn.execute(
                "INSERT INTO leases (run_id, holder, expires_ms) VALUES (?, ?, ?) "
                "ON CONFLICT(run_id) DO UPDATE SET holder=excluded.holder, "
                "expires_ms=excluded.expires_ms",
                (run_id, holder, now + int(seconds * 1000)),
            )
            return True

    def release_lease(self, run_id: str, holder: str) -> None:
        with self._tx():
            self.conn.execute("DELETE FROM leases WHERE run_id=? AND holder=?", (run_id, holder))


def holder_id() -> str:
    """``host:pid:nonce``: lets a later process on the same host see a dead holder at once."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_alive(holder: str) -> bool:
    """False only when the holder ran on this host and its process is gone."""
    try:
        host, pid, _ = holder.rsplit(":", 2)
        if host != socket.gethostname():
            return True
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError, OSError):
        return True
    return True


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
