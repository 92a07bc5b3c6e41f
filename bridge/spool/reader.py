"""Reading a spool directory: its files, the runs they hold, and a run's merged events.

A run may span several writer files (DDP ranks, a requeued job). Readers never write to a
writer file. Events are streamed in chunks, so memory stays bounded whatever the backlog,
and merged across files in ``(ts_ms, file_id, seq)`` order.
"""

from __future__ import annotations

import heapq
import json
import os
import sqlite3
import threading
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping

from bridge.errors import SpoolError
from bridge.spool.events import SELECT_EVENTS, Event, Kind, decode_row
from bridge.spool.points import BLOCK, PACKED_META, POINTS, expand_row
from bridge.spool.points import count_after as _packed_count_after
from bridge.spool.schema import check_version, read_only_uri

__all__ = [
    "FileInfo",
    "KeptConnections",
    "RunRecord",
    "events_by_seq",
    "file_counts",
    "find_run",
    "iter_events",
    "list_runs",
    "max_seqs",
    "max_step",
    "count_after",
    "open_file",
    "select_events",
    "spool_files",
]


@dataclass
class FileInfo:
    path: Path
    file_id: str
    node: str
    host: str
    error: str | None = None
    packed: bool = False  # may hold packed point rows (bridge.spool.points): an import's


@dataclass
class RunRecord:
    """A run as the union of its rows in every writer file."""

    run_id: str
    project: str
    name: str | None
    notes: str | None
    group: str | None
    backends: list[dict]
    start_ms: int
    end_ms: int | None
    status: str
    error: str | None
    warnings: int = 0
    dropped: int = 0
    files: list[FileInfo] = field(default_factory=list)
    number: int = 0  # per project, in start order (omega-ml's run numbers)


def spool_files(spool_dir: Path) -> list[Path]:
    from bridge.spool.recover import recover_dir

    recover_dir(spool_dir)  # a killed journal writer's calls, committed once before any read
    return sorted((Path(spool_dir) / "spool").glob("*.db"))


def open_file(path: Path) -> sqlite3.Connection:
    """Open a writer file for reading (never writes; checks the schema version)."""
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True, check_same_thread=False,
                               timeout=30.0)
        conn.execute("PRAGMA busy_timeout=30000")
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot open spool file {path}: {exc}") from exc
    check_version(conn, str(path))
    return conn


Opener = Callable[[Path], ContextManager[sqlite3.Connection]]


def _open_once(path: Path) -> ContextManager[sqlite3.Connection]:
    return closing(open_file(path))


class KeptConnections:
    """Read-only connections kept open between calls, one set per thread, for a reader that
    asks many small questions a second (the MLflow plugin answering ``get_run``): opening a
    file and checking its schema costs about half a millisecond, a query on an open one
    microseconds. A file removed or replaced since (``bridge prune``) is reopened by inode."""

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def __call__(self, path: Path) -> Iterator[sqlite3.Connection]:
        kept: dict[Path, tuple[int, sqlite3.Connection]] = self._local.__dict__.setdefault(
            "kept", {})
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            old = kept.pop(path, None)
            if old is not None:
                old[1].close()
            raise SpoolError(f"spool file {path} was removed") from None
        entry = kept.get(path)
        if entry is None or entry[0] != inode:
            if entry is not None:
                entry[1].close()
            entry = kept[path] = (inode, open_file(path))
        yield entry[1]


def _file_info(conn: sqlite3.Connection, path: Path) -> FileInfo:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    return FileInfo(path=path, file_id=meta.get("file_id", path.stem), node=meta.get("node", ""),
                    host=meta.get("host", ""), packed=meta.get(PACKED_META) == "1")


def list_runs(spool_dir: Path, errors: list[FileInfo] | None = None,
              opener: Opener = _open_once) -> list[RunRecord]:
    """Every run in the directory, merged across files, numbered per project.

    Files that cannot be read are reported in ``errors`` (never skipped silently).
    ``opener``: how files are opened (:class:`KeptConnections` keeps them open).
    """
    runs: dict[str, RunRecord] = {}
    latest_end: dict[str, int] = {}
    running_start: dict[str, int] = {}
    first_seen: dict[str, int] = {}  # runs started in one millisecond keep their creation order
    for path in spool_files(spool_dir):
        try:
            with opener(path) as conn:
                info = _file_info(conn, path)
                rows = conn.execute(
                    "SELECT run_id, project, name, notes, group_name, backends, start_ms, end_ms,"
                    " status, error, warnings, dropped FROM runs ORDER BY rowid"
                ).fetchall()
        except (SpoolError, sqlite3.Error) as exc:
            if errors is not None:
                errors.append(FileInfo(path=path, file_id=path.stem, node="", host="",
                                       error=str(exc)))
            continue
        for (run_id, project, name, notes, group, backends, start, end, status, error, warns,
             dropped) in rows:
            rec = runs.get(run_id)
            if rec is None:
                first_seen[run_id] = len(first_seen)
                rec = runs[run_id] = RunRecord(
                    run_id=run_id, project=project, name=name, notes=notes, group=group,
                    backends=json.loads(backends or "[]"), start_ms=start, end_ms=None,
                    status="RUNNING", error=None,
                )
            else:
                if start < rec.start_ms:
                    rec.start_ms = start
                rec.name = rec.name or name
                rec.notes = notes or rec.notes
                rec.group = rec.group or group
                for b in json.loads(backends or "[]"):
                    if b not in rec.backends:
                        rec.backends.append(b)
            rec.warnings += warns
            rec.dropped += dropped
            rec.files.append(info)
            if status == "RUNNING":
                running_start[run_id] = max(running_start.get(run_id, 0), start)
            elif end is not None and end >= latest_end.get(run_id, -1):
                latest_end[run_id] = end
                rec.end_ms, rec.status, rec.error = end, status, error
    for run_id, rec in runs.items():
        # A segment that started after the last finish (a resumed job) is still running.
        if run_id in running_start and running_start[run_id] > latest_end.get(run_id, -1):
            rec.status, rec.end_ms = "RUNNING", None
    ordered = sorted(runs.values(), key=lambda r: (r.project, r.start_ms, first_seen[r.run_id]))
    counters: dict[str, int] = {}
    for rec in ordered:
        counters[rec.project] = counters.get(rec.project, 0) + 1
        rec.number = counters[rec.project]
    return sorted(ordered, key=lambda r: (r.start_ms, first_seen[r.run_id]))


def find_run(spool_dir: Path, run_id: str) -> RunRecord | None:
    for rec in list_runs(spool_dir):
        if rec.run_id == run_id:
            return rec
    return None


def _file_stream(path: Path, info: FileInfo, run_id: str, after: int, chunk: int,
                 upto: int | None, opener: Opener = _open_once) -> Iterator[tuple]:
    if not path.exists():  # removed by `bridge prune` since the run was listed
        return
    if info.packed:  # a row may hold BLOCK points: fewer rows a read keep memory bounded
        chunk = max(4, chunk // BLOCK)
    with opener(path) as conn:
        last = after
        while True:
            if upto is not None and not info.packed:
                rows = conn.execute(
                    SELECT_EVENTS + " WHERE run_id=? AND seq>? AND seq<=? ORDER BY seq LIMIT ?",
                    (run_id, last, upto, chunk),
                ).fetchall()
            else:  # a packed row may straddle upto: its points past it are left out below
                rows = conn.execute(
                    SELECT_EVENTS + " WHERE run_id=? AND seq>? ORDER BY seq LIMIT ?",
                    (run_id, last, chunk),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                if row[2] == POINTS and info.packed:
                    for ev in expand_row(row, info.file_id, info.node, after, upto):
                        yield (ev.ts_ms, ev.file_id, ev.seq, ev)
                    continue
                if upto is not None and row[0] > upto:
                    return
                ev = decode_row(row, info.file_id, info.node)
                yield (ev.ts_ms, ev.file_id, ev.seq, ev)
            last = rows[-1][0]
            if len(rows) < chunk or (upto is not None and last >= upto):
                return


def iter_events(
    files: list[FileInfo],
    run_id: str,
    after: Mapping[str, int] | None = None,
    chunk: int = 5000,
    upto: Mapping[str, int] | None = None,
    opener: Opener = _open_once,
) -> Iterator[Event]:
    """The run's events after the per-file cursors, merged in (ts_ms, file_id, seq) order.

    ``upto`` bounds each file to a snapshot taken before reading, so a live writer's new
    events wait for the next pass instead of racing the merge order.
    """
    after = after or {}
    streams = [
        _file_stream(f.path, f, run_id, after.get(f.file_id, 0), chunk,
                     None if upto is None else upto.get(f.file_id, 0), opener)
        for f in files
    ]
    for _, _, _, ev in heapq.merge(*streams):
        yield ev


def max_seqs(files: list[FileInfo], run_id: str) -> dict[str, int]:
    """The last seq of the run in each file (a snapshot for :func:`iter_events`)."""
    out: dict[str, int] = {}
    for f in files:
        if not f.path.exists():  # removed by `bridge prune` since the run was listed
            out[f.file_id] = 0
            continue
        conn = open_file(f.path)
        try:
            row = conn.execute("SELECT max(seq) FROM events WHERE run_id=?", (run_id,)).fetchone()
        finally:
            conn.close()
        out[f.file_id] = row[0] or 0
    return out


def count_after(files: list[FileInfo], run_id: str, after: Mapping[str, int]) -> int:
    """How many of the run's events lie after the cursors."""
    total = 0
    for f in files:
        if not f.path.exists():  # removed by `bridge prune` since the run was listed
            continue
        conn = open_file(f.path)
        try:
            if f.packed:
                total += _packed_count_after(conn, run_id, after.get(f.file_id, 0))
            else:
                total += conn.execute("SELECT count(*) FROM events WHERE run_id=? AND seq>?",
                                      (run_id, after.get(f.file_id, 0))).fetchone()[0]
        finally:
            conn.close()
    return total


def max_step(files: list[FileInfo], run_id: str) -> int:
    """The highest metric step of the run in any file (-1 when none): resume continues after it."""
    best = -1
    for f in files:
        conn = open_file(f.path)
        try:
            row = conn.execute(
                "SELECT max(step) FROM events WHERE run_id=? AND kind IN (?, ?)",
                (run_id, Kind.METRIC.value, POINTS)  # a points row's step is its largest
            ).fetchone()
        finally:
            conn.close()
        if row[0] is not None and row[0] > best:
            best = row[0]
    return best


def select_events(f: FileInfo, run_id: str, kinds: list | None = None,
                  keys: list | None = None, steps: list | None = None) -> Iterator[Event]:
    """The run's events in one file, in seq order, optionally only these kinds/keys/steps."""
    sql = SELECT_EVENTS + " WHERE run_id=?"
    args: list[Any] = [run_id]
    kinds = None if kinds is None else [str(k) for k in kinds]
    # A packed file's points rows hold metrics of any key and step: they are read when
    # metrics are wanted, and their points filtered here.
    packed = f.packed and (kinds is None or Kind.METRIC.value in kinds)
    for column, values in (("kind", kinds), ("key", keys), ("step", steps)):
        if values is not None:
            test = f"{column} IN ({','.join('?' * len(values))})"
            sql += f" AND ({test} OR kind = '{POINTS}')" if packed else f" AND {test}"
            args.extend(values)
    wanted_keys = None if keys is None else set(keys)
    wanted_steps = None if steps is None else set(steps)
    conn = open_file(f.path)
    try:
        rows = conn.execute(sql + " ORDER BY seq", args)
        while True:  # a few rows at a time: a points row holds up to BLOCK events
            batch = rows.fetchmany(64 if packed else 1000)
            if not batch:
                return
            for row in batch:
                if packed and row[2] == POINTS:
                    for ev in expand_row(row, f.file_id, f.node):
                        if ((wanted_keys is None or ev.key in wanted_keys)
                                and (wanted_steps is None or ev.step in wanted_steps)):
                            yield ev
                else:
                    yield decode_row(row, f.file_id, f.node)
    finally:
        conn.close()


def events_by_seq(f: FileInfo, seqs: list[int]) -> list[Event]:
    """Events of one file by seq (those that exist), e.g. dead letters to deliver again."""
    conn = open_file(f.path)
    try:
        out = []
        for seq in seqs:
            if f.packed:  # the row holding seq: the first that ends at or after it
                row = conn.execute(SELECT_EVENTS + " WHERE seq>=? ORDER BY seq LIMIT 1",
                                   (seq,)).fetchone()
                if row is not None and row[2] == POINTS:
                    out.extend(expand_row(row, f.file_id, f.node, seq - 1, seq))
                    continue
                if row is not None and row[0] != seq:
                    row = None
            else:
                row = conn.execute(SELECT_EVENTS + " WHERE seq=?", (seq,)).fetchone()
            if row is not None:
                out.append(decode_row(row, f.file_id, f.node))
        return out
    finally:
        conn.close()


def file_counts(f: FileInfo, run_id: str, cursors: list[int]) -> tuple[int, list[int]]:
    """The run's events in one file, and how many lie after each of ``cursors``.

    One read transaction per file, so the figures agree with each other while a writer
    appends. A file that holds this run alone (the common case: one run per writer process)
    is counted with a bare ``count(*)``, which SQLite answers from the b-tree's page counts
    instead of comparing every index entry; events after a cursor are a range of the
    ``(run_id, seq)`` index, so a mostly delivered backlog costs little.
    """
    if not f.path.exists():  # removed by `bridge prune` since the run was listed
        return 0, [0 for _ in cursors]
    conn = open_file(f.path)
    try:
        conn.execute("BEGIN")
        lo = conn.execute("SELECT min(run_id) FROM events").fetchone()[0]
        hi = conn.execute("SELECT max(run_id) FROM events").fetchone()[0]
        if lo is None:
            return 0, [0 for _ in cursors]
        if f.packed:  # a points row holds many events; they may straddle a cursor
            total = _packed_count_after(conn, run_id, 0)
            return total, [_packed_count_after(conn, run_id, max(c, 0)) for c in cursors]
        if lo == hi == run_id:
            total = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        else:
            total = conn.execute("SELECT count(*) FROM events WHERE run_id=?",
                                 (run_id,)).fetchone()[0]
        after = []
        for cursor in cursors:
            if cursor <= 0:
                after.append(total)
            else:
                after.append(conn.execute(
                    "SELECT count(*) FROM events WHERE run_id=? AND seq>?", (run_id, cursor)
                ).fetchone()[0])
        return total, after
    finally:
        conn.close()
