"""A full disk under the spool: log() never raises, one clear warning, what could not be
written is counted per run and shown by `bridge status`, and the spool stays readable.

The spool lives on a small tmpfs the test mounts (root only; skipped with a reason elsewhere).
"""

from __future__ import annotations

import sqlite3
import subprocess
import warnings
from pathlib import Path

import pytest

import bridge
from bridge.agent.status import spool_status
from bridge.spool import segment
from bridge.spool.reader import list_runs


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# The default durability journals each call: on a 3 MB disk its 8 MB segments cannot be made
# (the writer says so and commits as "buffered"); with 256 KB ones the journal exists, fills,
# and the calls it has no room for are held as "buffered" holds them.
JOURNAL_SEGMENTS = pytest.mark.parametrize("segment_bytes", [None, 256 << 10],
                                           ids=["no-room-for-a-journal", "journal-fills"])


@JOURNAL_SEGMENTS
def test_disk_full_never_raises_counts_and_recovers(small_disk: Path, segment_bytes,
                                                    monkeypatch):
    if segment_bytes:
        monkeypatch.setattr(segment, "SEGMENT_BYTES", segment_bytes)
    spool = small_disk / "spool"
    run = bridge.init(project="full", dir=spool, sync="offline", max_queue=500,
                      flush_interval=0.01)
    assert (run._writer._journal is not None) == bool(segment_bytes)
    run._system_thread.join()  # the system event is written before the disk fills
    run.flush()
    filler = small_disk / "filler.bin"
    with open(filler, "wb") as fh:  # take the rest of the disk
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    blob = "x" * 2000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3000):
            run.log({"loss": float(i)}, step=i)
            run.log_text(blob + str(i), f"t{i}.txt")
        run.flush(timeout=30)
    messages = [str(w.message) for w in caught if issubclass(w.category, bridge.BridgeWarning)]
    assert any("cannot write to spool" in m for m in messages), messages
    assert sum("cannot write to spool" in m for m in messages) == 1  # said once, not per call
    writer = run._writer
    assert writer.dropped > 0
    # the disk comes back: what is kept is written, the drop count lands in the spool
    filler.unlink()
    assert run.flush(timeout=30)
    run.finish()
    [rec] = list_runs(spool)
    assert rec.status == "FINISHED"
    assert rec.dropped == writer.dropped
    assert spool_status(spool)[0].dropped == writer.dropped
    conn = sqlite3.connect(rec.files[0].path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = conn.execute("SELECT count(*) FROM events WHERE kind IN ('metric', 'text')").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM events WHERE kind='system'").fetchone()[0] == 1
    assert stored + writer.dropped == 6000  # every call is either stored or counted
    conn.close()


@JOURNAL_SEGMENTS
def test_a_disk_that_never_frees_is_said_at_finish(small_disk: Path, segment_bytes,
                                                   monkeypatch):
    """Drops that never reach the spool (the disk stays full) are still said and counted."""
    if segment_bytes:
        monkeypatch.setattr(segment, "SEGMENT_BYTES", segment_bytes)
    spool = small_disk / "spool"
    run = bridge.init(project="full", dir=spool, sync="offline", max_queue=500,
                      flush_interval=0.01)
    run._system_thread.join()
    run.flush()
    filler = small_disk / "filler.bin"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3000):
            run.log_text("x" * 2000 + str(i), f"t{i}.txt")
        run.finish()
    messages = [str(w.message) for w in caught if issubclass(w.category, bridge.BridgeWarning)]
    said = [m for m in messages if "finished with" in m]
    assert len(said) == 1, messages
    assert run.dropped > 0 and f"{run.dropped} events dropped" in said[0]
    assert run.dropped == run._writer.dropped_by_run[run.id]
    filler.unlink()  # let the writer empty its queue before the tmpfs goes
    assert run._writer.flush(timeout=30)
