"""Packed point rows (``bridge.spool.points``): an import stores runs of points as rows of up
to ``BLOCK`` points, and every reader still sees one metric event a point, with its own
seq: cursors anywhere (inside a row too), counts, dead letters by seq, filtered selects, the
highest step, a salvaged copy and prune's counts agree with the events one a row."""

from __future__ import annotations

import json
import math
import sqlite3
import struct
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.adapters.importing import ImportEvent, MetricPoints, MetricRows, SourceRun
from bridge.errors import SpoolError
from bridge.importers.sink import import_runs
from bridge.spool import points as P
from bridge.spool.prune import scan_files
from bridge.spool.reader import (
    count_after,
    events_by_seq,
    file_counts,
    iter_events,
    list_runs,
    max_seqs,
    max_step,
    select_events,
)
from bridge.spool.repair import salvage

_KEY = st.text(min_size=0, max_size=8)
_STEP = st.one_of(st.none(), st.integers(-(2**63) + 1, 2**63 - 1))
_VALUE = st.floats(allow_nan=True, allow_infinity=True)


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_KEY, _STEP, st.integers(-(2**63), 2**63 - 1), _VALUE),
                max_size=50))
def test_a_block_reads_back_what_was_packed(points: list) -> None:
    cols = [list(c) for c in zip(*points)] or [[], [], [], []]
    block = P.pack(*cols)
    assert block is not None
    got = P.unpack(block)
    for want, have in zip(cols, got):
        assert len(want) == len(have) and all(map(_same, want, have))


@pytest.mark.parametrize("keys", [["a", "b", "c"] * 4, ["a", "b", "c"] * 3 + ["a"],
                                  ["a", "b", "a", "c"] * 3, ["x"] * 12])
def test_keys_that_repeat_in_one_order_need_no_index(keys: list) -> None:
    n = len(keys)
    block = P.pack(keys, list(range(n)), [7] * n, [0.5] * n)
    cycle = len(set(keys)) * (n // len(set(keys))) == n and keys == list(
        dict.fromkeys(keys)) * (n // len(set(keys)))
    assert len(block) == 3 + 8 + 1 + len(json.dumps(list(dict.fromkeys(keys)))) + n * (
        24 if cycle else 26)
    assert P.unpack(block)[0] == keys


def test_what_cannot_be_packed_is_refused_not_changed() -> None:
    assert P.pack(["a"], [1.5], [0], [1.0]) is None  # a float step
    assert P.pack(["a"], [1], [None], [1.0]) is None  # no time
    assert P.pack(["a"], [P.NO_STEP], [0], [1.0]) is None  # would read back as no step
    assert P.pack(["a"], [2**63], [0], [1.0]) is None  # past 64 bits
    keys = [str(i) for i in range(65536)]
    assert P.pack(keys, [0] * len(keys), [0] * len(keys), [0.0] * len(keys)) is None


_WIDTH = st.integers(1, 4)


@settings(max_examples=200, deadline=None)
@given(st.data(), _WIDTH)
def test_rows_read_back_as_their_points(data: Any, width: int) -> None:
    """A block of rows (pack_rows) reads back as the points of each row: every key of the
    row, in its order, at the row's step and time."""
    names = tuple(data.draw(st.lists(_KEY, min_size=width, max_size=width)))
    rows = data.draw(st.lists(st.tuples(_STEP, st.integers(-(2**63), 2**63 - 1),
                                        st.lists(_VALUE, min_size=width, max_size=width)),
                              max_size=30))
    steps, times = [r[0] for r in rows], [r[1] for r in rows]
    values = [v for r in rows for v in r[2]]
    block = P.pack_rows(names, steps, times, values)
    assert block is not None and len(block) == 12 + len(
        json.dumps(list(names), ensure_ascii=False).encode()) + 16 * len(rows) + 8 * len(values)
    keys, got_steps, got_times, got_values = P.unpack(block)
    assert keys == list(names) * len(rows)
    assert got_steps == [s for s in steps for _ in names]
    assert got_times == [t for t in times for _ in names]
    assert all(map(_same, got_values, values)) and len(got_values) == len(values)


def test_rows_that_cannot_be_packed_are_refused() -> None:
    assert P.pack_rows((), [1], [0], []) is None  # no keys
    assert P.pack_rows(("a", "b"), [1], [0], [1.0]) is None  # a value short
    assert P.pack_rows(("a",), [1.5], [0], [1.0]) is None  # a float step
    assert P.pack_rows(("a",), [P.NO_STEP], [0], [1.0]) is None
    assert P.pack_rows(("a",), [1, 2], [0], [1.0, 2.0]) is None  # a time short
    assert P.pack_rows(("a",), [1], [0], ["x"]) is None  # not a number


@pytest.mark.parametrize("damage", [lambda b: b[:-1], lambda b: b[:-8],
                                    lambda b: b[:3] + (7).to_bytes(4, "little") + b[7:],
                                    lambda b: b"BP1" + struct.pack("<II", 0, 2) + b"r[]"])
def test_damaged_rows_are_an_error_that_says_so(damage: Any) -> None:
    block = P.pack_rows(("a", "b"), [1, None], [5, 6], [0.5, -1.0, 2.0, 3.0])
    with pytest.raises(SpoolError, match="damaged points row"):
        P.unpack(damage(block))


def test_a_row_wider_than_a_block_is_packed_a_block_at_a_time(tmp_path: Path) -> None:
    """Rows of 1,100 keys (an operation of as many series): every packed row holds at most
    BLOCK points, and the run reads back point for point."""
    names = tuple(f"k{i}" for i in range(1_100))

    class Wide:
        name = "synthetic"

        def runs(self) -> Iterator[SourceRun]:
            yield SourceRun("synthetic", "wide", "proj", name="wide", start_ms=1_000)

        def stream(self, run: SourceRun) -> Iterator[Any]:
            yield MetricRows(names, [0, 1, None], [10, 11, 12],
                             [float(i) for i in range(3 * len(names))])

    import_runs(Wide(), tmp_path)
    rec, events = _all(tmp_path)
    (f,) = rec.files
    with sqlite3.connect(f.path) as c:
        spans = [int(v) for (v,) in c.execute(
            "SELECT value FROM events WHERE kind = ?", (P.POINTS,))]
    assert spans and max(spans) <= P.BLOCK and sum(spans) == 3 * len(names)
    metrics = [e for e in events if e.kind == "metric"]
    assert [(e.key, e.step, e.ts_ms, e.value) for e in metrics] == [
        (key, step, ts, float(r * len(names) + k)) for r, (step, ts) in
        enumerate([(0, 10), (1, 11), (None, 12)]) for k, key in enumerate(names)]


@pytest.mark.parametrize("damage", [lambda b: b[:-1], lambda b: b"XX" + b[2:],
                                    lambda b: b[:12], lambda b: b + b"\0",
                                    lambda b: b[:11] + b"z" + b[12:]])
def test_a_damaged_block_is_an_error_that_says_so(damage: Any) -> None:
    block = P.pack(["a", "b"], [1, None], [5, 6], [0.5, -1.0])
    with pytest.raises(SpoolError, match="damaged points row"):
        P.unpack(damage(block))


class _Source:
    """One run: a tag, BLOCK * 2 + 37 points over three keys, a row of the three a step and
    time (some rows without a step; one NaN, which goes a row of its own), a param among
    them, and more points. Handed over as MetricPoints, or as MetricRows of 100 rows (packed
    a step and a time a row)."""

    name = "synthetic"
    KEYS = ("loss", "acc", "lr")

    def __init__(self, shape: str) -> None:
        self.shape = shape

    def runs(self) -> Iterator[SourceRun]:
        yield SourceRun("synthetic", "r1", "proj", name="one", start_ms=1_000)

    def stream(self, run: SourceRun) -> Iterator[Any]:
        n = P.BLOCK * 2 + 37
        steps = [None if r % 50 == 0 else r for r in range(n // 3)]
        times = [10_000 + r for r in range(n // 3)]
        values = [float("nan") if i == 700 else i / 7 for i in range(n)]
        for lo, hi in ((0, 500), (500, n // 3)):  # rows; the param after 1,500 points
            if self.shape == "rows":
                for r in range(lo, hi, 100):
                    top = min(hi, r + 100)
                    yield MetricRows(self.KEYS, steps[r:top], times[r:top],
                                     values[3 * r:3 * top])
            else:
                yield MetricPoints([x for r in range(lo, hi) for k, key in enumerate(self.KEYS)
                                    for x in (key, steps[r], times[r], values[3 * r + k])])
            if lo == 0:
                yield ImportEvent("param", "opt", 2_000, payload="adam")
        yield ImportEvent("summary", "best", 3_000, payload=0.25)

    def events(self, run: SourceRun) -> Iterator[Any]:
        from bridge.adapters.importing import expand

        return expand(self.stream(run))


@pytest.fixture(scope="module", params=["points", "rows"])
def spool(request: Any, tmp_path_factory: Any) -> Path:
    d = tmp_path_factory.mktemp("packed")
    import_runs(_Source(request.param), d)
    return d


def _all(spool: Path) -> tuple[Any, list]:
    (rec,) = list_runs(spool)
    return rec, list(iter_events(rec.files, rec.run_id))


def test_the_file_holds_packed_rows_and_reads_as_one_event_a_point(spool: Path,
                                                                   request: Any) -> None:
    rec, events = _all(spool)
    (f,) = rec.files
    assert f.packed
    with sqlite3.connect(f.path) as c:
        kinds = dict(c.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
        layouts = {blob[11:12] for (blob,) in c.execute(
            "SELECT payload FROM events WHERE kind = ?", (P.POINTS,))}
    assert kinds.get(P.POINTS, 0) >= 3  # the points went in as blocks, not a row each
    # MetricRows are packed a step and a time a row (layout r); MetricPoints never are
    assert (b"r" in layouts) == (request.node.callspec.params["spool"] == "rows"), layouts
    metrics = [e for e in events if e.kind == "metric"]
    assert len(metrics) == P.BLOCK * 2 + 37
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert math.isnan(metrics[700].value) and metrics[150].step is None
    assert [(e.key, e.step, e.ts_ms) for e in metrics[:6]] == [
        ("loss", None, 10_000), ("acc", None, 10_000), ("lr", None, 10_000),
        ("loss", 1, 10_001), ("acc", 1, 10_001), ("lr", 1, 10_001)]
    kinds_seen = [e.kind for e in events]
    assert kinds_seen.index("param") > kinds_seen.index("metric")
    assert events[-1].kind == "summary"


def test_a_cursor_anywhere_reads_exactly_what_follows_it(spool: Path) -> None:
    rec, events = _all(spool)
    (f,) = rec.files
    total = len(events)
    assert file_counts(f, rec.run_id, [0])[0] == total
    assert max_seqs(rec.files, rec.run_id) == {f.file_id: total}
    for cursor in sorted({0, 1, 2, 3, 500, 1023, 1024, 1025, 1500, 1501, 1502, 2047,
                          total - 1, total}):
        after = list(iter_events(rec.files, rec.run_id, after={f.file_id: cursor}))
        assert [e.uid for e in after] == [e.uid for e in events[cursor:]], cursor
        assert count_after(rec.files, rec.run_id, {f.file_id: cursor}) == total - cursor
        assert file_counts(f, rec.run_id, [cursor])[1] == [total - cursor]
        upto = list(iter_events(rec.files, rec.run_id, after={f.file_id: 0},
                                upto={f.file_id: cursor}, chunk=3))
        assert [e.uid for e in upto] == [e.uid for e in events[:cursor]], cursor


def test_dead_letters_by_seq_and_filtered_selects_find_single_points(spool: Path) -> None:
    rec, events = _all(spool)
    (f,) = rec.files
    seqs = [1, 2, 700, 1024, 1025, 1501, len(events), len(events) + 5]
    assert events_by_seq(f, seqs) == [events[s - 1] for s in seqs if s <= len(events)]
    assert list(select_events(f, rec.run_id)) == events
    want = [e for e in events if e.kind == "metric" and e.key == "acc" and e.step in (3, 401)]
    assert list(select_events(f, rec.run_id, kinds=["metric"], keys=["acc"],
                              steps=[3, 401])) == want and len(want) == 2
    assert [e.kind for e in select_events(f, rec.run_id, kinds=["param"])] == ["param"]
    assert max_step(rec.files, rec.run_id) == max(e.step for e in events
                                                  if e.kind == "metric" and e.step is not None)


def test_a_salvaged_copy_and_prune_count_points_not_rows(spool: Path, tmp_path: Path) -> None:
    rec, events = _all(spool)
    (f,) = rec.files
    (fr,) = scan_files(spool)
    assert fr.events == {rec.run_id: len(events)}
    copy = tmp_path / "spool"
    copy.mkdir()
    src = copy / f.path.name
    src.write_bytes(f.path.read_bytes())
    report = salvage(src, tmp_path)
    assert report.error is None and report.events == len(events)
    (again,) = list_runs(tmp_path)
    assert [(e.seq, e.kind, e.key, e.step) for e in iter_events(again.files, again.run_id)] == [
        (e.seq, e.kind, e.key, e.step) for e in events]


def test_local_queries_see_a_point_a_row(spool: Path) -> None:
    """bridge.data() over an imported run: its DataFrame has a row a point, filters apply
    to the points inside packed rows."""
    from bridge.query import data

    rec, events = _all(spool)
    df = data(run=rec.run_id, event="metric", key="acc", dir=spool)
    want = [e for e in events if e.kind == "metric" and e.key == "acc"]
    assert len(df) == len(want) > P.BLOCK // 3
    assert all(map(_same, list(df["value"]), [e.value for e in want]))
    assert any(math.isnan(v) for v in df["value"])  # point 700, NaN, kept
    assert data(run=rec.run_id, event="metric", step=[3], dir=spool)["key"].tolist() == [
        e.key for e in events if e.kind == "metric" and e.step == 3]
