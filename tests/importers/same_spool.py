"""A check shared by the importers with a ``stream(run)``: importing through it writes the
same spool, row for row, as importing their ``events(run)`` one event at a time."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterator

from bridge.importers.sink import import_runs
from bridge.spool.events import encode_float
from bridge.spool.points import POINTS, expand_row

__all__ = ["EventsOnly", "assert_same_spool", "spool_rows"]


class EventsOnly:
    """``importer`` without its ``stream``: the sink takes one event at a time."""

    def __init__(self, importer: Any) -> None:
        self._imp = importer
        self.name = importer.name

    def runs(self) -> Iterator[Any]:
        return self._imp.runs()

    def events(self, run: Any) -> Iterator[Any]:
        return self._imp.events(run)


def spool_rows(spool: Path) -> dict[str, list[tuple]]:
    """Every imported file's runs row and its events (seq order) by file name, a packed
    row of points (bridge.spool.points) as one row a point: where a block ends depends on
    how the points were handed over, not on what was written."""
    out = {}
    for db in sorted((spool / "spool").glob("import-*.db")):
        with sqlite3.connect(db) as c:
            rows = c.execute("SELECT * FROM runs").fetchall()
            for row in c.execute("SELECT seq, run_id, kind, key, step, ts_ms, value, payload "
                                 "FROM events ORDER BY seq"):
                if row[2] == POINTS:
                    rows += [(e.seq, "metric", e.key, e.step, e.ts_ms, *encode_float(e.value))
                             for e in expand_row(row, "", "")]
                else:
                    rows.append(row[:1] + row[2:])
            out[db.name] = rows
    return out


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))


def assert_same_spool(make: Callable[[], Any], tmp: Path) -> tuple[list, list]:
    """Import ``make()`` through its stream and, into another spool, one event at a time;
    assert the spools and the import reports are the same. Returns both reports."""
    streamed = make()
    assert callable(getattr(streamed, "stream", None))
    a = import_runs(streamed, tmp / "by-stream")
    b = import_runs(EventsOnly(make()), tmp / "by-event")
    rows_a, rows_b = spool_rows(tmp / "by-stream"), spool_rows(tmp / "by-event")
    assert rows_a.keys() == rows_b.keys() and rows_a
    for name in rows_a:
        assert len(rows_a[name]) == len(rows_b[name]), name
        for x, y in zip(rows_a[name], rows_b[name]):
            assert all(_same(p, q) for p, q in zip(x, y)), (name, x, y)
    assert [(r.run_id, r.points, r.counts) for r in a] == [(r.run_id, r.points, r.counts)
                                                          for r in b]
    return a, b
