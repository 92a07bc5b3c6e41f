"""The trackio importer's per-row decoding, fast paths against the plain reading they
replace: a metrics row is what ``json.loads`` reads; a row of numbers read for the points'
fast path (orjson, trackio's own JSON library, where installed) gives the same floats under
the same keys in the same order; a row's timestamp is the same millisecond however written."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.adapters.trackio import importer as trackio_importer
from bridge.adapters.trackio import names as N

_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
_VALUE = st.recursive(_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)
_ROW = st.dictionaries(st.text(max_size=12), _VALUE, max_size=6)


def _canonical(value: Any) -> str:
    """JSON text that tells NaN, ints and floats apart (NaN != NaN otherwise)."""
    return json.dumps(value, sort_keys=True, allow_nan=True,
                      default=str) + repr(_types(value))


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


@settings(max_examples=300, deadline=None)
@given(row=_ROW, as_bytes=st.booleans(), spaced=st.booleans())
def test_a_metrics_row_reads_as_json_reads_it(row: dict, as_bytes: bool, spaced: bool) -> None:
    text = json.dumps(row, allow_nan=True, ensure_ascii=False,
                      separators=(", ", ": ") if spaced else (",", ":"))
    stored: Any = text.encode() if as_bytes else text
    got = trackio_importer._row_json(stored)
    assert _canonical(got) == _canonical(json.loads(text))
    assert list(got) == list(json.loads(text))  # the key order the points keep


_NUMBER = st.one_of(st.integers(-2**80, 2**80), st.floats(allow_nan=False, allow_infinity=False),
                    st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=300, deadline=None)
@given(row=st.dictionaries(st.text(max_size=12), _NUMBER, max_size=6), as_bytes=st.booleans())
def test_a_row_of_numbers_gives_the_floats_json_gives(row: dict, as_bytes: bool) -> None:
    text = json.dumps(row, allow_nan=True, ensure_ascii=False)
    got = trackio_importer._numbers_row(text.encode() if as_bytes else text)
    want = json.loads(text)
    if got is None:  # refused (NaN or Infinity tokens): the row goes the general way
        assert any(isinstance(v, float) and not math.isfinite(v) for v in want.values())
        return
    assert list(got) == list(want)
    assert [repr(float(v)) for v in got.values()] == [repr(float(v)) for v in want.values()]


def test_a_row_json_alone_reads_is_refused_or_read_alike() -> None:
    for text in ('{"a": NaN, "b": Infinity}', '{"big": 123456789012345678901234567890}',
                 '{"a": 1, "a": 2}', '{"a": 1e400}'):
        got = trackio_importer._numbers_row(text.encode())
        want = json.loads(text)
        assert got is None or [float(v) for v in got.values()] == \
            [float(v) for v in want.values()], text
        assert _canonical(trackio_importer._row_json(text.encode())) == _canonical(want)
    assert trackio_importer._row_json(b"\xff{") is None and trackio_importer._row_json(None) is None


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _reference_ms(dt: datetime) -> int:
    aware = dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)
    return (aware - _EPOCH) // timedelta(milliseconds=1)


@settings(max_examples=300, deadline=None)
@given(dt=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                       timezones=st.one_of(st.none(), st.just(timezone.utc),
                                           st.builds(lambda m: timezone(timedelta(minutes=m)),
                                                     st.integers(-720, 720)))),
       zulu=st.booleans())
def test_a_timestamp_is_the_same_millisecond_however_written(dt: datetime, zulu: bool) -> None:
    text = dt.isoformat()
    if zulu and dt.tzinfo is timezone.utc:
        text = text.replace("+00:00", "Z")
    assert N.ms_from_iso(text) == _reference_ms(dt)


def test_an_unreadable_timestamp_is_none() -> None:
    for bad in (None, "", "yesterday", 17, b"2024-01-01T00:00:00", "2024-13-01T00:00:00Z"):
        assert N.ms_from_iso(bad) is None
    assert not math.isnan(N.ms_from_iso("2024-01-01T00:00:00.999999Z") or math.nan)
    assert N.ms_from_iso("2024-01-01T00:00:00.999999Z") % 1000 == 999  # floor, not rounded


def test_without_orjson_rows_are_read_with_json(monkeypatch) -> None:
    monkeypatch.setattr(trackio_importer, "_orjson_loads", None)
    row = trackio_importer._numbers_row(b'{"loss": 0.5, "big": 123456789012345678901234567890, '
                                        b'"bad": NaN}')
    assert list(row) == ["loss", "big", "bad"] and row["big"] == 123456789012345678901234567890
    assert math.isnan(row["bad"])


_STAMP = st.one_of(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                 timezones=st.just(timezone.utc)).map(datetime.isoformat),
    st.text(alphabet="0123456789-T:.+Z ²x", min_size=19, max_size=34),
    st.sampled_from(["2026-02-31T10:00:00.123456+00:00", "2026-11-30T12:01:61.000000+00:00",
                     "2026-11-30T12:01:31.12345x+00:00", "2026-11-30T12:01:31.1_3456+00:00",
                     "2026-11-30T12:01:31.²23456+00:00", "2026-11-30T12:01:31.123456+01:00"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_STAMP, max_size=20), st.data())
def test_timestamps_read_in_order_are_the_milliseconds_each_gives_alone(stamps: list,
                                                                         data: Any) -> None:
    """N.IsoMs reads a second once for the rows within it: each timestamp, and the same one
    with other digits after its second (the next rows), as ms_from_iso reads it alone."""
    iso_ms = N.IsoMs()
    for text in stamps:
        tail = data.draw(st.text(alphabet="0123456789x", min_size=6, max_size=6))
        for value in (text, text[:20] + tail + text[26:]):
            assert iso_ms(value) == N.ms_from_iso(value), value
