"""The neptune-scale importer's description pass parses an outline of each operation (its
maps left undecoded): it must say what the client's own message says, and what it no
longer looks at (a series of a type bridge does not import, a damaged operation) must still
be warned about, once, by the pass that reads the values."""

from __future__ import annotations

import math
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("neptune_api")

from neptune_api.proto.neptune_pb.ingest.v1 import common_pb2 as pb  # noqa: E402

from bridge.adapters.neptune import scale_names as S  # noqa: E402
from bridge.adapters.neptune import names as N  # noqa: E402
from bridge.adapters.neptune.scale_columns import read_chunk  # noqa: E402
from bridge.adapters.neptune.scale_offline import (  # noqa: E402
    _APPEND_VALUES,
    AppendFacts,
    _assigns_and_tags,
    _describe_update,
    _outline_class,
    _step,
    _value,
    ms_of,
    one_at_a_time,
    read_appends,
)

keys = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@st.composite
def values(draw: st.DrawFn) -> pb.Value:
    kind = draw(st.sampled_from(["float64", "int64", "string", "bool", "timestamp",
                                 "string_set", "histogram", "empty"]))
    v = pb.Value()
    if kind == "float64":
        v.float64 = draw(st.floats(allow_nan=True))
    elif kind == "int64":
        v.int64 = draw(st.integers(-2**63, 2**63 - 1))
    elif kind == "string":
        v.string = draw(keys)
    elif kind == "bool":
        v.bool = draw(st.booleans())
    elif kind == "timestamp":
        v.timestamp.seconds = draw(st.integers(0, 2**33))
    elif kind == "string_set":
        v.string_set.values.extend(draw(st.lists(keys, max_size=3)))
    elif kind == "histogram":
        v.histogram.bin_edges.extend([0.0, 1.0])
        v.histogram.counts.values.extend([draw(st.integers(0, 9))])
    return v


@st.composite
def operations(draw: st.DrawFn) -> pb.UpdateRunSnapshot:
    op = pb.UpdateRunSnapshot()
    if draw(st.booleans()):
        op.step.whole = draw(st.integers(0, 2**40))
        op.step.micro = draw(st.sampled_from([0, 0, 1, 250_000, 999_999]))
    if draw(st.booleans()):
        op.timestamp.seconds = draw(st.integers(0, 2**33))
        op.timestamp.nanos = draw(st.integers(0, 999_999_999))
    if draw(st.booleans()):
        op.preview.is_preview = draw(st.booleans())
        op.preview.completion_ratio = draw(st.floats(0, 1))
    for key, value in draw(st.dictionaries(keys, values(), max_size=4)).items():
        op.assign[key].CopyFrom(value)
    for key, value in draw(st.dictionaries(keys, values(), max_size=6)).items():
        op.append[key].CopyFrom(value)
    for key in draw(st.lists(st.sampled_from([S.SYS_TAGS, S.SYS_GROUP_TAGS]), max_size=2)):
        for tag in draw(st.lists(keys, max_size=3)):
            op.modify_sets[key].string.values[tag] = draw(st.sampled_from([0, 1, 2]))
    if draw(st.booleans()):
        op.request_id = draw(keys)  # a field the outline does not name
    return op


@settings(max_examples=300, deadline=None)
@given(st.lists(operations(), max_size=4), st.integers(0, 2**41))
def test_the_outline_says_what_the_full_message_says(ops: list, queued: int) -> None:
    """Operations described one after another: each one's assigns and tag changes as the
    full message gives them, and their appends' places, span and previews added up."""
    want, got = AppendFacts(), AppendFacts()
    for op in ops:
        full = pb.UpdateRunSnapshot.FromString(op.SerializeToString())
        ts = ms_of(full.timestamp) if full.HasField("timestamp") else queued
        expected = list(_assigns_and_tags(full, ts))
        if full.append:
            step = _step(full.step) if full.HasField("step") else None
            if step is not None and step.__class__ is not int:
                want.places = max(want.places, N.decimal_places(step))
            if full.HasField("preview") and full.preview.is_preview:
                want.previews += len(full.append)
            want.first_ms = min(want.first_ms, ts) if want.first_ms else ts
            want.last_ms = max(want.last_ms, ts)
        found = _describe_update(op.SerializeToString(), queued, got,
                                 _outline_class().FromString)
        assert repr(found) == repr(expected)  # repr: a NaN value equals itself
    assert got == want


def test_a_damaged_operation_is_said_as_the_client_message_fails() -> None:
    blob = pb.UpdateRunSnapshot(request_id="x").SerializeToString()[:-1]  # cut short
    with pytest.raises(Exception) as outline:
        _describe_update(blob, 0, AppendFacts(), _outline_class().FromString)
    with pytest.raises(Exception) as client:
        pb.UpdateRunSnapshot.FromString(blob)
    assert str(outline.value) == str(client.value)
    assert "UpdateRunSnapshotOutline" not in str(outline.value)


def _reference_appends(op: pb.UpdateRunSnapshot, queued: int) -> tuple | None:
    """What read_appends gives of one operation, read a value at a time from the client's
    own message: None for a preview or an operation without appends."""
    if not op.append or (op.HasField("preview") and op.preview.is_preview):
        return None
    items = []
    for key, value in op.append.items():
        which = value.WhichOneof("value")
        if which in ("float64", "int64"):
            items.append((key, "float", float(getattr(value, which))))
        elif which in _APPEND_VALUES and _value(value) is not None:
            items.append((key, *_value(value)))
    return (_step(op.step) if op.HasField("step") else None,
            ms_of(op.timestamp) if op.HasField("timestamp") else queued, items)


@st.composite
def float_operations(draw: st.DrawFn) -> pb.UpdateRunSnapshot:
    """Operations of float64 values, the bulk of a run (0.0, NaN and infinities among them),
    or the general kind."""
    op = draw(operations())
    if draw(st.booleans()):
        op.ClearField("append")
        for key, x in draw(st.dictionaries(keys, st.floats(), min_size=1, max_size=5)).items():
            op.append[key].float64 = x
    return op


@settings(max_examples=200, deadline=None)
@given(st.lists(float_operations(), max_size=6))
def test_appends_read_as_the_client_message_reads_them(ops: list) -> None:
    """read_appends reads an operation of float64 values only a row at once (its values'
    float64 all together): what the client's message holds, value for value, whatever the
    operation holds, 0.0 and values of other kinds among them."""
    rows = [(seq, 1_700_000_000_000 + seq, S.OP_UPDATE_SNAPSHOT, op.SerializeToString())
            for seq, op in enumerate(ops, 1)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / S.OPS_FILE
        with sqlite3.connect(path) as conn:
            conn.execute(f"CREATE TABLE {S.T_OPERATIONS} ({S.COL_SEQ} INTEGER PRIMARY KEY, "
                         f"{S.COL_OP_TS} INTEGER, {S.COL_OP_TYPE} INTEGER, "
                         f"{S.COL_OPERATION} BLOB)")
            conn.executemany(f"INSERT INTO {S.T_OPERATIONS} VALUES (?, ?, ?, ?)", rows)
        conn.close()
        got = []
        for step, ts, names, values in one_at_a_time(read_appends(path, chunk=4)):
            items: Any = values if names is None else [
                (key, "float", value) for key, value in zip(names, values)]
            got.append((step, ts, sorted(items)))  # a map's order is not kept by a parse
    want = [(s, ts, sorted(items)) for s, ts, items in filter(None, (
        _reference_appends(pb.UpdateRunSnapshot.FromString(blob), queued)
        for _, queued, _, blob in rows))]
    assert repr(got) == repr(want)  # repr: a NaN value equals itself


# --- a chunk read as columns (scale_columns.read_chunk) ---------------------------------

series = st.lists(keys.filter(bool), min_size=1, max_size=5, unique=True)
floats = st.floats() | st.sampled_from([0.0, -0.0, math.nan, math.inf])
# What sends a chunk to be read one operation at a time, and what may not when every
# operation of the chunk is so (one operation with a key more is a chunk of one shape).
NEVER_COLUMNS = ["preview", "assign", "tag", "no step", "no time", "an int", "a string",
                 "a step field twice", "an explicit 0", "cut short", "a value twice"]
ODD_ONES = NEVER_COLUMNS + ["a key more", "a key less", "another order"]


@st.composite
def chunks(draw: st.DrawFn, odds: st.SearchStrategy = st.none() | st.sampled_from(ODD_ONES)
           ) -> tuple[list[bytes], str | None]:
    """The blobs of a chunk of update operations as the client writes them, each step the
    same float series; at times one operation made odd (which one, and how, returned)."""
    names = draw(series)
    blobs = []
    for _ in range(draw(st.integers(1, 12))):
        op = pb.UpdateRunSnapshot()
        op.step.whole = draw(st.sampled_from([0, 1, 2**53 + 1, 2**64 - 1]) | st.integers(0, 9))
        op.step.micro = draw(st.sampled_from([0, 0, 0, 5, 250_000, 999_999]))
        op.timestamp.seconds = draw(st.sampled_from([0, 1]) | st.integers(-2**34, 2**34))
        op.timestamp.nanos = draw(st.sampled_from([0, 0, 1]) | st.integers(0, 999_999_999))
        if draw(st.booleans()):
            op.request_id = draw(keys)  # a field the columns do not name
        for name in names:
            op.append[name].float64 = draw(floats)
        blobs.append(op)
    odd = draw(odds)
    at = draw(st.integers(0, len(blobs) - 1))
    op = blobs[at]
    tail = b""
    if odd == "preview":
        op.preview.is_preview = draw(st.booleans())
    elif odd == "assign":
        op.assign["config/x"].float64 = 1.0
    elif odd == "tag":
        op.modify_sets[S.SYS_TAGS].string.values["t"] = S.SET_ADD
    elif odd == "no step":
        op.ClearField("step")
    elif odd == "no time":
        op.ClearField("timestamp")
    elif odd == "an int":
        op.append[names[0]].int64 = 7
    elif odd == "a string":
        op.append[names[-1]].string = "x"
    elif odd == "a key more":
        op.append["zz-more"].float64 = 1.0
    elif odd == "a key less" and len(names) > 1:
        del op.append[names[0]]
    elif odd == "another order" and len(names) > 1:
        op.ClearField("append")
        for name in reversed(names):
            op.append[name].float64 = 2.0
    elif odd == "a step field twice":
        tail = pb.UpdateRunSnapshot(step=pb.Step(micro=5)).SerializeToString()
    elif odd == "an explicit 0":
        tail = b"\x0a\x02\x08\x00"  # step {whole: 0}, written out
    elif odd == "a value twice":
        entry = pb.UpdateRunSnapshot()
        entry.append[names[0]].float64 = 3.0
        tail = entry.SerializeToString()
    raw = [o.SerializeToString() for o in blobs]
    raw[at] += tail
    if odd == "cut short":
        raw[at] = raw[at][:-1]
    return raw, odd


def _decoded(blobs: list[bytes]) -> tuple[list, AppendFacts] | None:
    """Each operation read a value at a time from the client's own message (items sorted:
    a map's order is not kept by a parse), and the facts its outline adds up; None when one
    does not parse."""
    facts = AppendFacts()
    try:
        ops = [pb.UpdateRunSnapshot.FromString(b) for b in blobs]
        for b in blobs:
            _describe_update(b, 0, facts, _outline_class().FromString)
    except Exception:  # noqa: BLE001 - a damaged operation
        return None
    rows = [_reference_appends(op, 0) for op in ops]
    return [(s, ts, sorted(items)) for s, ts, items in filter(None, rows)], facts


@settings(max_examples=400, deadline=None)
@given(chunks())
def test_a_chunk_read_as_columns_says_what_each_operation_says(chunk: tuple) -> None:
    """read_chunk reads a chunk as the client's message reads each operation, value for
    value, step for step (0, decimal, past 2**53), time for time (a 0 of seconds or nanos,
    before 1970), and adds to a description what each operation's outline adds; a chunk
    that is not of its shape (an odd operation of any kind) is left to be read one at a
    time, and one the client writes is read as columns."""
    blobs, odd = chunk
    rows = read_chunk(blobs)
    reference = _decoded(blobs)
    if odd is None:
        assert rows is not None
    if rows is None:
        return
    assert reference is not None, odd
    want, want_facts = reference
    got = [(at, ts, sorted((k, "float", v) for k, v in zip(names, values)))
           for at, ts, names, values in one_at_a_time([rows])]
    assert repr(got) == repr(want), odd  # repr: a NaN value equals itself, -0.0 is not 0.0
    facts = AppendFacts()
    facts.add(rows)
    assert facts == want_facts, odd
    described = read_chunk(blobs, values=False)
    assert described is not None and described.values == []
    assert (described.wholes, described.micros, described.ts_ms, described.names) == (
        rows.wholes, rows.micros, rows.ts_ms, rows.names)


@settings(max_examples=200, deadline=None)
@given(chunks(odds=st.sampled_from(NEVER_COLUMNS)))
def test_what_a_chunk_cannot_hold_is_read_one_at_a_time(chunk: tuple) -> None:
    """A preview, an assign, a tag change, a missing step or time, a value not a float, a
    field twice, an explicit 0 or a cut blob anywhere in a chunk sends it one operation at
    a time, where each is read (or said) as before."""
    blobs, odd = chunk
    assert read_chunk(blobs) is None, odd
    assert read_chunk(blobs, values=False) is None or odd in ("an int", "a string"), odd


def test_a_field_twice_inside_a_step_or_a_time_is_not_read_as_columns() -> None:
    """A step whose ``whole`` is written twice beside a step of 0 (no ``whole``) has as many
    wholes as steps, but not one each; the client reads the last of the two. Only the check
    that each operation parses back to its own bytes sees it: the chunk is read one at a
    time, as the client reads it."""
    def op(step_body: bytes, time_body: bytes) -> bytes:
        rest = pb.UpdateRunSnapshot()
        rest.append["loss"].float64 = 0.5
        return (b"\x0a" + bytes([len(step_body)]) + step_body + b"\x12"
                + bytes([len(time_body)]) + time_body + rest.SerializeToString())

    second = b"\x08\x05"
    twice_whole = [op(b"\x08\x01\x08\x02", second), op(b"", second)]
    twice_seconds = [op(b"\x08\x01", b"\x08\x05\x08\x06"), op(b"\x08\x01", b"")]
    for blobs in (twice_whole, twice_seconds):
        client = [pb.UpdateRunSnapshot.FromString(b) for b in blobs]
        assert [o.step.whole for o in client] in ([2, 0], [1, 1])
        assert read_chunk(blobs) is None
    assert read_chunk([op(b"\x08\x02", second), op(b"", second)]) is not None


def test_after_a_chunk_not_read_as_columns_the_next_ones_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose chunks cannot be read as columns (a string every step, here the first 8
    chunks) is tried at chunks 0, 2, 5 and 10, not at each; once a try succeeds every chunk
    is tried again. What is read is the same either way: every operation, in order."""
    from bridge.adapters.neptune import scale_offline

    blobs = []
    for i in range(64):
        op = pb.UpdateRunSnapshot()
        op.step.whole, op.timestamp.seconds = i, 1_700_000_000 + i
        op.append["loss"].float64 = i + 0.5
        if i < 32:
            op.append["note"].string = "x"
        blobs.append(op.SerializeToString())
    path = tmp_path / S.OPS_FILE
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE {S.T_OPERATIONS} ({S.COL_SEQ} INTEGER PRIMARY KEY, "
                     f"{S.COL_OP_TS} INTEGER, {S.COL_OP_TYPE} INTEGER, {S.COL_OPERATION} BLOB)")
        conn.executemany(f"INSERT INTO {S.T_OPERATIONS} VALUES (?, ?, ?, ?)",
                         [(i, 0, S.OP_UPDATE_SNAPSHOT, b) for i, b in enumerate(blobs, 1)])
    conn.close()
    tried: list[int] = []

    def recorded(chunk: list[bytes], values: bool = True) -> Any:
        tried.append(pb.UpdateRunSnapshot.FromString(chunk[0]).step.whole // 4)
        return read_chunk(chunk, values)

    monkeypatch.setattr(scale_offline, "read_chunk", recorded)
    got = [(at, sorted(zip(names, values)) if names else sorted(values))
           for at, _, names, values in one_at_a_time(read_appends(path, chunk=4))]
    assert tried == [0, 2, 5, 10, 11, 12, 13, 14, 15]
    assert [at for at, _ in got] == list(range(64))
    assert got[40] == (40, [("loss", 40.5)])
    assert got[3] == (3, [("loss", "float", 3.5), ("note", "string", "x")])


# Operations no serializer writes, each read differently by columns of a merged parse and by
# the client's message, as a review found them (hex of each chunk's blobs): a single field
# packed (a step's whole; a float64, which the client does not read as a value), a map
# entry with an unknown field (the client drops the entry), an entry's key written twice
# beside an entry without one, an explicit 0 as a 5-byte varint beside a 5-byte nanos (the
# lengths cancel out), a packed whole the step's parse cannot read, a value that is None.
NOT_AS_A_SERIALIZER_WRITES = [
    ["0a030a01051202086442110a046c6f73731209090000000000000440"],
    ["0a0208071202086442120a046c6f7373120a0a080000000000000440"],
    ["0a0208071202086442130a046c6f7373120909000000000000f03f1801"],
    ["0a0208071202086442100a000a0162120909000000000000f03f420b1209090000000000000040"],
    ["0a0508808080001208086410ffffffff0f42110a046c6f7373120909000000000000f03f",
     "0a001202086442110a046c6f73731209090000000000000040",
     "0a0208031202086442110a046c6f73731209090000000000000840"],
    ["0a030a01801202086442110a046c6f7373120909000000000000f03f"],
]


@pytest.mark.parametrize("chunk", NOT_AS_A_SERIALIZER_WRITES)
def test_a_chunk_not_as_a_serializer_writes_it_is_read_one_at_a_time(chunk: list) -> None:
    """Each chunk parses, as the client's messages and as columns, yet the two disagree
    (values, steps, or an entry the client drops); each is read one at a time, where the
    client's own reading applies (a description, which reads no value, may read the packed
    float's chunk as columns: what it adds up is then what each operation adds). A cell that
    is not bytes is read one at a time too, without an error."""
    blobs = [bytes.fromhex(h) for h in chunk]
    for b in blobs:
        pb.UpdateRunSnapshot.FromString(b)  # each parses as the client's message
    assert read_chunk(blobs) is None
    described = read_chunk(blobs, values=False)
    if described is not None:  # a description does not look into a value (a packed float)
        got, want = AppendFacts(), AppendFacts()
        got.add(described)
        for b in blobs:
            _describe_update(b, 0, want, _outline_class().FromString)
        assert got == want
    assert read_chunk([None, *blobs]) is None  # type: ignore[list-item]
