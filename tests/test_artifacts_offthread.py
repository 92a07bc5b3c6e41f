"""Large artifacts: hashed and copied off the caller's thread, committed only once durable;
``copy=False`` keeps no second copy and the sync refuses a file that changed or vanished."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import bridge
from bridge import writer_pool
from bridge.adapters.base import RunInfo
from bridge.adapters.memory import STORE
from bridge.agent.references import check_references
from bridge.agent.state import StateStore
from bridge.agent.status import spool_status
from bridge.agent.sync import Syncer
from bridge.config import AgentSettings
from bridge.spool import artifacts
from bridge.spool.blobs import blob_path
from bridge.spool.reader import iter_events, list_runs

FAST = AgentSettings(retry_initial=0.01, retry_max=0.05, retry_attempts=2)


def _artifact_events(spool: Path, run_id: str) -> list:
    rec = [r for r in list_runs(spool) if r.run_id == run_id]
    if not rec:
        return []
    return [e for e in iter_events(rec[0].files, run_id) if e.kind == "artifact"]


def test_the_caller_never_hashes_and_the_event_waits_for_its_blob(tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    src = tmp_path / "ckpt.bin"
    src.write_bytes(os.urandom(3_000_000))
    started, gate = threading.Event(), threading.Event()
    real = artifacts.blobs.store_file

    def gated(spool_dir, source):
        started.set()
        assert gate.wait(30)
        return real(spool_dir, source)

    monkeypatch.setattr(artifacts.blobs, "store_file", gated)
    run = bridge.init(project="art", dir=spool, sync="offline")
    run.log_artifact(src)  # returns while the copy is held at the gate
    assert started.wait(30)
    run.log({"x": 1.0}, step=0)
    run._writer.commit_pending()
    assert _artifact_events(spool, run.id) == []  # not committed before its blob is durable
    assert run._writer.pending_artifacts() == (1, 3_000_000)
    assert run.flush(timeout=0.01) is False  # flush waits for it, bounded
    gate.set()
    assert run.flush()
    [ev] = _artifact_events(spool, run.id)
    [f] = ev.payload["files"]
    assert blob_path(spool, f["sha256"]).read_bytes() == src.read_bytes()
    run.finish()
    writer_pool.close_all()


def test_finish_commits_the_artifact_before_the_run_ends(tmp_path):
    spool = tmp_path / "spool"
    src = tmp_path / "weights"
    src.mkdir()
    for i in range(3):
        (src / f"part{i}.bin").write_bytes(os.urandom(1_000_000))
    run = bridge.init(project="art", dir=spool, sync="offline")
    run.log_artifact(src, name="model")
    run.finish()
    writer_pool.close_all()
    [ev] = _artifact_events(spool, run.id)
    assert ev.payload["is_dir"] and len(ev.payload["files"]) == 3
    assert all(blob_path(spool, f["sha256"]).exists() for f in ev.payload["files"])


@pytest.mark.parametrize("durability", ["commit", "fsync"])
def test_commit_durability_still_stores_before_the_call_returns(tmp_path, durability):
    spool = tmp_path / "spool"
    src = tmp_path / "a.txt"
    src.write_text("hello")
    run = bridge.init(project="art", dir=spool, sync="offline", durability=durability)
    run.log_artifact(src)
    assert len(_artifact_events(spool, run.id)) == 1  # no flush needed
    run.finish()
    writer_pool.close_all()


def _sync(spool: Path) -> None:
    syncer = Syncer(spool, settings=FAST)
    try:
        syncer.run_once()
    finally:
        syncer.shutdown()


def test_reference_mode_keeps_no_copy_and_refuses_changed_or_vanished_files(tmp_path):
    spool = tmp_path / "spool"
    STORE.pop("ref", None)
    same, changed, gone = (tmp_path / n for n in ("same.bin", "changed.bin", "gone.bin"))
    for p in (same, changed, gone):
        p.write_bytes(os.urandom(100_000))
    run = bridge.init(project="art", dir=spool, sync="offline",
                      backends=[{"name": "memory", "store": "ref"}])
    for p in (same, changed, gone):
        run.log_artifact(p, copy=False)
    run.finish()
    writer_pool.close_all()
    events = {e.key: e for e in _artifact_events(spool, run.id)}
    for e in events.values():
        [f] = e.payload["files"]
        assert f["ref"]["path"] and not blob_path(spool, f["sha256"]).exists()  # no copy
    assert not [p for p in (spool / "blobs").rglob("*") if p.is_file()]
    changed.write_bytes(os.urandom(100_000))  # same size, other bytes
    os.utime(changed, ns=(1, 1))
    gone.unlink()
    _sync(spool)
    store = StateStore(spool)
    try:
        reasons = {d.seq: d.reason for d in store.dead_letters(run_id=run.id)}
    finally:
        store.close()
    assert "changed since it was logged" in reasons[events["changed.bin"].seq]
    assert "vanished" in reasons[events["gone.bin"].seq]
    assert events["same.bin"].seq not in reasons
    delivered = [e for e in STORE["ref"]["events"][run.id] if e.kind == "artifact"]
    assert [e.key for e in delivered] == ["same.bin"]
    [st] = spool_status(spool)
    assert st.backends[0].pending == 0 and st.backends[0].dead == 2


def test_reference_check_hands_the_adapter_the_users_file(tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 1000)
    run_is_dir, files = artifacts.snapshot(src)
    job = artifacts.ArtifactJob("r" * 32, "f.bin", "file", run_is_dir, str(src), files,
                                copy=False, ts_ms=0)
    payload, stored, problems = artifacts.store(job, tmp_path / "spool")
    assert stored == [] and problems == []
    from bridge.adapters.base import Event

    ev = Event("file", 1, "r" * 32, "artifact", "f.bin", None, 0, None, payload, "")
    info = RunInfo(run_id="r" * 32, project="p", blob_root=tmp_path / "spool" / "blobs")
    assert check_references([ev], info.references) == {}
    assert info.blob_path(payload["files"][0]["sha256"]) == src.resolve()
    os.utime(src, ns=(5, 5))  # touched, same bytes: accepted after a re-hash
    assert check_references([ev], {}) == {}


def test_a_size_setting_switches_large_artifacts_to_reference_mode(tmp_path):
    spool = tmp_path / "spool"
    small, large = tmp_path / "small.txt", tmp_path / "large.bin"
    small.write_text("tiny")
    large.write_bytes(os.urandom(20_000))
    run = bridge.init(project="art", dir=spool, sync="offline", artifact_reference_mb=0.01)
    run.log_artifact(small)
    run.log_artifact(large)
    run.log_artifact(large, name="forced", copy=True)
    run.finish()
    writer_pool.close_all()
    by = {e.key: e.payload for e in _artifact_events(spool, run.id)}
    assert "ref" not in by["small.txt"]["files"][0]
    assert by["large.bin"]["files"][0]["ref"]["size"] == 20_000
    assert "ref" not in by["forced"]["files"][0]


def test_a_vanished_source_is_a_counted_warning_not_an_exception(tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    src = tmp_path / "tmp.bin"
    src.write_bytes(b"abc")
    real = artifacts.blobs.store_file

    def vanish_first(spool_dir, source):
        Path(source).unlink()
        return real(spool_dir, source)

    monkeypatch.setattr(artifacts.blobs, "store_file", vanish_first)
    run = bridge.init(project="art", dir=spool, sync="offline")
    with pytest.warns(bridge.errors.BridgeWarning, match="artifact not recorded"):
        run.log_artifact(src)
        run.flush()
    run.finish()
    writer_pool.close_all()
    assert _artifact_events(spool, run.id) == []
    assert list_runs(spool)[0].warnings == 1


def test_a_file_deleted_right_after_the_call_is_still_stored(tmp_path, monkeypatch):
    """The call hard-links the file into the blob store: a temporary file removed as soon
    as log_artifact returns (before the copy ran) is still copied as it was."""
    spool = tmp_path / "spool"
    started, gate = threading.Event(), threading.Event()
    real = artifacts.blobs.store_file

    def gated(spool_dir, source):
        started.set()
        assert gate.wait(30)
        return real(spool_dir, source)

    monkeypatch.setattr(artifacts.blobs, "store_file", gated)
    run = bridge.init(project="art", dir=spool, sync="offline")
    data = os.urandom(500_000)
    src = tmp_path / "tmp" / "model.pt"
    src.parent.mkdir()
    src.write_bytes(data)
    run.log_artifact(src)
    assert started.wait(30)
    src.unlink()
    src.parent.rmdir()
    gate.set()
    run.finish()
    writer_pool.close_all()
    [ev] = _artifact_events(spool, run.id)
    assert blob_path(spool, ev.payload["files"][0]["sha256"]).read_bytes() == data
    assert list_runs(spool)[0].warnings == 0
    assert not list((spool / "blobs").glob(".staged-*"))  # the link is gone
