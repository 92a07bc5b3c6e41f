"""Sharded delivery: several agents share one spool, each delivering only its own runs.

A run belongs to shard ``K`` of ``N`` when ``sha256(run_id) mod N == K`` (``K`` is 0-based).
Each shard keeps its own state file beside the spool, ``state-shard-K-of-N.db``, so shards
share no lock; the unsharded agent (and ``--shard 0/1``) keeps ``state.db`` as always.

Changing ``N`` is explicit: a shard refuses to start while a state file of another layout
holds delivery state, until :func:`reshard` (``bridge sync --reshard N``) has folded every
state file into the new layout, each run's cursors, run map, adapter state, dead letters and
last error moving with the run. A run is delivered when the state file that owns it says so;
:class:`StateView` reads every state file read-only for `bridge status` and prune.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from bridge.agent.state import (DeadLetter, StateStore, dead_letter_query, holder_alive,
                                now_ms)
from bridge.errors import ConfigError, SpoolError
from bridge.spool.schema import check_version, connect, read_only_uri

__all__ = ["DEFAULT_STATE", "ReshardReport", "Shard", "ShardLayoutError", "StateView",
           "check_layout", "current_count", "owner_file", "parse_shard", "reshard",
           "shard_from_env", "shard_of", "state_files"]

DEFAULT_STATE = "state.db"
_SHARD_FILE = re.compile(r"^state-shard-(\d+)-of-(\d+)\.db$")
_TMP_SUFFIX = ".reshard-tmp"
_TABLES = ("cursors", "run_map", "adapter_state", "dead_letters", "sync_errors")


class ShardLayoutError(SpoolError):
    """State files of another shard count hold delivery state: `bridge sync --reshard N`."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: K must be in 0..N-1 (0-based)")

    @property
    def file_name(self) -> str:
        return state_file_name(self.count, self.index)

    def owns(self, run_id: str) -> bool:
        return shard_of(run_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(run_id: str, count: int) -> int:
    """The stable shard of a run: the first 8 bytes of sha256(run id), mod ``count``."""
    digest = hashlib.sha256(run_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def state_file_name(count: int, index: int) -> str:
    return DEFAULT_STATE if count == 1 else f"state-shard-{index}-of-{count}.db"


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard:
    """``--shard auto``: a Slurm job array or a Kubernetes indexed Job says which shard.

    Slurm: ``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT`` (so
    ``--array=1-4`` works as well as ``0-3``). Kubernetes: ``JOB_COMPLETION_INDEX`` of
    ``BRIDGE_SHARD_COUNT`` (the Job's ``completions``; Kubernetes does not export it).
    """
    env = os.environ if env is None else env
    try:
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            return Shard(index, int(env["SLURM_ARRAY_TASK_COUNT"]))
        if "JOB_COMPLETION_INDEX" in env:
            if "BRIDGE_SHARD_COUNT" not in env:
                raise ConfigError("JOB_COMPLETION_INDEX is set but BRIDGE_SHARD_COUNT is not: "
                                  "set it to the Job's completions")
            return Shard(int(env["JOB_COMPLETION_INDEX"]), int(env["BRIDGE_SHARD_COUNT"]))
    except ValueError as exc:
        raise ConfigError(f"cannot read the shard from the environment: {exc}") from None
    raise ConfigError("--shard auto needs SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT "
                      "(a Slurm job array) or JOB_COMPLETION_INDEX and BRIDGE_SHARD_COUNT "
                      "(a Kubernetes indexed Job)")


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> Shard:
    """``K/N`` (0-based K, e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`` with
    ``--array=0-(N-1)``, or ``$JOB_COMPLETION_INDEX/N``) or ``auto``."""
    t = text.strip()
    if t.lower() in ("auto", "env"):
        return shard_from_env(env)
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", t)
    if not m:
        raise ConfigError(f"cannot read shard {text!r}: use K/N with K in 0..N-1, or auto")
    index, count = int(m.group(1)), int(m.group(2))
    if index == count and count > 1:
        raise ConfigError(f"shard {t}: K is 0-based (0..{count - 1}); for a Slurm array "
                          f"numbered from 1 use --shard auto or --array=0-{count - 1}")
    return Shard(index, count)


# -- the state files ------------------------------------------------------------------------


def state_files(spool_dir: Path) -> list[tuple[int, int, Path]]:
    """Every state file beside the spool as ``(count, index, path)``; ``state.db`` is 1, 0."""
    spool_dir = Path(spool_dir)
    out: list[tuple[int, int, Path]] = []
    if (spool_dir / DEFAULT_STATE).is_file():
        out.append((1, 0, spool_dir / DEFAULT_STATE))
    if spool_dir.is_dir():
        for p in sorted(spool_dir.iterdir()):
            m = _SHARD_FILE.match(p.name)
            if m and p.is_file():
                out.append((int(m.group(2)), int(m.group(1)), p))
    return out


def _open_ro(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True, check_same_thread=False,
                               timeout=30.0)
        conn.execute("PRAGMA busy_timeout=30000")
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot open state file {path}: {exc}") from exc
    check_version(conn, str(path))
    return conn


def _holds_state(path: Path) -> bool:
    """Whether a state file has any delivery state or a live lease (an empty ``state.db``
    is what `bridge status` leaves on a fresh spool: it binds no layout)."""
    conn = _open_ro(path)
    try:
        for table in _TABLES:  # fixed table names of bridge's own schema, never input
            query = "SELECT 1 FROM " + table + " LIMIT 1"
            if conn.execute(query).fetchone():
                return True
        return _live_leases(conn) > 0
    finally:
        conn.close()


def _live_leases(conn: sqlite3.Connection) -> int:
    now = now_ms()
    return sum(1 for holder, expires in conn.execute("SELECT holder, expires_ms FROM leases")
               if expires > now and holder_alive(holder))


def _layouts(spool_dir: Path) -> set[int]:
    """The shard counts that state files bind: a shard file always, state.db if it holds state."""
    counts: set[int] = set()
    for count, _, path in state_files(spool_dir):
        if count > 1 or _holds_state(path):
            counts.add(count)
    return counts


def current_count(spool_dir: Path) -> int:
    """The spool's shard count (1 when unsharded); ShardLayoutError when several are found."""
    counts = _layouts(spool_dir)
    if len(counts) > 1:
        raise ShardLayoutError(
            f"{spool_dir} has state files of {len(counts)} shard layouts "
            f"(N = {', '.join(map(str, sorted(counts)))}): run `bridge sync --reshard N` once "
            "(with no agent running) to fold them into one")
    return counts.pop() if counts else 1


def check_layout(spool_dir: Path, shard: Shard | None) -> None:
    """Refuse a shard whose N differs from the state files already there (unsharded: refuse
    only while shard files exist; ``state.db`` itself is not opened, as before sharding)."""
    if shard is None or shard.count == 1:
        names = sorted(p.name for c, _, p in state_files(spool_dir) if c > 1)
        if names:
            raise ShardLayoutError(
                f"{spool_dir} is delivered by shards ({', '.join(names)}): pass --shard K/N, "
                "or run `bridge sync --reshard 1` once (with no agent running) to go back "
                "to one agent")
        return
    other = sorted(c for c in _layouts(spool_dir) if c != shard.count)
    if other:
        raise ShardLayoutError(
            f"{spool_dir} holds delivery state of {other[0]} shard(s), this agent is shard "
            f"{shard}: run `bridge sync --reshard {shard.count}` once (with no agent running) "
            "to move every run's state into the new layout, then start the shards")


def owner_file(spool_dir: Path, run_id: str, count: int | None = None) -> Path:
    """The state file that owns ``run_id`` in the spool's current layout."""
    n = current_count(spool_dir) if count is None else count
    return Path(spool_dir) / state_file_name(n, shard_of(run_id, n))


# -- reading every shard ------------------------------------------------------------------


class StateView:
    """Read-only view over every state file: what StateStore's reads return, merged.

    In one layout a run has rows in its owning file only; after an interrupted reshard it
    may have identical rows in two files: cursors then take the furthest seq.
    """

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = Path(spool_dir)
        self.path = self.spool_dir / DEFAULT_STATE  # named in error messages
        self.conns: list[sqlite3.Connection] = []
        try:
            for _, _, path in state_files(self.spool_dir):
                self.conns.append(_open_ro(path))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.conns = []

    def _all(self, sql: str, args: tuple) -> list[tuple]:
        return [row for c in self.conns for row in c.execute(sql, args).fetchall()]

    def cursors(self, backend: str, run_id: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for f, s in self._all("SELECT file_id, seq FROM cursors WHERE backend=? AND run_id=?",
                              (backend, run_id)):
            out[f] = max(s, out.get(f, 0))
        return out

    def remote(self, backend: str, run_id: str) -> tuple[str | None, str | None, bool]:
        rows = self._all("SELECT remote_id, url, closed FROM run_map WHERE backend=? AND "
                         "run_id=?", (backend, run_id))
        if not rows:
            return None, None, False
        row = max(rows, key=lambda r: r[2])
        return row[0], row[1], bool(row[2])

    def adapter_state(self, backend: str, run_id: str) -> dict[str, Any]:
        rows = self._all("SELECT state FROM adapter_state WHERE backend=? AND run_id=?",
                         (backend, run_id))
        return json.loads(rows[0][0]) if rows else {}

    def dead_letters(self, backend: str | None = None,
                     run_id: str | None = None) -> list[DeadLetter]:
        sql, args = dead_letter_query(backend, run_id)
        seen = {(r[0], r[2], r[3]): DeadLetter(*r) for r in self._all(sql, tuple(args))}
        return sorted(seen.values(), key=lambda d: (d.file_id, d.seq))

    def dead_count(self, backend: str, run_id: str) -> int:
        return len(self.dead_letters(backend, run_id))

    def last_error(self, backend: str, run_id: str) -> str | None:
        rows = self._all("SELECT error FROM sync_errors WHERE backend=? AND run_id=?",
                         (backend, run_id))
        return rows[0][0] if rows else None

    def backends_for(self, run_id: str) -> list[str]:
        rows = self._all("SELECT DISTINCT backend FROM cursors WHERE run_id=? UNION "
                         "SELECT DISTINCT backend FROM dead_letters WHERE run_id=?",
                         (run_id, run_id))
        return list(dict.fromkeys(r[0] for r in rows))


def is_sharded(spool_dir: Path) -> bool:
    """Whether any shard state file exists (the unsharded path is then left as it was)."""
    return any(count > 1 for count, _, _ in state_files(spool_dir))


# -- changing N -----------------------------------------------------------------------------


@dataclass
class ReshardReport:
    count: int
    sources: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    runs: int = 0  # (backend, run) pairs moved


def reshard(spool_dir: Path, count: int) -> ReshardReport:
    """Fold every state file into the ``count``-shard layout; run once, no agent running.

    New files are written under temporary names, then renamed into place, then the old
    files deleted: interrupted at any point, the old state is still there (possibly beside
    an identical copy), and running it again gives the same result.
    """
    if count < 1:
        raise ConfigError(f"--reshard {count}: N must be at least 1")
    spool_dir = Path(spool_dir)
    for p in spool_dir.glob(f"state*{_TMP_SUFFIX}*"):
        p.unlink()
    sources = state_files(spool_dir)
    report = ReshardReport(count, sources=[p.name for _, _, p in sources])
    conns: list[sqlite3.Connection] = []
    try:
        for _, _, path in sources:
            conn = connect(path, wal=False)  # checkpoints a left-over WAL into the file
            check_version(conn, str(path))
            conns.append(conn)
            if _live_leases(conn):
                raise ShardLayoutError(f"{path.name}: a live agent holds a lease; stop every "
                                       "agent of this spool before `--reshard`")
        targets = [StateStore(spool_dir, state_file_name(count, k) + _TMP_SUFFIX)
                   for k in range(count)]
        try:
            report.runs = _fold(conns, targets, count)
            for t in targets:  # everything into the file itself before it is renamed
                t.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            for t in targets:
                t.close()
    finally:
        for c in conns:
            c.close()
    for _, _, path in sources:  # a WAL left beside a name about to be reused would be replayed
        for extra in ("-wal", "-shm", "-journal"):
            Path(f"{path}{extra}").unlink(missing_ok=True)
    final = []
    for k in range(count):
        name = state_file_name(count, k)
        for extra in ("-wal", "-shm", "-journal"):
            Path(f"{spool_dir / name}{_TMP_SUFFIX}{extra}").unlink(missing_ok=True)
        os.replace(spool_dir / (name + _TMP_SUFFIX), spool_dir / name)
        final.append(name)
    for _, _, path in sources:
        if path.name not in final:
            path.unlink(missing_ok=True)
    report.targets = final
    return report


def _fold(sources: Iterable[sqlite3.Connection], targets: list[StateStore], count: int) -> int:
    """Copy each (backend, run)'s rows into the file of its shard; furthest cursors win."""
    best: dict[tuple[str, str, str], int] = {}  # (table, backend, run): progress of the kept row
    pairs: set[tuple[str, str]] = set()
    for src in sources:
        progress: dict[tuple[str, str], int] = {}
        for b, r, s in src.execute("SELECT backend, run_id, seq FROM cursors"):
            progress[(b, r)] = progress.get((b, r), 0) + s
        by_target: dict[int, dict[str, list]] = {}

        def put(run_id: str, table: str, row: tuple) -> None:
            by_target.setdefault(shard_of(run_id, count), {}).setdefault(table, []).append(row)

        for row in src.execute("SELECT backend, run_id, file_id, seq FROM cursors"):
            put(row[1], "cursors", row)
            pairs.add((row[0], row[1]))
        for table, cols in (("run_map", "backend, run_id, remote_id, url, closed"),
                            ("adapter_state", "backend, run_id, state")):
            query = "SELECT " + cols + " FROM " + table  # bridge's own columns and tables
            for row in src.execute(query):
                key = (row[0], row[1])
                if progress.get(key, 0) >= best.get((table, row[0], row[1]), -1):
                    best[(table, row[0], row[1])] = progress.get(key, 0)
                    put(row[1], table, row)
                pairs.add(key)
        for row in src.execute("SELECT backend, run_id, file_id, seq, reason, ts_ms "
                               "FROM dead_letters"):
            put(row[1], "dead_letters", row)
        for row in src.execute("SELECT backend, run_id, error, ts_ms FROM sync_errors"):
            put(row[1], "sync_errors", row)
        for k, tables in by_target.items():
            conn = targets[k].conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO cursors VALUES (?, ?, ?, ?) ON CONFLICT(backend, run_id, "
                    "file_id) DO UPDATE SET seq=max(seq, excluded.seq)",
                    tables.get("cursors", []))
                conn.executemany("INSERT OR REPLACE INTO run_map (backend, run_id, remote_id, "
                                 "url, closed) VALUES (?, ?, ?, ?, ?)", tables.get("run_map", []))
                conn.executemany("INSERT OR REPLACE INTO adapter_state VALUES (?, ?, ?)",
                                 tables.get("adapter_state", []))
                conn.executemany("INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)",
                                 tables.get("dead_letters", []))
                conn.executemany("INSERT OR REPLACE INTO sync_errors VALUES (?, ?, ?, ?)",
                                 tables.get("sync_errors", []))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    return len(pairs)
