"""The import sink's ways in: one ``ImportEvent`` a point, runs of points as
``MetricPoints`` (or four columns, ``MetricColumns``), or a key's points as the rows of a query on a SQLite file (``SqlPoints``,
which the writer reads from the file attached), the last two through an importer's optional ``stream(run)``.
All must write the same spool, row for row, whatever the points hold (non-finite values,
steps of None) and wherever other events fall between them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterator

from hypothesis import given, settings
from hypothesis import strategies as st
from same_spool import assert_same_spool, spool_rows

from bridge.adapters.importing import (ImportEvent, MetricColumns, MetricPoints, MetricRows,
                                       RowGatherer, SourceRun, SqlPoints, expand)
from bridge.importers.sink import import_runs

_VALUE = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.5))
_POINT = st.tuples(st.sampled_from(["loss", "acc", "lr"]), st.one_of(st.none(), st.integers(0, 9)),
                   st.integers(0, 2**40), _VALUE)
_NAMES = st.lists(st.sampled_from(["loss", "acc", "lr"]), min_size=1, max_size=3,
                  unique=True).map(tuple)
_ROW = st.tuples(st.one_of(st.none(), st.integers(0, 9)), st.integers(0, 2**40),
                 st.lists(_VALUE, min_size=3, max_size=3))
# a part of a run: a batch of points, rows of points of the same keys (as many as a block's
# rows and more, at times), or another event between batches
_PART = st.one_of(st.lists(_POINT, max_size=12).map(lambda ps: ("points", ps)),
                  st.tuples(_NAMES, st.lists(_ROW, max_size=12), st.sampled_from([1, 400]))
                  .map(lambda t: ("rows", t)),
                  st.sampled_from(["lr", "opt"]).map(lambda k: ("param", k)))


def _row_points(part: tuple) -> list[tuple]:
    """The points of a ("rows", (names, rows, repeat)) part, row after row."""
    names, rows, repeat = part
    return [(key, step, ts, values[k]) for step, ts, values in rows * repeat
            for k, key in enumerate(names)]


class _Source:
    """An importer of one run made of ``parts``; ``with_stream`` offers MetricPoints."""

    name = "synthetic"

    def __init__(self, parts: list[tuple[str, Any]], with_stream: bool) -> None:
        self.parts = parts
        if with_stream:
            self.stream = self._stream

    def runs(self) -> Iterator[SourceRun]:
        yield SourceRun("synthetic", "run-1", "proj", name="one", start_ms=1_000)

    def _stream(self, run: SourceRun) -> Iterator[Any]:
        for i, (what, part) in enumerate(self.parts):
            if what == "rows":
                names, rows, repeat = part
                rows = rows * repeat
                yield MetricRows(names, [r[0] for r in rows], [r[1] for r in rows],
                                 [r[2][k] for r in rows for k in range(len(names))])
            elif what == "points" and i % 2:  # as four columns (trackio's rows)
                yield MetricColumns(*(list(c) for c in zip(*part))) if part else (
                    MetricColumns([], [], [], []))
            elif what == "points":
                yield MetricPoints([x for point in part for x in point])
            else:
                yield ImportEvent("param", part, 2_000, payload={"v": part})

    def events(self, run: SourceRun) -> Iterator[ImportEvent]:
        return expand(self._stream(run))


def _rows(spool: Path) -> list[tuple]:
    (rows,) = spool_rows(spool).values()
    return rows[1:]  # after the runs row


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(_PART, max_size=8))
def test_points_and_events_write_the_same_spool(parts: list, tmp_path_factory: Any) -> None:
    by_stream, _ = assert_same_spool(lambda: _Source(parts, True), tmp_path_factory.mktemp("s"))
    (done,) = by_stream
    n = sum(len(ps) if what == "points" else len(_row_points(ps)) for what, ps in parts
            if what != "param")
    assert sum(done.points.values()) == n
    assert sum(1 for r in _rows(done.path.parents[1]) if r[1] == "metric") == n


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.integers(1, 70)), max_size=6))
def test_gathered_rows_are_handed_over_in_order(runs: list) -> None:
    """RowGatherer: runs of rows of the same keys, long and short, hand over every point in
    the order it came; a long run as rows of points, a short one as points."""
    rows, got, want = RowGatherer(), [], []
    for names, count in runs:
        if names != rows.names:
            got += rows.switch(names)
        for r in range(count):
            rows.steps.append(r)
            rows.ts_ms.append(1_000 + r)
            rows.values.extend(float(r * 10 + k) for k in range(len(names)))
            want += [(key, r, 1_000 + r, float(r * 10 + k)) for k, key in enumerate(names)]
            if len(rows.values) >= rows.BATCH:
                got += rows.take()
    got += rows.take()
    assert [(e.key, e.step, e.ts_ms, e.value) for e in expand(got)] == want
    # rows of points that other keys follow are a long run's (the last may be short)
    assert all(len(part.steps) >= RowGatherer.MIN_ROWS for part in got[:-1]
               if type(part) is MetricRows)


def test_a_point_batch_keeps_its_place_between_events(tmp_path: Path) -> None:
    parts = [("points", [("loss", 0, 10, 1.0), ("loss", 1, 11, float("nan"))]),
             ("param", "lr"),
             ("points", [("acc", None, 12, float("inf")), ("acc", 2, 13, 0.25)])]
    (done,) = import_runs(_Source(parts, True), tmp_path)
    rows = [r for r in _rows(tmp_path) if r[1] in ("metric", "param")]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("metric", "loss", 0), ("metric", "loss", 1), ("param", "lr", None),
        ("metric", "acc", None), ("metric", "acc", 2)]
    assert done.points == {"loss": 2, "acc": 2} and done.counts["metric"] == 4


class _SqlSource(_Source):
    """``parts`` with each batch's points written to a SQLite table and handed over as
    ``SqlPoints`` of one key each (``by_sql``) or as ``MetricPoints`` of the same values."""

    def __init__(self, parts: list[tuple[str, Any]], db: Path, by_sql: bool) -> None:
        super().__init__(_as_points(parts), with_stream=True)
        self.db, self.by_sql = db, by_sql

    def _stream(self, run: SourceRun) -> Iterator[ImportEvent | MetricPoints | SqlPoints]:
        for i, (what, part) in enumerate(self.parts):
            if what != "points":
                yield ImportEvent("param", part, 2_000, payload={"v": part})
                continue
            for key in sorted({p[0] for p in part}):
                mine = [p for p in part if p[0] == key]
                if self.by_sql:
                    yield SqlPoints(self.db, key, "SELECT step, ts AS ts_ms, value FROM "
                                    "source.pts WHERE part = ? AND key = ? ORDER BY i", (i, key))
                else:
                    yield MetricPoints([x for point in mine for x in point])


def _as_points(parts: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``parts`` with rows of points as the points they hold."""
    return [("points", _row_points(part)) if what == "rows" else (what, part)
            for what, part in parts]


def _table(parts: list[tuple[str, Any]], db: Path) -> None:
    parts = _as_points(parts)
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE pts (i INTEGER PRIMARY KEY, part INTEGER, key TEXT, "
                  "step INTEGER, ts INTEGER, value REAL)")
        c.executemany("INSERT INTO pts (part, key, step, ts, value) VALUES (?, ?, ?, ?, ?)",
                      [(i, *p) for i, (what, part) in enumerate(parts) if what == "points"
                       for p in part])  # NaN goes in as NULL


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(_PART, max_size=8))
def test_sql_points_write_what_metric_points_write(parts: list, tmp_path_factory: Any) -> None:
    tmp = tmp_path_factory.mktemp("q")
    _table(parts, tmp / "source.db")
    by_sql = import_runs(_SqlSource(parts, tmp / "source.db", True), tmp / "by-sql")
    by_list = import_runs(_SqlSource(parts, tmp / "source.db", False), tmp / "by-list")
    assert _rows(tmp / "by-sql") == _rows(tmp / "by-list")
    assert [(r.points, r.counts) for r in by_sql] == [(r.points, r.counts) for r in by_list]
    # and through its events (expand), one event a point
    assert_same_spool(lambda: _SqlSource(parts, tmp / "source.db", True), tmp / "events")


def test_sql_points_are_copied_from_the_file_read_only(tmp_path: Path) -> None:
    parts = [("points", [("loss", 0, 10, 1.0), ("loss", None, 11, float("-inf"))]),
             ("param", "lr"), ("points", [("acc", 2, 12, float("nan"))])]
    _table(parts, tmp_path / "source.db")
    (tmp_path / "source.db").chmod(0o400)
    before = (tmp_path / "source.db").read_bytes()
    (done,) = import_runs(_SqlSource(parts, tmp_path / "source.db", True), tmp_path / "spool")
    assert (tmp_path / "source.db").read_bytes() == before
    rows = [r[1:] for r in _rows(tmp_path / "spool") if r[1] in ("metric", "param")]
    assert rows == [("metric", "loss", 0, 10, 1.0, None),
                    ("metric", "loss", None, 11, None, "-Infinity"),
                    ("param", "lr", None, 2_000, None, '{"v": "lr"}'),
                    ("metric", "acc", 2, 12, None, "NaN")]
    assert done.points == {"loss": 2, "acc": 1} and done.counts["metric"] == 3
    with sqlite3.connect(done.path) as c:  # the spool's index, kept as the rows went in
        assert c.execute("SELECT sql FROM sqlite_master WHERE name = 'events_run_seq'"
                         ).fetchone()[0] == "CREATE INDEX events_run_seq ON events (run_id, seq)"
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_sql_points_are_written_in_their_order_not_the_files(tmp_path: Path) -> None:
    """The select's ORDER BY gives the rows their seq: SQLite keeps the ORDER BY of the one
    subquery of a query that has none of its own (the writer's SELECT from it)."""
    with sqlite3.connect(tmp_path / "source.db") as c:
        c.execute("CREATE TABLE pts (step INTEGER, ts INTEGER, value REAL)")
        c.executemany("INSERT INTO pts VALUES (?, ?, ?)", [(s, 100 - s, s / 2) for s in range(9)])

    class Reversed(_Source):
        def _stream(self, run: SourceRun) -> Iterator[SqlPoints]:
            yield SqlPoints(tmp_path / "source.db", "loss",
                            "SELECT step, ts AS ts_ms, value FROM source.pts ORDER BY ts", ())

    import_runs(Reversed([], with_stream=True), tmp_path / "spool")
    steps = [r[3] for r in _rows(tmp_path / "spool") if r[1] == "metric"]
    assert steps == list(range(8, -1, -1))


def test_an_imported_file_begun_from_the_empty_file_is_a_spool_file(tmp_path: Path) -> None:
    """Each run's file begins as the bytes of an empty spool file: the same tables and
    indexes as a file the DDL makes, its own facts in meta, private, sound."""
    import os

    from bridge.spool.schema import SCHEMA_VERSION, create_schema

    parts = [("points", [("loss", 0, 10, 1.0)]), ("param", "lr")]
    (done,) = import_runs(_Source(parts, True), tmp_path / "spool")
    made = sqlite3.connect(tmp_path / "made.db")
    create_schema(made, {"file_id": "x"})
    schema = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
    with sqlite3.connect(done.path) as c:
        assert c.execute(schema).fetchall() == made.execute(schema).fetchall()
        meta = dict(c.execute("SELECT key, value FROM meta"))
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    made.close()
    assert meta["schema_version"] == str(SCHEMA_VERSION) and meta["file_id"] == done.path.stem
    assert meta["import_source"] == done.source
    assert os.stat(done.path).st_mode & 0o777 == 0o600


def test_one_import_of_a_run_at_a_time(tmp_path: Path) -> None:
    """A second writer of the same run is refused while the first holds its lock (it would
    delete the first's .partial and publish its own half); the lock goes with the first,
    and a killed import's .partial (no lock) is redone."""
    import pytest

    from bridge.errors import ImportSourceError
    from bridge.spool.imported import ImportedRunWriter

    (tmp_path / "spool").mkdir()
    target = tmp_path / "spool" / "import-x-r1.db"
    first = ImportedRunWriter(tmp_path, target, {"node": "import:x"})
    first.run_row("r1", "p", None, None, None, "[]", 0, None, "FINISHED")
    with pytest.raises(ImportSourceError, match="being imported by another process"):
        ImportedRunWriter(tmp_path, target, {"node": "import:x"})
    assert first.partial.exists()  # left alone by the refused one
    first.commit()
    assert target.exists() and not first.partial.exists()
    assert not target.with_suffix(".lock").exists()
    stale = target.with_name("import-x-r2.db.partial")
    stale.write_bytes(b"half a run")  # what a SIGKILL leaves: no process holds it
    again = ImportedRunWriter(tmp_path, target.with_name("import-x-r2.db"), {"node": "import:x"})
    again.run_row("r2", "p", None, None, None, "[]", 0, None, "FINISHED")
    assert again.commit().exists() and not stale.exists()
    with sqlite3.connect(target.with_name("import-x-r2.db")) as c:
        assert c.execute("SELECT run_id FROM runs").fetchall() == [("r2",)]


def test_source_files_attach_each_file_once_and_switch_between_them(tmp_path: Path) -> None:
    """SourceFiles: a file stays attached for the next query; another file under the same
    schema name replaces it; a schema name that is not a name is refused."""
    import pytest

    from bridge.spool.imported import SourceFiles

    for name, value in (("a.db", 1.5), ("b.db", 2.5)):
        with sqlite3.connect(tmp_path / name) as c:
            c.execute("CREATE TABLE pts (value REAL)")
            c.execute("INSERT INTO pts VALUES (?)", (value,))
        c.close()
    with SourceFiles() as sources:
        got = [sources.query(tmp_path / name, "source", "SELECT value FROM source.pts")
               .fetchall() for name in ("a.db", "a.db", "b.db", "a.db")]
        assert got == [[(1.5,)], [(1.5,)], [(2.5,)], [(1.5,)]]
        with pytest.raises(ValueError, match="schema name"):
            sources.query(tmp_path / "a.db", "x; DROP TABLE pts", "SELECT 1")
