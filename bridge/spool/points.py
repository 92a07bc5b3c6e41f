"""Packed point rows: many metric points of one run in one ``events`` row.

SQLite's cost is a row's (~0.5 µs to insert, ~0.9 µs with the ``(run_id, seq)`` index, and
~140 bytes on disk for a point), so an import of millions of points was bound by the spool,
not by its source. The import writer therefore stores runs of points as rows of kind
:data:`POINTS`, each holding up to :data:`BLOCK` points; the reader expands them, so every
other part of bridge sees one metric :class:`~bridge.spool.events.Event` a point, as before.

A ``points`` row of ``n`` points:

- ``seq``: the seq of its *last* point. Its points are ``seq - n + 1 … seq`` and the row
  before it ends at ``seq - n``: each point keeps its own ``(file_id, seq)`` identity, so
  cursors, dead letters and the merge order work a point at a time, as for a one-point row;
- ``value``: ``n``; ``step``: the largest step among them (NULL when none has one), so the
  highest step needs no decoding; ``ts_ms``: the first point's time; ``key``: NULL;
- ``payload``: the block, a BLOB: ``b"BP1"``, then little-endian ``u32 n``, ``u32`` length
  of the keys' JSON, a layout byte, the JSON list of distinct keys in first-seen order, for
  layout ``i`` ``n × u16`` key index (layout ``c``: none, the points' keys are that list
  repeated, as when every step logs the same keys in one order), ``n × i64`` step
  (:data:`NO_STEP`: none), ``n × i64`` ts_ms, ``n × f64`` value (NaN and ±inf as
  themselves). Layout ``r`` (rows, :func:`pack_rows`; spool schema 4) holds points logged
  as rows, each a value of every listed key, in that order, at one step and time: after the
  JSON list, ``r × i64`` step and ``r × i64`` ts_ms, one a row (``r = n / len(keys)``), then
  ``n × f64`` value, row after row. A step's metrics cost 8 bytes a point and 16 a row.

Only a file whose meta holds ``packed = 1`` (a file of the import writer) may hold such rows;
the reader asks the span-aware questions of those files alone, so a live writer's file is
read exactly as before.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import sys
from array import array
from typing import Any

from bridge.errors import SpoolError
from bridge.spool.events import Event, Kind

__all__ = ["BLOCK", "NO_STEP", "PACKED_META", "POINTS", "SPAN", "count_after", "expand_row",
           "pack", "pack_rows", "rows_a_block", "rows_as_points", "unpack"]

POINTS = "points"  # the row kind; never an Event's kind
BLOCK = 1024  # points a row at most (~26 KB); rows of more keys are packed as points
NO_STEP = -(2 ** 63)  # a point without a step
PACKED_META = "packed"  # meta key: "1" when the file may hold points rows
SPAN = f"CASE WHEN kind = '{POINTS}' THEN CAST(value AS INTEGER) ELSE 1 END"  # events a row

_COUNT_AFTER = f"SELECT coalesce(sum({SPAN}), 0) FROM events WHERE run_id = ? AND seq > ?"
_MAGIC = b"BP1"
_INDEXED, _CYCLE = b"i", b"c"  # a key index a point follows, or none: the keys repeat
_ROWS = b"r"  # rows of the same keys: a step and a time a row
_HEAD = struct.Struct("<II")
_MAX_KEYS = 65535
_SWAP = sys.byteorder != "little"
_METRIC = Kind.METRIC.value


def _le(a: array) -> bytes:
    if _SWAP:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _numbers(steps: list[Any], ts_ms: list[Any],
             values: list[Any]) -> tuple[array, array, array] | None:
    """Steps (None: :data:`NO_STEP`), times and values as the block's arrays; None when one
    cannot be held (a step or time that is not a 64-bit int, a step of :data:`NO_STEP`)."""
    if NO_STEP in steps:  # that step would read back as none
        return None
    if None in steps:
        steps = [NO_STEP if s is None else s for s in steps]
    try:
        return array("q", steps), array("q", ts_ms), array("d", values)
    except (TypeError, OverflowError):
        return None


def pack(keys: list[str], steps: list[Any], ts_ms: list[Any],
         values: list[Any]) -> bytes | None:
    """The block of these points (equal-length columns), or None when they cannot be packed
    (a step or time that is not a 64-bit int, a step of :data:`NO_STEP`, more than 65,535
    keys): the caller writes them a row each."""
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    arrays = _numbers(steps, ts_ms, values) if len(index) <= _MAX_KEYS else None
    if arrays is None:
        return None
    step_a, ts_a, value_a = arrays
    distinct = list(index)
    names = json.dumps(distinct, ensure_ascii=False).encode()
    if distinct and len(keys) % len(distinct) == 0 \
            and keys == distinct * (len(keys) // len(distinct)):
        return b"".join((_MAGIC, _HEAD.pack(len(keys), len(names)), _CYCLE, names, _le(step_a),
                         _le(ts_a), _le(value_a)))  # each step's keys in one order: no index
    return b"".join((_MAGIC, _HEAD.pack(len(keys), len(names)), _INDEXED, names,
                     _le(array("H", map(index.__getitem__, keys))), _le(step_a), _le(ts_a),
                     _le(value_a)))


def rows_a_block(width: int) -> int:
    """Rows of ``width`` keys a :func:`pack_rows` block holds (at least one; the import
    writer packs rows of at most :data:`BLOCK` keys, so a block stays within it)."""
    return max(1, BLOCK // max(1, width))


def rows_as_points(names: tuple[str, ...] | list[str], steps: list[Any],
                   times: list[Any]) -> tuple[list[str], list[Any], list[Any]]:
    """The keys, steps and times of rows' points: each row's step and time once for each of
    its keys (the values are already a point each, row after row)."""
    return (list(names) * len(steps), [s for s in steps for _ in names],
            [t for t in times for _ in names])


def pack_rows(names: tuple[str, ...] | list[str], steps: list[Any], ts_ms: list[Any],
              values: list[Any]) -> bytes | None:
    """The block of these rows (layout ``r``): ``steps`` and ``ts_ms`` one a row, ``values``
    ``len(names)`` a row, row after row; None when they cannot be packed (no names, values
    that are not ``len(names)`` a row, or a step or time :func:`pack` would refuse)."""
    if not names or len(values) != len(names) * len(steps) or len(ts_ms) != len(steps):
        return None
    arrays = _numbers(steps, ts_ms, values)
    if arrays is None:
        return None
    step_a, ts_a, value_a = arrays
    head = json.dumps(list(names), ensure_ascii=False).encode()
    return b"".join((_MAGIC, _HEAD.pack(len(values), len(head)), _ROWS, head, _le(step_a),
                     _le(ts_a), _le(value_a)))


def _column(block: bytes, at: int, code: str, count: int) -> array:
    a = array(code)
    end = at + count * a.itemsize
    a.frombytes(block[at:end])
    if len(a) != count:
        raise ValueError("short block")
    if _SWAP:
        a.byteswap()
    return a


def unpack(block: bytes) -> tuple[list[str], list[int | None], list[int], list[float]]:
    """The columns of a block: keys, steps (None: no step), times, values."""
    try:
        if block[:3] != _MAGIC:
            raise ValueError("no BP1 mark")
        n, size = _HEAD.unpack_from(block, 3)
        at = 3 + _HEAD.size
        layout = block[at:at + 1]
        if layout not in (_CYCLE, _INDEXED, _ROWS):
            raise ValueError(f"unknown layout {layout!r}")
        at += 1
        names = json.loads(block[at:at + size])
        at += size
        width = len(names)
        if layout == _ROWS and not width:
            raise ValueError("rows without keys")
        if layout != _INDEXED and n and (not width or n % width):
            raise ValueError("keys do not repeat")
        rows = n // width if layout == _ROWS else n  # steps and times stored
        if layout == _INDEXED:
            index = _column(block, at, "H", n)
            at += 2 * n
            keys = [names[i] for i in index]
        elif layout == _CYCLE:
            keys = names * (n // width) if width else []
        step_a = _column(block, at, "q", rows)
        ts_a = _column(block, at + 8 * rows, "q", rows)
        value_a = _column(block, at + 16 * rows, "d", n)
        if at + 16 * rows + 8 * n != len(block):
            raise ValueError("trailing bytes")
    except (ValueError, TypeError, IndexError, struct.error) as exc:
        raise SpoolError(f"damaged points row: {exc}") from exc
    steps = step_a.tolist()
    if NO_STEP in step_a:
        steps = [None if s == NO_STEP else s for s in steps]
    times = ts_a.tolist()
    if layout == _ROWS:  # a row's step and time, once for each of its points
        keys, steps, times = rows_as_points(names, steps, times)
    return keys, steps, times, value_a.tolist()


def expand_row(row: tuple, file_id: str, node: str, after: int = 0,
               upto: int | None = None) -> list[Event]:
    """A ``points`` row (``SELECT_EVENTS`` columns) as its metric events, those whose seq
    lies in ``(after, upto]``."""
    last, run_id, _, _, _, _, n, block = row
    keys, steps, times, values = unpack(block)
    if len(keys) != int(n):
        raise SpoolError(f"damaged points row {last}: {len(keys)} points, {int(n)} said")
    first = last - len(keys) + 1
    lo = max(0, after + 1 - first)
    hi = len(keys) if upto is None else max(lo, min(len(keys), upto + 1 - first))
    return [Event(file_id, first + i, run_id, _METRIC, keys[i], steps[i], times[i], values[i],
                  None, node) for i in range(lo, hi)]


def count_after(conn: sqlite3.Connection, run_id: str, after: int) -> int:
    """Events of ``run_id`` after seq ``after`` in a packed file (a row may straddle it)."""
    total = conn.execute(_COUNT_AFTER, (run_id, after)).fetchone()[0]
    first = conn.execute("SELECT seq, kind, value FROM events WHERE run_id = ? AND seq > ? "
                         "ORDER BY seq LIMIT 1", (run_id, after)).fetchone()
    if first is not None and first[1] == POINTS:
        start = first[0] - int(first[2]) + 1
        if start <= after:
            total -= after - start + 1
    return int(total)
