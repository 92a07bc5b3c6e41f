"""The spool writer for imported runs: one file per run, complete or absent.

A run is written to ``<target>.partial`` and renamed to ``<target>`` only when every event
is in, so readers and the agent never see half a run; ``abort()`` (or an exception inside
the ``with`` block) removes the partial file. Rows are inserted in chunks, so memory stays
bounded whatever the run's size. Events are encoded with :mod:`bridge.spool.events`, as the
live writer encodes them.

Speed (an import of millions of points is bound by this writer): finite metric points, the
bulk of a run, go in packed, up to :data:`~bridge.spool.points.BLOCK` to a row
(:mod:`bridge.spool.points`; the file's meta says ``packed = 1``, and the reader expands
them), handed over without a Python call a point (:meth:`ImportedRunWriter.points_of`);
other rows with one multi-row ``INSERT`` per :data:`ROWS_PER_INSERT` rows rather than one
statement step per row; and the ``(run_id, seq)`` index of ``events`` is kept as rows go in:
every row of a file is of one run and comes with a higher ``seq``, so each entry lands at the
index's right edge (measured cheaper than building the index after the rows). Points already
in a SQLite file (an MLflow store) are read from it attached read-only (once an import, for
all its runs: :class:`SourceFiles`), a block's rows at a time, and packed alike
(:meth:`ImportedRunWriter.copy_points`): a tuple a point, made in C,
and no other Python object (an ``INSERT … SELECT``, a row a point, cost more). Each run's
file begins as the bytes of an empty spool file made once a process (:func:`bridge.spool.
schema.empty_spool_file`), not by running the DDL: an import of many small runs pays that
per run.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from itertools import chain
from pathlib import Path
from typing import Any, Iterable

from bridge.spool import blobs
from bridge.spool.events import (
    EVENT_COLUMNS,
    INSERT_EVENT,
    Kind,
    artifact_payload,
    encode_payload,
    metric_row,
)
from bridge.errors import ImportSourceError
from bridge.spool.liveness import hold_exclusive, release_exclusive
from bridge.spool.media import resolve_files
from bridge.spool.points import (BLOCK, PACKED_META, POINTS, pack, pack_rows, rows_a_block,
                                 rows_as_points)
from bridge.spool.schema import empty_spool_file, read_only_uri, record_meta

__all__ = ["ImportedRunWriter", "POINT_COLUMNS", "SourceFiles", "POINTS_PER_INSERT", "ROWS_PER_INSERT", "RUN_STATUSES"]

RUN_STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")

# Rows a multi-row INSERT carries, within SQLite's oldest bound-parameter limit (999).
ROWS_PER_INSERT = 999 // len(EVENT_COLUMNS)
_INTO, _, _ONE = INSERT_EVENT.partition(" VALUES ")
_INSERT_MANY = _INTO + " VALUES " + ", ".join([_ONE] * ROWS_PER_INSERT)

# A finite metric point of the run being written: only these columns are bound, the run id
# once a statement (?1), its kind and payload (NULL: a finite value) written in the SQL.
POINT_COLUMNS = ("key", "step", "ts_ms", "value")
_POINT_SQL = {"run_id": "?1", "kind": "'" + Kind.METRIC.value + "'", "payload": "NULL"}
assert [c for c in EVENT_COLUMNS if c not in _POINT_SQL] == list(POINT_COLUMNS)
POINTS_PER_INSERT = (999 - 1) // len(POINT_COLUMNS)
_ONE_POINT = "(" + ", ".join(_POINT_SQL.get(c, "?") for c in EVENT_COLUMNS) + ")"
_INSERT_POINTS = _INTO + " VALUES " + ", ".join([_ONE_POINT] * POINTS_PER_INSERT)

# A packed row of points (bridge.spool.points), its seq given: its last point's.
_INSERT_BLOCK = ("INSERT INTO events (seq, run_id, kind, key, step, ts_ms, value, payload) "
                 f"VALUES (?, ?, '{POINTS}', NULL, ?, ?, ?, ?)")

# copy_points(): the source's rows (step, ts_ms, value; NULL for NaN), BLOCK at a time.
_READ_POINTS = "SELECT step, ts_ms, value FROM ({select})"


class SourceFiles:
    """The SQLite files an import copies points from (:meth:`ImportedRunWriter.copy_points`),
    each attached read-only under its schema name to one in-memory connection for the whole
    import: attaching a file parses its schema, once an import rather than once a run. A
    context manager; closed, it detaches them all."""

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._attached: dict[str, Path] = {}  # schema -> file

    def query(self, db: Path, schema: str, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        """``sql`` run with ``db`` attached as ``schema``."""
        if not schema.isidentifier():  # spliced into the SQL: a name, never a value
            raise ValueError(f"not a schema name: {schema!r}")
        if self._conn is None:
            # uri=True: ATTACH reads the read-only URI only on a connection opened for URIs
            # (a default build of SQLite has URIs off).
            self._conn = sqlite3.connect(":memory:", uri=True, isolation_level=None)
        if self._attached.get(schema) != db:
            if schema in self._attached:
                detach = f"DETACH DATABASE {schema}"
                self._conn.execute(detach)
                del self._attached[schema]
            attach = f"ATTACH DATABASE ? AS {schema}"
            self._conn.execute(attach, (read_only_uri(db),))
            self._attached[schema] = db
        return self._conn.execute(sql, params)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn, self._attached = None, {}

    def __enter__(self) -> "SourceFiles":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ImportedRunWriter:
    """Writes one imported run; use as a context manager, then :meth:`commit`."""

    def __init__(self, spool_dir: Path, target: Path, meta: dict[str, str],
                 chunk: int = 10_000) -> None:
        self.spool_dir = Path(spool_dir)
        self.target = target
        self.partial = target.with_name(target.name + ".partial")
        self.chunk = chunk
        try:  # one import of a run at a time: a second would delete the first's .partial
            self._lock = hold_exclusive(target)
        except BlockingIOError:
            raise ImportSourceError(
                f"{target.name} is being imported by another process; run the import again "
                "once it has finished (its runs already written are skipped)") from None
        try:
            self._begin(target, meta)
        except BaseException:
            release_exclusive(target, self._lock)
            raise

    def _begin(self, target: Path, meta: dict[str, str]) -> None:
        self.partial.unlink(missing_ok=True)  # a killed import's, redone
        # Buffered EVENT_COLUMNS rows, and buffered finite metric points of one run as four
        # lists, one a POINT_COLUMNS column (see points_of()); rows or points are empty at any
        # time, so rows go in in the order they came.
        self.rows: list[tuple] = []
        self.points: tuple[list[Any], list[Any], list[Any], list[Any]] = ([], [], [], [])
        self._points_run: str | None = None
        # Buffered rows of points (see row_points()): whose and of which keys, then the
        # steps, times and values; less than a block's rows between calls.
        self._rows_of: tuple[str, tuple[str, ...]] | None = None
        self._row_cols: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
        self.written = 0
        old = os.umask(0o077)
        try:
            with open(self.partial, "xb") as fh:  # begun with the tables: no DDL a run
                fh.write(empty_spool_file())
            self._conn = sqlite3.connect(self.partial, isolation_level=None)
        finally:
            os.umask(old)
        # No journal at all: the rename in commit() is the commit point, and any failure
        # (an exception aborts the file: nothing here catches a failed statement and goes on)
        # leaves a .partial that abort() or the next import deletes. A journal in memory
        # still cost a copy of each page written.
        self._conn.execute("PRAGMA journal_mode=OFF")
        self._conn.execute("PRAGMA synchronous=OFF")  # the rename in commit() is the commit point
        record_meta(self._conn, {"file_id": target.stem, "host": os.uname().nodename,
                                   "pid": str(os.getpid()),
                                   "created_ms": str(int(time.time() * 1000)),
                                   "journal": "delete", PACKED_META: "1", **meta})
        self._conn.execute("BEGIN")

    def __enter__(self) -> "ImportedRunWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()

    def run_row(self, run_id: str, project: str, name: str | None, notes: str | None,
                group: str | None, backends_json: str, start_ms: int, end_ms: int | None,
                status: str) -> None:
        self._conn.execute(
            "INSERT INTO runs (run_id, project, name, notes, group_name, backends, start_ms, "
            "end_ms, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, project, name, notes, group, backends_json, int(start_ms), end_ms,
             status if status in RUN_STATUSES else "FINISHED"))

    def metric(self, run_id: str, key: str, step: int | None, ts_ms: int,
               value: float | None) -> None:
        self._add(metric_row(run_id, key, step, int(ts_ms),
                             float(value) if value is not None else float("nan")))

    def event(self, run_id: str, kind: str, key: str | None, step: int | None, ts_ms: int,
              payload: Any) -> None:
        self._add((run_id, str(kind), key, step, int(ts_ms), None, encode_payload(payload)))

    def artifact(self, run_id: str, name: str, step: int | None, ts_ms: int,
                 files: Iterable[tuple[str, Path]], type: str, source: str) -> None:
        """Copy each ``(relative path, local file)`` into the blob store and record them."""
        stored = []
        for rel, local in files:
            sha, size = blobs.store_file(self.spool_dir, local)
            stored.append({"path": rel, "sha256": sha, "size": size})
        self.event(run_id, Kind.ARTIFACT, name, step, ts_ms,
                   artifact_payload(name, stored, type=type, source=source))

    def media(self, run_id: str, key: str, step: int | None, ts_ms: int, payload: dict,
              files: Iterable[tuple[str, Path | bytes]]) -> None:
        """Copy each ``(reference, local file or bytes)`` into the blob store and record the
        media event, each item's ``{"file": reference}`` replaced by its sha256 and size."""
        stored: dict[str, tuple[str, int]] = {}
        for ref, content in files:
            if isinstance(content, (bytes, bytearray)):
                stored[ref] = blobs.store_bytes(self.spool_dir, bytes(content))
            else:
                stored[ref] = blobs.store_file(self.spool_dir, Path(content))
        self.event(run_id, Kind.MEDIA, key, step, ts_ms, resolve_files(payload, stored))

    def points_of(self, run_id: str) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        """The buffer of finite metric points of ``run_id``, for a caller with many (the
        import sink): four lists, keys, steps, times and values, which it extends alike (a
        str key, an int step or None, an int time, a finite float) after a
        :meth:`flush_rows` whenever :attr:`rows` is not empty or :attr:`holds_points`, and
        calls :meth:`flush_rows`
        once they hold ``chunk`` points. Those points are the ones :meth:`metric` would
        write."""
        if run_id != self._points_run:
            self.flush_rows()
            self._points_run = run_id
        return self.points

    def copy_points(self, run_id: str, key: str, db: Path, select: str, schema: str,
                    params: tuple = (), sources: "SourceFiles | None" = None) -> int:
        """Copy one key's points, the rows of ``select`` on the SQLite file ``db`` attached
        read-only as ``schema`` (columns ``step``, ``ts_ms``, ``value``: see
        :class:`bridge.adapters.importing.SqlPoints`), after the rows buffered so far, as
        packed rows (NaN and ±inf included); the number of points copied. ``sources``: the
        import's attached files (:class:`SourceFiles`), else the file is attached for this
        call alone."""
        self.flush_rows()
        if sources is None:
            with SourceFiles() as own:
                return self.copy_points(run_id, key, db, select, schema, params, own)
        # Read a block's rows at a time (made in C, one tuple a point) and packed as rows of
        # one key (pack_rows: no key a point to look at); the writes go to this file while
        # the read goes on in the other connection.
        rows_of = sources.query(db, schema, _READ_POINTS.format(select=select), params).fetchmany
        names, nan, n = (key,), math.nan, 0
        while rows := rows_of(BLOCK):
            count = len(rows)
            steps, times, values = (list(column) for column in zip(*rows))
            if None in values:  # NaN, which SQLite keeps as NULL
                values = [nan if v is None else v for v in values]
            if not self._insert_packed(run_id, pack_rows(names, steps, times, values), count,
                                       steps, times):  # a row a point, as metric()
                self._conn.executemany(INSERT_EVENT, [
                    metric_row(run_id, key, step, int(ts), float(value))
                    for step, ts, value in zip(steps, times, values)])
                self.written += count
            n += count
        return n

    @property
    def holds_points(self) -> bool:
        """Whether rows of points (:meth:`row_points`) wait: :meth:`flush_rows` before
        extending :meth:`points_of`'s buffer."""
        return self._rows_of is not None

    def row_points(self, run_id: str, names: tuple[str, ...], steps: list[Any],
                   times: list[Any], values: list[Any]) -> None:
        """Finite metric points of ``run_id`` logged as rows, each a value of every key of
        ``names`` in that order at one step and time (``steps`` and ``times`` one a row,
        ``values`` row after row), after everything written or buffered so far. Packed as rows
        (:func:`~bridge.spool.points.pack_rows`: a step and a time a row, not a point); the
        rows short of a whole block wait for more rows of the same keys."""
        if not steps:
            return
        if len(names) > BLOCK:  # a row wider than a block: its points, a block at a time
            buffer = self.points_of(run_id)
            if self.rows or self._rows_of is not None:
                self.flush_rows()
            for column, more in zip(buffer, (*rows_as_points(names, steps, times), values)):
                column.extend(more)
            if len(buffer[0]) >= self.chunk:
                self.flush_rows()
            return
        if self.rows or self.points[0] or (self._rows_of is not None
                                           and self._rows_of != (run_id, names)):
            self.flush_rows()
        self._rows_of = (run_id, names)
        buffered = self._row_cols
        buffered[0].extend(steps)
        buffered[1].extend(times)
        buffered[2].extend(values)
        whole = len(buffered[0]) - len(buffered[0]) % rows_a_block(len(names))
        if whole:
            self._insert_rows(whole)

    def _insert_rows(self, count: int) -> None:
        """The first ``count`` buffered rows of points, a block's rows to a packed row (a row
        a point where a block cannot be packed)."""
        run_id, names = self._rows_of  # type: ignore[misc]
        steps, times, values = self._row_cols
        width = len(names)
        per = rows_a_block(width)
        for i in range(0, count, per):
            j = min(count, i + per)
            part = (steps[i:j], times[i:j], values[i * width:j * width])
            if not self._insert_packed(run_id, pack_rows(names, *part), len(part[2]), *part[:2]):
                self._insert_point_rows(run_id, *rows_as_points(names, *part[:2]), part[2])
        del steps[:count], times[:count], values[:count * width]
        if not steps:
            self._rows_of = None

    def _add(self, row: tuple) -> None:
        if self.points[0] or self._rows_of is not None:
            self._insert_points()
        self.rows.append(row)
        if len(self.rows) >= self.chunk:
            self.flush_rows()

    def _insert_points(self) -> None:
        """The buffered points as packed rows of up to :data:`~bridge.spool.points.BLOCK`
        points (:mod:`bridge.spool.points`); a block that cannot be packed goes in a row a
        point."""
        if self._rows_of is not None:  # at most one of the two holds points
            self._insert_rows(len(self._row_cols[0]))
        keys, steps, times, values = self.points
        for i in range(0, len(keys), BLOCK):
            part = (keys[i:i + BLOCK], steps[i:i + BLOCK], times[i:i + BLOCK],
                    values[i:i + BLOCK])
            if not self._insert_block(self._points_run, *part):
                self._insert_point_rows(self._points_run, *part)
        for column in self.points:
            column.clear()

    def _insert_block(self, run_id: str | None, keys: list[Any], steps: list[Any],
                      times: list[Any], values: list[Any]) -> bool:
        """These points as one packed row after the rows so far; False, and nothing written,
        when they cannot be packed."""
        return self._insert_packed(run_id, pack(keys, steps, times, values), len(keys), steps,
                                   times)

    def _insert_packed(self, run_id: str | None, block: bytes | None, count: int,
                       steps: list[Any], times: list[Any]) -> bool:
        """A packed row of ``count`` points (``steps`` and ``times``: theirs, or their rows')
        after the rows so far; False, and nothing written, when ``block`` is None."""
        if block is None:
            return False
        stepped = [s for s in steps if s is not None] if None in steps else steps
        # The row's seq is its last point's: the rows before it end at self.written.
        self._conn.execute(_INSERT_BLOCK, (self.written + count, run_id,
                                           max(stepped) if stepped else None, times[0],
                                           count, block))
        self.written += count
        return True

    def _insert_point_rows(self, run_id: str | None, keys: list[Any], steps: list[Any],
                           times: list[Any], values: list[Any]) -> None:
        n = len(keys)
        flat = [x for point in zip(keys, steps, times, values) for x in point]
        execute, k, width = self._conn.execute, POINTS_PER_INSERT, len(POINT_COLUMNS)
        whole = n - n % k
        for i in range(0, whole * width, k * width):
            execute(_INSERT_POINTS, [run_id, *flat[i:i + k * width]])
        kind = Kind.METRIC.value
        self._conn.executemany(INSERT_EVENT, [(run_id, kind, *point, None) for point
                                              in zip(keys[whole:], steps[whole:],
                                                     times[whole:], values[whole:])])
        self.written += n

    def flush_rows(self) -> int:
        """Insert the buffered rows, in order (still inside the file's one transaction)."""
        if self.points[0] or self._rows_of is not None:
            self._insert_points()
        rows = self.rows
        if rows:
            execute, k = self._conn.execute, ROWS_PER_INSERT
            whole = len(rows) - len(rows) % k
            for i in range(0, whole, k):
                execute(_INSERT_MANY, tuple(chain.from_iterable(rows[i:i + k])))
            if whole < len(rows):
                self._conn.executemany(INSERT_EVENT, rows[whole:])
            self.written += len(rows)
            rows.clear()
        return self.written

    def commit(self) -> Path:
        """Make the run visible: commit, fsync, 0600, rename to the target."""
        self.flush_rows()
        self._conn.execute("COMMIT")
        self._conn.close()
        with open(self.partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(self.partial, 0o600)
        os.replace(self.partial, self.target)
        release_exclusive(self.target, self._lock)
        return self.target

    def abort(self) -> None:
        try:
            self._conn.close()
        finally:
            self.partial.unlink(missing_ok=True)
            release_exclusive(self.target, self._lock)

