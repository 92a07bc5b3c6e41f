"""The import sink's two ways in: one ``ImportEvent`` a point, or runs of points as
``MetricPoints`` (an importer's optional ``stream(run)``). Both must write the same spool,
row for row, whatever the points hold (non-finite values, steps of None) and wherever other
events fall between them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from hypothesis import given, settings
from hypothesis import strategies as st
from same_spool import assert_same_spool, spool_rows

from bridge.adapters.importing import ImportEvent, MetricPoints, SourceRun, expand
from bridge.importers.sink import import_runs

_VALUE = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.5))
_POINT = st.tuples(st.sampled_from(["loss", "acc", "lr"]), st.one_of(st.none(), st.integers(0, 9)),
                   st.integers(0, 2**40), _VALUE)
# a part of a run: a batch of points, or another event between batches
_PART = st.one_of(st.lists(_POINT, max_size=12).map(lambda ps: ("points", ps)),
                  st.sampled_from(["lr", "opt"]).map(lambda k: ("param", k)))


class _Source:
    """An importer of one run made of ``parts``; ``with_stream`` offers MetricPoints."""

    name = "synthetic"

    def __init__(self, parts: list[tuple[str, Any]], with_stream: bool) -> None:
        self.parts = parts
        if with_stream:
            self.stream = self._stream

    def runs(self) -> Iterator[SourceRun]:
        yield SourceRun("synthetic", "run-1", "proj", name="one", start_ms=1_000)

    def _stream(self, run: SourceRun) -> Iterator[ImportEvent | MetricPoints]:
        for what, part in self.parts:
            if what == "points":
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
    n = sum(len(ps) for what, ps in parts if what == "points")
    assert sum(done.points.values()) == n
    assert sum(1 for r in _rows(done.path.parents[1]) if r[1] == "metric") == n


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
