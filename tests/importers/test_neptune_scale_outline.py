"""The neptune-scale importer's description pass parses an outline of each operation (its
maps left undecoded): it must say what the client's own message says, and what it no
longer looks at (a series of a type bridge does not import, a damaged operation) must still
be warned about, once, by the pass that reads the values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("neptune_api")

from neptune_api.proto.neptune_pb.ingest.v1 import common_pb2 as pb  # noqa: E402

from bridge.adapters.neptune import scale_names as S  # noqa: E402
from bridge.adapters.neptune.scale_offline import (  # noqa: E402
    AppendSpan,
    _assigns_and_tags,
    _describe_update,
    _step,
    ms_of,
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
@given(operations(), st.integers(0, 2**41))
def test_the_outline_says_what_the_full_message_says(op: pb.UpdateRunSnapshot,
                                                     queued: int) -> None:
    full = pb.UpdateRunSnapshot.FromString(op.SerializeToString())
    ts = ms_of(full.timestamp) if full.HasField("timestamp") else queued
    expected = list(_assigns_and_tags(full, ts))
    if full.append:
        expected.append(AppendSpan(_step(full.step) if full.HasField("step") else None, ts,
                                   len(full.append),
                                   full.HasField("preview") and full.preview.is_preview))
    got = list(_describe_update(op.SerializeToString(), queued))
    assert repr(got) == repr(expected)  # repr: a NaN value equals itself


def test_a_damaged_operation_is_said_as_the_client_message_fails() -> None:
    blob = pb.UpdateRunSnapshot(request_id="x").SerializeToString()[:-1]  # cut short
    with pytest.raises(Exception) as outline:
        list(_describe_update(blob, 0))
    with pytest.raises(Exception) as client:
        pb.UpdateRunSnapshot.FromString(blob)
    assert str(outline.value) == str(client.value)
    assert "UpdateRunSnapshotOutline" not in str(outline.value)
