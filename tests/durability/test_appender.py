"""The journal's C appender writes the records its Python twin writes, byte for byte.

Every record is ``<u32 length><u32 crc32>`` + ``marshal.dumps(item, 2)``: the reader
(``marshal.loads``) and a replay after a kill know nothing of which appender wrote it. So
the C encoder is held to marshal itself, on generated calls, and to the Python twin inside
a running journal (rotations, threads, a close).
"""

from __future__ import annotations

import marshal
import mmap
import platform
import re
import sqlite3
import struct
import sys
import time
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bridge
from bridge import writer_pool
from bridge.spool import appender, segment
from bridge.spool.writer import JOURNAL_AHEAD_SEGMENTS

_appender = pytest.importorskip("bridge.spool._appender",
                                reason="the C appender is not built on this machine")

HEAD = struct.Struct("<II")


def _record(item: tuple) -> bytes:
    buf = marshal.dumps(item, 2)
    return HEAD.pack(len(buf), zlib.crc32(buf)) + buf


def _fresh(size: int = 1 << 16) -> tuple[mmap.mmap, object]:
    mm = mmap.mmap(-1, size)
    app = _appender.Appender()
    app.attach(mm, 16, 0)
    return mm, app


def _written(mm: mmap.mmap, app: object) -> bytes:
    return mm[16:app.offset]


ints = st.one_of(st.integers(-2**31 - 3, 2**31 + 3), st.integers(-2**63, 2**63 - 1),
                 st.sampled_from([0, -1, 2**15, 2**30, 2**45, -2**45, 2**62 - 1]))
texts = st.text(max_size=40)  # lone surrogates included: the C side leaves them to marshal
floats = st.floats(allow_nan=True, allow_infinity=True)
items = st.lists(st.tuples(texts, st.one_of(floats, ints, st.none(), st.booleans())),
                 max_size=6)


@settings(max_examples=400, deadline=None)
@given(run_id=texts, step=st.one_of(st.none(), ints), ts=ints, row=items)
def test_put_metrics_writes_marshal_or_nothing(run_id, step, ts, row):
    mm, app = _fresh()
    item = (0, run_id, step, ts, row)
    if app.put_metrics(run_id, step, ts, row):
        assert _written(mm, app) == _record(item)
    else:  # only a value marshal writes otherwise (lone surrogates, a bool) is left to it
        assert app.offset == 16 and mm[16:24] == bytes(8)
        assert (any(_has_surrogate(v) for v in (run_id, *[k for k, _ in row]))
                or any(type(v) is bool for _, v in row))
    app.detach()


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@settings(max_examples=400, deadline=None)
@given(step=st.integers(0, 2**62 - 1),
       data=st.dictionaries(texts, st.one_of(floats, ints, st.none(), st.booleans()),
                            max_size=6),
       known=st.sets(texts, max_size=6))
def test_log_journals_a_known_float_row_and_leaves_the_rest(step, data, known):
    mm, app = _fresh()
    ok = set(known)
    fast = all(type(v) is float and k in ok and not _has_surrogate(k) for k, v in data.items())
    before = time.time_ns() // 1_000_000
    assert app.log("r" * 32, step, data, ok) is fast
    after = time.time_ns() // 1_000_000
    if fast and data:
        ts = marshal.loads(_written(mm, app)[8:])[3]  # the call's time, read by the C side
        assert before <= ts <= after
        assert _written(mm, app) == _record((0, "r" * 32, step, ts, list(data.items())))
    else:  # nothing written: run.log validates it the long way
        assert app.offset == 16 and mm[16:24] == bytes(8)
    app.detach()


def test_a_record_that_does_not_fit_is_refused_whole():
    mm, app = _fresh(16 + 60)
    row = [("loss", 0.5), ("acc", 0.25)]
    assert not app.put_metrics("r" * 32, 1, 2, row)  # ~90 bytes: no room
    assert not app.log("r" * 32, 1, dict(row), {"loss", "acc"})
    with pytest.raises(ValueError):
        app.write(b"x" * 61)
    assert app.offset == 16 and mm[16:] == bytes(60)
    app.write(b"x" * 60)  # what fits goes in
    assert app.offset == 76


def test_a_detached_appender_refuses_and_lets_the_map_close():
    mm, app = _fresh()
    app.detach()
    assert app.segment == -1
    with pytest.raises(ValueError):
        app.write(b"x")
    assert not app.log("r", 0, {"k": 1.0}, {"k"})
    assert not app.put_metrics("r", 0, 0, [])
    mm.close()  # no buffer is held any more


def test_attach_refuses_an_offset_outside_the_map():
    mm = mmap.mmap(-1, 64)
    app = _appender.Appender()
    with pytest.raises(ValueError):
        app.attach(mm, 65, 0)
    with pytest.raises(BufferError):
        app.attach(b"read-only", 0, 0)


def test_crc32_is_zlibs():
    for data in (b"", b"a", bytes(range(256)) * 3):
        assert _appender.crc32(data) == zlib.crc32(data)


@pytest.fixture(params=["c", "python"])
def which(request, monkeypatch):
    """Each journal behaviour once with each appender."""
    if request.param == "python":
        monkeypatch.setattr(appender, "_C", None)
    return request.param


def test_both_appenders_journal_the_same_segments(tmp_path, monkeypatch):
    calls = [("r" * 32, i, 1_700_000_000_000 + i, [("loss", i * 0.5), ("acc", 1 / (i + 1))])
             for i in range(3000)]
    files = {}
    for kind in ("c", "python"):
        if kind == "python":
            monkeypatch.setattr(appender, "_C", None)
        j = segment.Journal(tmp_path / f"{kind}.db", 4096)
        put, put_metrics = j.appender()
        for i, call in enumerate(calls):
            if i % 7 == 3:
                put((1, call[0], "tag", "k", None, call[2], None, str(i)))
            put_metrics(*call)
        j.close(remove=False)
        files[kind] = [p.read_bytes() for _, p in segment.segments_of(tmp_path / f"{kind}.db")]
    assert len(files["c"]) > 10  # many rotations
    assert files["c"] == files["python"]


def test_run_log_journals_through_the_c_appender_and_falls_back(tmp_path):
    run = bridge.init(project="fast", dir=tmp_path, sync="offline", durability="journal",
                      system_metrics=False)
    assert run._fast_log is not None
    run.log({"loss": 1.0}, step=0)  # a new key: the long way, then known
    run.log({"loss": 2.0}, step=1)  # the C call
    run.log({"loss": 3}, step=2)  # an int: the long way (as a float)
    run.log({"loss": float("nan"), "acc": 0.5}, step=3)  # a new key again
    run.log({"loss": 4.0, "acc": 0.75}, step=4)
    run.log({}, step=5)
    path = run._writer.path
    run.finish()
    assert run._fast_log is None
    writer_pool.close_all()
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT key, step, value, payload FROM events WHERE kind='metric' "
                        "ORDER BY seq").fetchall()
    conn.close()
    assert rows == [("loss", 0, 1.0, None), ("loss", 1, 2.0, None), ("loss", 2, 3.0, None),
                    ("loss", 3, None, "NaN"), ("acc", 3, 0.5, None), ("loss", 4, 4.0, None),
                    ("acc", 4, 0.75, None)]


def test_a_caller_far_ahead_commits_itself_and_the_journal_stays_bounded(tmp_path,
                                                                         monkeypatch, which):
    """The writer thread never commits on its own here (an hour's flush interval): once the
    caller is JOURNAL_AHEAD_SEGMENTS ahead, it commits itself at a segment's end."""
    monkeypatch.setattr(segment, "SEGMENT_BYTES", 1 << 14)
    run = bridge.init(project="ahead", dir=tmp_path, sync="offline", durability="journal",
                      flush_interval=3600, system_metrics=False)
    journal = run._writer._journal
    most = 0
    n = 20_000  # ~90 bytes a call: ~110 segments of 16 KB
    for i in range(n):
        run.log({"loss": i * 0.5}, step=i)
        if i % 50 == 0:
            most = max(most, journal.backlog())
    assert most <= JOURNAL_AHEAD_SEGMENTS + 1
    segs = list((tmp_path / "spool").glob("*.seg"))
    assert len(segs) <= JOURNAL_AHEAD_SEGMENTS + 3  # the backlog, the current one, a spare
    conn = sqlite3.connect(run._writer.path)
    committed = conn.execute("SELECT count(*) FROM events WHERE kind='metric'").fetchone()[0]
    conn.close()
    assert committed >= n - (JOURNAL_AHEAD_SEGMENTS + 1) * (1 << 14) // 60
    assert run.flush(60)
    run.finish()
    writer_pool.close_all()


@pytest.mark.parametrize("kind", ["c", "python"])
def test_prefault_writes_nothing(tmp_path, monkeypatch, kind):
    """A segment may be prefaulted while records go into it: its bytes stay as they are."""
    if kind == "python":
        monkeypatch.setattr(appender, "_prefault", None)
    mm = segment._create(tmp_path / "s.seg", 1 << 20)
    mm[100:104] = b"abcd"
    before = mm[:]
    release = tuple(int(x) for x in re.findall(r"\d+", platform.release())[:2])
    linux_5_14 = sys.platform.startswith("linux") and release >= (5, 14)
    assert appender.prefault(mm) is linux_5_14  # MADV_POPULATE_WRITE came with Linux 5.14
    assert mm[:] == before
    mm.close()
