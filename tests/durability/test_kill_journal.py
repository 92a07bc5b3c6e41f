"""SIGKILL a process logging with ``durability="journal"``: no call that returned is lost.

The child logs in a tight loop, never flushing, and after each ``log()`` returns writes the
step into a memory-mapped progress file (a page-cache write, like the journal's own, so
it survives the kill). The parent SIGKILLs it (or its process group) once the progress
reaches a random point, then opens the spool: recovery must hold every step up to the
progress, each exactly once. Kill points come from a seed printed on failure; set
BRIDGE_TEST_KILLS for more rounds and BRIDGE_TEST_SEED to replay one.
"""

from __future__ import annotations

import mmap
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

import bridge
from bridge import writer_pool
from bridge.errors import BridgeWarning
from bridge.spool import appender, liveness, segment
from bridge.spool.reader import list_runs, spool_files

CHILD = textwrap.dedent("""
    import mmap, os, struct, sys, bridge
    spool, progress = sys.argv[1], sys.argv[2]
    fd = os.open(progress, os.O_RDWR)
    mark = mmap.mmap(fd, 8)
    pack = struct.Struct("<q").pack_into
    run = bridge.init(project="kill", dir=spool, sync="offline", durability="journal",
                      system_metrics=False)
    print("RUN", run.id, flush=True)
    log = run.log
    step = 0
    while True:
        log({"loss": step * 0.5, "acc": 1.0 / (step + 1)}, step=step)
        pack(mark, 0, step + 1)  # steps 0..step have returned
        step += 1
""")

# Logs N steps, flushes part of them, then leaves a record cut short in the journal (the
# bytes a kill in the middle of the copy would leave) and kills itself.
TORN_CHILD = textwrap.dedent("""
    import os, signal, struct, sys, bridge
    from bridge.spool import appender, liveness, segment
    spool, n, flushed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    run = bridge.init(project="torn", dir=spool, sync="offline", durability="journal",
                      system_metrics=False)
    print("RUN", run.id, flush=True)
    for step in range(n):
        run.log({"loss": step * 0.5, "acc": 1.0 / (step + 1)}, step=step)
        if step + 1 == flushed:
            assert run.flush(30)
    # One more call, then find its record: the last one in the journal.
    run.log({"loss": -1.0, "acc": -1.0}, step=n)
    j = run._writer._journal
    mm = j._maps[j._write_seg]
    off = segment.HEADER
    while True:
        length = struct.unpack_from("<I", mm, off)[0]
        if length == 0:
            break
        last, off = off, off + 8 + length
    # Cut the last record (step n) short: its header stays, half its payload is zeroed.
    length = struct.unpack_from("<I", mm, last)[0]
    mm[last + 8 + length // 2: last + 8 + length] = bytes(length - length // 2)
    os.kill(os.getpid(), signal.SIGKILL)
""")

ROUNDS = int(os.environ.get("BRIDGE_TEST_KILLS", "12"))
BASE_SEED = int(os.environ.get("BRIDGE_TEST_SEED", random.SystemRandom().randrange(1 << 30)))


def _progress_file(path: Path) -> mmap.mmap:
    path.write_bytes(bytes(8))
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, 8)
    finally:
        os.close(fd)


def _steps(spool: Path, run_id: str) -> list[tuple[int, int]]:
    """(step, rows) per step of the run's metrics, after the spool's recovery."""
    errors: list = []
    with warnings.catch_warnings(record=True) as caught:  # kept for the failure's message
        warnings.simplefilter("always")
        runs = list_runs(spool, errors)  # opening the spool recovers the dead writer's journal
    for w in caught:  # "cut short" is checked by the caller
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    assert [r.run_id for r in runs] == [run_id], (
        f"files {sorted(p.name for p in (spool / 'spool').iterdir())}, unreadable {errors}, "
        f"warnings {[str(w.message) for w in caught]}")
    files = spool_files(spool)
    assert len(files) == 1
    conn = sqlite3.connect(files[0])
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute(
            "SELECT step, count(*) FROM events WHERE run_id=? AND kind='metric' "
            "GROUP BY step ORDER BY step", (run_id,)).fetchall()
    finally:
        conn.close()


def _kill_once(tmp_path: Path, seed: int, group: bool,
               env: dict[str, str] | None = None) -> tuple[int, int]:
    rng = random.Random(seed)
    spool = tmp_path / f"spool-{seed}"
    target = rng.randint(1, 400_000)  # steps returned before the kill
    progress = _progress_file(tmp_path / f"progress-{seed}")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(spool),
                             str(tmp_path / f"progress-{seed}")],
                            stdout=subprocess.PIPE, text=True, start_new_session=group,
                            env=env)
    try:
        line = proc.stdout.readline().split()
        assert line[:1] == ["RUN"], line
        run_id = line[1]
        deadline = time.monotonic() + 120
        while (seen := struct.unpack_from("<q", progress, 0)[0]) < target:
            assert proc.poll() is None, "the logging child died by itself"
            assert time.monotonic() < deadline, "the child logs too slowly"
            time.sleep(0.001)
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    # Calls that had returned: at least what the parent saw before the kill (``seen``),
    # exactly the mark read after the child is dead when that read agrees with it (once in
    # CI the read after death gave 0: then the lower bound alone is checked).
    after = struct.unpack_from("<q", progress, 0)[0]
    returned = max(seen, after)
    progress.close()
    assert proc.returncode == -signal.SIGKILL
    with warnings.catch_warnings(record=True) as caught:  # a kill mid-copy: "cut short"
        warnings.simplefilter("always")
        rows = _steps(spool, run_id)
    said = [str(w.message) for w in caught if issubclass(w.category, BridgeWarning)]
    assert all("cut short" in m for m in said), said
    steps = [s for s, _ in rows]
    assert all(n == 2 for _, n in rows), "a call was recovered twice, or partially"
    assert steps == list(range(len(steps))), "recovered steps must be a prefix, no gap"
    assert len(steps) >= returned, f"{returned - len(steps)} returned call(s) lost"
    if after >= seen:
        assert len(steps) <= after + 1  # at most the call that was under way
    assert not list((spool / "spool").glob("*.seg")), "the journal is deleted once replayed"
    assert _steps(spool, run_id) == rows  # a second open replays nothing more
    return returned, len(steps)


@pytest.mark.parametrize("appender", ["c", "python"])
@pytest.mark.parametrize("group", [False, True], ids=["process", "process-group"])
def test_sigkill_loses_no_returned_call(tmp_path, group, appender):
    """With the C appender (where built) and with its Python twin."""
    env = dict(os.environ, BRIDGE_NO_EXTENSION="1" if appender == "python" else "")
    for i in range(ROUNDS if appender == "c" else max(1, ROUNDS // 2)):
        seed = BASE_SEED + i
        try:
            _kill_once(tmp_path, seed, group, env)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (replay with BRIDGE_TEST_SEED={seed})") from exc


def test_torn_last_record_is_dropped_and_the_rest_recovered_once(tmp_path):
    spool = tmp_path / "spool"
    n, flushed = 5000, 1234
    proc = subprocess.run([sys.executable, "-c", TORN_CHILD, str(spool), str(n), str(flushed)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id = proc.stdout.split()[1]
    segs = list((spool / "spool").glob("*.seg"))
    assert segs
    conn = sqlite3.connect(next((spool / "spool").glob("*.db")))
    pos = conn.execute("SELECT value FROM meta WHERE key='journal_pos'").fetchone()
    committed = conn.execute("SELECT count(DISTINCT step) FROM events WHERE kind='metric'"
                             ).fetchone()[0]
    conn.close()
    assert pos is not None and committed >= flushed  # the flush moved the journal position
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = _steps(spool, run_id)
    assert rows == [(s, 2) for s in range(n)], "step n was cut short: dropped, the rest once"
    assert any(issubclass(w.category, BridgeWarning) and "cut short" in str(w.message)
               for w in caught)


def test_resumed_run_recovers_first_and_continues_after(tmp_path):
    """A resumed run opens the spool: the killed writer's calls are in before its step."""
    spool = tmp_path / "spool"
    proc = subprocess.run([sys.executable, "-c", TORN_CHILD, str(spool), "300", "100"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id = proc.stdout.split()[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BridgeWarning)
        run = bridge.init(project="torn", dir=spool, sync="offline", run_id=run_id,
                          resume="allow", durability="journal", system_metrics=False)
    try:
        assert run.step == 300
        run.log({"loss": 1.0})
        assert run.flush(30)
    finally:
        run.finish()
        writer_pool.close_all()
    steps = []
    for f in spool_files(spool):
        conn = sqlite3.connect(f)
        steps += [s for (s,) in conn.execute(
            "SELECT step FROM events WHERE run_id=? AND kind='metric' AND key='loss'",
            (run_id,))]
        conn.close()
    assert sorted(steps) == list(range(301))
    assert not list((spool / "spool").glob("*.seg"))  # closed cleanly: nothing left to replay


def test_clean_finish_leaves_no_journal_and_rotates_segments(tmp_path, monkeypatch):
    """Small segments: the log crosses many of them; each is deleted once committed past."""
    monkeypatch.setattr(segment, "SEGMENT_BYTES", 1 << 16)
    run = bridge.init(project="rotate", dir=tmp_path, sync="offline", durability="journal",
                      system_metrics=False)
    for i in range(20_000):
        run.log({"loss": i * 0.25, "acc": 1.0}, step=i)
    assert run.flush(60)
    path = run._writer.path
    run.finish()
    writer_pool.close_all()
    assert not list((tmp_path / "spool").glob("*.seg"))
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT step, count(*) FROM events WHERE kind='metric' GROUP BY step"
                        ).fetchall()
    pos = conn.execute("SELECT value FROM meta WHERE key='journal_pos'").fetchone()[0]
    conn.close()
    assert rows == [(i, 2) for i in range(20_000)]
    assert segment.parse_pos(pos)[0] > 10  # crossed many segments


def test_journal_reads_back_across_segments_and_scan_stops_at_a_bad_checksum(tmp_path):
    db = tmp_path / "x.db"
    j = segment.Journal(db, 4096)
    put, put_metrics = j.appender()
    for i in range(200):  # ~40 bytes each: several segments
        put_metrics("r", i, 0, [("k", float(i))])
    got: list = []
    more, pos = j.read(got, 1000)
    assert not more and [it[2] for it in got] == list(range(200))
    assert segment.parse_pos(pos)[0] >= 2
    j.close(remove=False)
    found = segment.scan(db, (0, segment.HEADER))  # what a recovery reads, verified
    assert [it[2] for it in found.items] == list(range(200)) and found.torn == 0
    data = bytearray(segment.segment_path(db, 0).read_bytes())
    off = segment.HEADER
    for _ in range(7):
        off += 8 + struct.unpack_from("<I", data, off)[0]
    data[off + 9] ^= 0xFF  # a byte of record 7's payload
    segment.segment_path(db, 0).write_bytes(bytes(data))
    found = segment.scan(db, (0, segment.HEADER))
    assert [it[2] for it in found.items] == list(range(7))
    assert found.torn == 1


@pytest.mark.parametrize("kind", ["c", "python"])
def test_threads_logging_at_once_across_rotations_each_call_once(tmp_path, monkeypatch, kind):
    """The appender takes no lock: concurrent callers and segment rotations lose nothing,
    through ``log_metric`` and through ``run.log``'s C call (or its Python twin)."""
    import threading

    if kind == "python":
        monkeypatch.setattr(appender, "_C", None)
    elif not appender.FAST:
        pytest.skip("the C appender is not built on this machine")
    monkeypatch.setattr(segment, "SEGMENT_BYTES", 1 << 15)
    run = bridge.init(project="threads", dir=tmp_path, sync="offline", durability="journal",
                      system_metrics=False)
    assert (run._fast_log is not None) == (kind == "c")

    def worker(t: int) -> None:
        for i in range(5000):
            run.log_metric(f"t{t}", float(i), step=i)
            run.log({f"r{t}": float(i)}, step=i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert run.flush(60)
    path = run._writer.path
    run.finish()
    writer_pool.close_all()
    conn = sqlite3.connect(path)
    got = conn.execute("SELECT key, count(*), count(DISTINCT step) FROM events "
                       "WHERE kind='metric' GROUP BY key ORDER BY key").fetchall()
    conn.close()
    assert got == sorted([(f"{k}{t}", 5000, 5000) for t in range(4) for k in "rt"])
    assert not list((tmp_path / "spool").glob("*.seg"))


# Logs images, a histogram and a table with the writer thread never committing on its own
# (flush_interval of an hour), then kills itself: every media call exists only in the journal.
MEDIA_CHILD = textwrap.dedent("""
    import os, signal, sys, numpy as np, bridge
    spool = sys.argv[1]
    run = bridge.init(project="media", dir=spool, sync="offline", flush_interval=3600,
                      system_metrics=False)
    print("RUN", run.id, flush=True)
    rng = np.random.default_rng(7)
    for step in range(5):
        img = rng.integers(0, 255, (32, 24, 3), dtype=np.uint8)
        np.save(os.path.join(spool, f"img{step}.npy"), img)
        run.log({"img": bridge.Image(img), "loss": step * 0.5}, step=step)
    run.log({"hist": bridge.Histogram(np.arange(100.0)),
             "table": bridge.Table(columns=["a", "b"], data=[[1, "x"], [2, "y"]])}, step=5)
    assert run._writer._journal is not None, "journal is the default durability"
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_media_calls_survive_a_kill_at_the_default_durability(tmp_path):
    """Media is journaled (as its pickle) like any call: recovered, encoded, its blobs stored."""
    np = pytest.importorskip("numpy")
    from PIL import Image as PILImage

    from bridge.spool import blobs

    spool = tmp_path / "spool"
    spool.mkdir()
    proc = subprocess.run([sys.executable, "-c", MEDIA_CHILD, str(spool)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id = proc.stdout.split()[1]
    db = next((spool / "spool").glob("*.db"))
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM events WHERE kind='media'").fetchone()[0] == 0
    conn.close()
    spool_files(spool)  # the first opener recovers
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT key, step, payload FROM events WHERE run_id=? AND kind='media' "
                        "ORDER BY seq", (run_id,)).fetchall()
    losses = conn.execute("SELECT step, value FROM events WHERE kind='metric' ORDER BY step"
                          ).fetchall()
    conn.close()
    assert [(k, s) for k, s, _ in rows] == [("img", s) for s in range(5)] + [
        ("hist", 5), ("table", 5)]
    assert losses == [(s, s * 0.5) for s in range(5)]
    import json

    for key, step, payload in rows[:5]:
        item = json.loads(payload)["items"][0]
        blob = blobs.blob_path(spool, item["sha256"])
        got = np.asarray(PILImage.open(blob))
        assert (got == np.load(spool / f"img{step}.npy")).all()
    assert json.loads(rows[6][2])["data"]["rows"] == [[1, "x"], [2, "y"]]
    assert not list((spool / "spool").glob("*.seg"))


def test_flush_returns_once_every_journaled_call_is_committed(tmp_path):
    """A backlog larger than one transaction's read: flush() waits for all of it."""
    from bridge.spool.writer import JOURNAL_BATCH

    run = bridge.init(project="flush", dir=tmp_path, sync="offline", flush_interval=3600,
                      system_metrics=False)
    n = 3 * JOURNAL_BATCH + 5
    for i in range(n):
        run.log({"loss": i * 0.5}, step=i)
    assert run.flush(60)
    conn = sqlite3.connect(run._writer.path)
    try:
        assert conn.execute("SELECT count(*) FROM events WHERE kind='metric'").fetchone()[0] == n
    finally:
        conn.close()
    run.finish()
    writer_pool.close_all()


def test_images_past_two_segments_leave_the_encoding_to_the_writer(tmp_path, monkeypatch):
    """A loop logging images faster than PNG encodes them is not made to encode them itself
    at each segment's end: media pending encoding is bounded by bytes, as with "buffered"."""
    np = pytest.importorskip("numpy")
    monkeypatch.setattr(segment, "SEGMENT_BYTES", 1 << 20)
    run = bridge.init(project="imgs", dir=tmp_path, sync="offline", flush_interval=3600,
                      system_metrics=False)
    pixels = np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    n = 100  # 12 KB each: 1.2 MB of journal per 100, several 1 MB segments for 300
    for i in range(3 * n):
        run.log({"img": bridge.Image(pixels)}, step=i)
    writer = run._writer
    assert writer._journal.backlog() >= 2  # past the point where metrics alone would commit
    conn = sqlite3.connect(writer.path)
    try:
        assert conn.execute("SELECT count(*) FROM events WHERE kind='media'").fetchone()[0] == 0
        assert run.flush(60)
        assert conn.execute("SELECT count(*) FROM events WHERE kind='media'").fetchone()[0] \
            == 3 * n
    finally:
        conn.close()
    run.finish()
    writer_pool.close_all()


def test_a_platform_without_posix_fallocate_still_journals(tmp_path, monkeypatch):
    """macOS has no ``os.posix_fallocate``: segments are sized with ``ftruncate`` instead."""
    monkeypatch.delattr(os, "posix_fallocate", raising=False)
    run = bridge.init(project="nofalloc", dir=tmp_path, sync="offline", system_metrics=False)
    assert run._writer._journal is not None
    for i in range(100):
        run.log({"loss": i * 0.5}, step=i)
    assert run.flush(30)
    assert [s for s, _ in _steps_of_file(run._writer.path)] == list(range(100))
    run.finish()
    writer_pool.close_all()


def _steps_of_file(path: Path) -> list[tuple[int, int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT step, count(*) FROM events WHERE kind='metric' "
                            "GROUP BY step ORDER BY step").fetchall()
    finally:
        conn.close()


# Logs a few calls (never committed: an hour's flush interval), forks a child that keeps a
# copy of every descriptor (the spool's lock among them) for a moment, and kills itself.
FORKING_CHILD = textwrap.dedent("""
    import ctypes, os, signal, sys, bridge
    spool = sys.argv[1]
    run = bridge.init(project="fork", dir=spool, sync="offline", flush_interval=3600,
                      system_metrics=False)
    for step in range(100):
        run.log({"loss": step * 0.5}, step=step)
    libc = ctypes.PyDLL(None)  # calls that keep the interpreter lock: the child has it
    # The C library's fork, as subprocess forks: no Python at-fork handler runs, so the
    # child keeps the writer's descriptors, as a subprocess does until it execs.
    if libc.fork() == 0:
        libc.sleep(1)
        libc._exit(0)
    print("RUN", run.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_lock_kept_by_a_child_the_dead_writer_forked_is_waited_for(tmp_path):
    """A writer killed while it forked (its system-info thread runs ``git``) leaves its lock
    held by the child for a moment: the next open waits for it and recovers the journal,
    instead of leaving the run unreplayed until some later open."""
    spool = tmp_path / "spool"
    out = tmp_path / "out.txt"  # a file, not a pipe: its end would wait for the fork too
    with open(out, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", FORKING_CHILD, str(spool)],
                                stdout=fh, stderr=subprocess.STDOUT)
        assert proc.wait(60) == -signal.SIGKILL, out.read_text()
    run_id = out.read_text().split()[1]
    assert liveness.writer_alive(spool / "spool" / next(
        p.name for p in (spool / "spool").glob("*.db"))), "the fork still holds the lock"
    assert list((spool / "spool").glob("*.seg")), "the calls are in the journal only"
    assert _steps(spool, run_id) == [(i, 1) for i in range(100)]
