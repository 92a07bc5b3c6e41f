"""The neptune-scale importer's description pass parses an outline of each operation (its
maps left undecoded): it must say what the client's own message says, and what it no
longer looks at (a series of a type bridge does not import, a damaged operation) must still
be warned about, once, by the pass that reads the values."""

from __future__ import annotations

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
from bridge.adapters.neptune.scale_offline import (  # noqa: E402
    _APPEND_VALUES,
    AppendFacts,
    _assigns_and_tags,
    _describe_update,
    _outline_class,
    _step,
    _value,
    ms_of,
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
        for step, ts, names, values in read_appends(path, chunk=4):
            items: Any = values if names is None else [
                (key, "float", value) for key, value in zip(names, values)]
            got.append((step, ts, items))
    want = [r for r in (_reference_appends(pb.UpdateRunSnapshot.FromString(blob), queued)
                        for _, queued, _, blob in rows) if r is not None]
    assert repr(got) == repr(want)  # repr: a NaN value equals itself
