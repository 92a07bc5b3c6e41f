"""`bridge prune`: what every backend holds goes, what one still needs stays (memory backend).

The real-backend version (an MLflow server down during the prune, W&B offline delivered) is
tests/agent/test_prune_backends.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import bridge
from bridge import writer_pool
from bridge.adapters.memory import STORE
from bridge.agent.retention import apply_retention, parse_age, prune
from bridge.agent.state import StateStore
from bridge.agent.status import spool_status
from bridge.agent.sync import Syncer
from bridge.cli.main import app
from bridge.config import AgentSettings
from bridge.query import data
from bridge.spool.blobs import blob_path
from bridge.spool.liveness import writer_alive
from bridge.spool.reader import list_runs, spool_files

FAST = AgentSettings(retry_initial=0.01, retry_max=0.05, retry_attempts=2)


def _mem(store: str) -> list[dict]:
    return [{"name": "memory", "store": store}]


def _log(spool: Path, name: str, backends: list[dict], art: Path | None = None,
         image_seed: int | None = None, steps: int = 50, finish: bool = True,
         close: bool = True):
    """One run in its own writer file (``close`` ends the writer, as a process exit does)."""
    run = bridge.init(project="prj", name=name, dir=spool, sync="offline", backends=backends)
    for s in range(steps):
        run.log({"loss": 1.0 / (s + 1)}, step=s)
    if art is not None:
        run.log_artifact(art)
    if image_seed is not None:
        pixels = np.random.default_rng(image_seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
        run.log({"sample": bridge.Image(pixels)}, step=steps)
    if finish:
        run.finish()
    else:
        run.flush()
    if close:
        writer_pool.close_all()
    return run


def _sync(spool: Path, **kw) -> None:
    syncer = Syncer(spool, settings=FAST, **kw)
    try:
        syncer.run_once()
    finally:
        syncer.shutdown()


def _age_blobs(spool: Path, seconds: float = 3600) -> None:
    """Blobs older than prune's grace period, as on a spool left alone for a while."""
    old = time.time() - seconds
    for p in (spool / "blobs").rglob("*"):
        if p.is_file():
            os.utime(p, (old, old))


def _blob_of(spool: Path, run_id: str, kind: str) -> set[str]:
    out: set[str] = set()
    rec = [r for r in list_runs(spool) if r.run_id == run_id][0]
    from bridge.spool.reader import iter_events
    from bridge.spool.media import blob_items

    for ev in iter_events(rec.files, run_id):
        if ev.kind == kind == "artifact":
            out.update(f["sha256"] for f in ev.payload["files"])
        elif ev.kind == kind == "media":
            out.update(i["sha256"] for i in blob_items(ev.payload))
    return out


def test_delivered_runs_go_everything_still_needed_stays(tmp_path):
    spool = tmp_path / "spool"
    shared, own = tmp_path / "shared.bin", tmp_path / "own.bin"
    shared.write_bytes(os.urandom(4000))
    own.write_bytes(os.urandom(6000))
    STORE.pop("p1", None)
    done = _log(spool, "done", _mem("p1"), own, image_seed=1)
    _sync(spool)
    keeps_shared = _log(spool, "keeps-shared", _mem("p1"), shared, image_seed=2)
    also_shared = _log(spool, "done-shared", _mem("p1"), shared)
    _sync(spool)
    nobackend = _log(spool, "local-only", [])
    _age_blobs(spool)
    own_shas = _blob_of(spool, done.id, "artifact")
    done_media = _blob_of(spool, done.id, "media")
    shared_shas = _blob_of(spool, keeps_shared.id, "artifact")
    kept_media = _blob_of(spool, keeps_shared.id, "media")
    # keep `keeps-shared` by giving it a pending event: a late summary after its sync
    run = bridge.init(project="prj", dir=spool, sync="offline", resume="allow",
                      run_id=keeps_shared.id, backends=_mem("p1"))
    run.summary["late"] = 1
    run.finish()
    writer_pool.close_all()
    running = _log(spool, "running", _mem("p1"), finish=False, close=False)

    before = {s.run_id: s for s in spool_status(spool)}
    dry = prune(spool, dry_run=True)
    assert {s.run_id for s in spool_status(spool)} == set(before)  # a dry run changes nothing
    out = prune(spool)
    verdicts = {v.run_id: v for v in out.runs}
    assert [v.prune for v in dry.runs] == [v.prune for v in out.runs]
    removed = {v.run_id for v in out.runs if v.prune}
    assert done.id in removed and also_shared.id in removed
    assert "pending" in verdicts[keeps_shared.id].reason
    assert "only copy" in verdicts[nobackend.id].reason
    assert verdicts[running.id].reason == "still running"
    left = {s.run_id for s in spool_status(spool)}
    assert done.id not in left and also_shared.id not in left
    assert {keeps_shared.id, nobackend.id, running.id} <= left
    # blobs: the removed run's own artifact and image are gone, the shared one stays
    assert not any(blob_path(spool, s).exists() for s in own_shas | done_media)
    assert all(blob_path(spool, s).exists() for s in shared_shas | kept_media)
    assert out.report.blobs == len(own_shas | done_media)
    assert out.report.events == before[done.id].events + before[also_shared.id].events
    # what is kept still reads and syncs
    assert set(data(dir=spool, run="all", run_id=True)["run_id"]) >= {keeps_shared.id, nobackend.id}
    _sync(spool)
    st = {s.run_id: s for s in spool_status(spool)}[keeps_shared.id]
    assert all(b.pending == 0 for b in st.backends)
    running.finish()
    writer_pool.close_all()


def test_a_live_writers_file_is_never_touched(tmp_path):
    spool = tmp_path / "spool"
    STORE.pop("live", None)
    run = _log(spool, "finished-but-writer-open", _mem("live"), close=False)
    _sync(spool)
    [path] = spool_files(spool)
    assert writer_alive(path) == "its writer process is still running"
    out = prune(spool)
    assert not out.runs[0].prune and "still running" in out.runs[0].reason
    assert path.exists() and out.report.events == 0
    writer_pool.close_all()  # the process's writer closes: its file is done
    assert writer_alive(path) is None
    out = prune(spool)
    assert out.runs[0].prune and not path.exists()
    assert not list((spool / "spool").iterdir())
    assert run.id not in set(data(dir=spool, run="all", run_id=True)["run_id"])


def test_a_training_loop_never_waits_on_prune(tmp_path):
    """Prune passes over a directory while a run commits every call there: the writer never
    sees a locked database and loses nothing."""
    spool = tmp_path / "spool"
    STORE.pop("loop", None)
    for i in range(3):
        _log(spool, f"old{i}", _mem("loop"))
    _sync(spool)
    live = bridge.init(project="prj", name="live", dir=spool, sync="offline",
                       backends=_mem("loop"), durability="commit")
    stop = threading.Event()

    def loop() -> None:
        i = 0
        while not stop.is_set():
            live.log({"x": float(i)}, step=i)
            i += 1
        live.log({"x": -1.0}, step=i)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = threading.Thread(target=loop)
        t.start()
        for _ in range(4):
            prune(spool)
        stop.set()
        t.join()
        live.finish()
    assert not [w for w in caught if "bridge" in str(w.message)]
    [st] = spool_status(spool)
    assert st.run_id == live.id and st.dropped == 0 and st.events > 1
    writer_pool.close_all()


def test_dead_letters_stay_unless_asked(tmp_path):
    spool = tmp_path / "spool"
    STORE.pop("dead", None)
    STORE["dead"]["reject"] = {("metric", "loss"): "refused for good"}
    run = _log(spool, "with-dead", _mem("dead"), steps=3)
    _sync(spool)
    [st] = spool_status(spool)
    assert st.backends[0].dead == 3
    out = prune(spool)
    assert "dead letters" in out.runs[0].reason
    out = prune(spool, include_dead=True)
    assert out.runs[0].prune
    store = StateStore(spool)
    try:
        assert store.dead_letters(run_id=run.id) == []
    finally:
        store.close()
    assert spool_status(spool) == []


def test_filters_and_retention(tmp_path):
    spool = tmp_path / "spool"
    STORE.pop("f", None)
    a = _log(spool, "a", _mem("f"))
    b = bridge.init(project="other", name="b", dir=spool, sync="offline", backends=_mem("f"))
    b.log({"x": 1.0})
    b.finish()
    writer_pool.close_all()
    _sync(spool)
    assert [v.run_id for v in prune(spool, project="other", dry_run=True).runs] == [b.id]
    assert [v.run_id for v in prune(spool, runs=[a.id[:8]], dry_run=True).runs] == [a.id]
    assert [v.run_id for v in prune(spool, runs=["a"], dry_run=True).runs] == [a.id]
    assert prune(spool, backends=["wandb"], dry_run=True).runs == []
    recent = prune(spool, older_than_s=86400, dry_run=True)
    assert all("too recently" in v.reason for v in recent.runs)
    future = int(time.time() * 1000) + 2 * 86400_000
    assert all(v.prune for v in prune(spool, older_than_s=86400, dry_run=True,
                                      now_ms=future).runs)
    assert apply_retention(spool, 0) is None  # off by default
    assert all(not v.prune for v in apply_retention(spool, 1).runs)
    assert parse_age("30d") == 30 * 86400 and parse_age("90m") == 5400 and parse_age("5") == 5


def test_cli_prune_dry_run_json_and_output(tmp_path):
    spool = tmp_path / "spool"
    STORE.pop("cli", None)
    run = _log(spool, "cli", _mem("cli"))
    _sync(spool)
    runner = CliRunner()
    res = runner.invoke(app, ["prune", "--dir", str(spool), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["dry_run"] and doc["freed"]["runs"] == 1 and doc["freed"]["bytes"] > 0
    assert spool_files(spool)
    res = runner.invoke(app, ["prune", "--dir", str(spool), "--older-than", "1d"])
    assert res.exit_code == 0 and "kept: finished too recently" in res.output
    res = runner.invoke(app, ["prune", "--dir", str(spool), "--older-than", "soon"])
    assert res.exit_code != 0
    res = runner.invoke(app, ["prune", "--dir", str(spool), "--run", run.id])
    assert res.exit_code == 0 and "freed 1 runs, 51 events" in res.output
    assert not spool_files(spool)


def test_sizes_in_runs_show_status_and_doctor_warnings(tmp_path, monkeypatch):
    from bridge.spool.sizes import DiskUsage, run_sizes, space_warnings

    spool = tmp_path / "spool"
    STORE.pop("sz", None)
    art = tmp_path / "big.bin"
    art.write_bytes(os.urandom(300_000))
    run = _log(spool, "sized", _mem("sz"), art)
    _sync(spool)
    size = run_sizes(spool)[run.id]
    assert size.blobs == 300_000 and size.events > 0
    runner = CliRunner()
    doc = json.loads(runner.invoke(app, ["status", "--dir", str(spool), "--json"]).output)
    assert doc["runs"][0]["bytes"] == {"events": size.events, "blobs": 300_000}
    assert "kB" in runner.invoke(app, ["runs", "--dir", str(spool)]).output
    assert "blobs 300.0 kB" in runner.invoke(app, ["show", "last", "--dir", str(spool)]).output
    # a quota nearly used: doctor warns and says what prune would free
    monkeypatch.setenv("BRIDGE_QUOTA_GB", "0.0003")
    res = runner.invoke(app, ["doctor", "--dir", str(spool)])
    assert "quota" in res.output and "`bridge prune` would free 1 delivered runs" in res.output
    monkeypatch.delenv("BRIDGE_QUOTA_GB")
    res = runner.invoke(app, ["doctor", "--dir", str(spool)])
    assert "would free" not in res.output or "nearly full" in res.output
    full = DiskUsage(spool_bytes=10, blob_bytes=0, fs_total=100_000_000_000,
                     fs_free=1_000_000_000)
    assert "nearly full" in space_warnings(full)[0]
    roomy = DiskUsage(spool_bytes=10, blob_bytes=0, fs_total=100_000_000_000,
                      fs_free=50_000_000_000)
    assert space_warnings(roomy) == [] and space_warnings(roomy, quota_bytes=12)


def test_agent_applies_retention_after_each_pass(tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    STORE.pop("ret", None)
    _log(spool, "old", _mem("ret"))
    runner = CliRunner()
    res = runner.invoke(app, ["agent", "--dir", str(spool), "--once"])  # retention off
    assert res.exit_code == 0 and spool_files(spool)
    monkeypatch.setenv("BRIDGE_AGENT_RETENTION_DAYS", "1e-9")  # anything finished before now
    res = runner.invoke(app, ["agent", "--dir", str(spool), "--once"])
    assert res.exit_code == 0, res.output
    assert "retention (1e-09 days): pruned 1 runs" in res.output
    assert not spool_files(spool)


def test_links_staged_by_a_killed_process_are_removed(tmp_path):
    """A process killed between ``log_artifact`` and its copy leaves ``blobs/.staged-<pid>-…``
    (nothing refers to it: the event commits only with its blob): prune removes it, counts the
    bytes it held, and never touches a live process's link."""
    import os
    import subprocess
    import sys

    from bridge.agent.retention import prune
    from bridge.spool.artifacts import STAGED_ORPHAN_SECONDS, STAGED_PREFIX

    spool = tmp_path / "spool"
    with bridge.init(project="p", dir=spool, sync="offline") as run:
        run.log({"x": 1.0}, step=0)
    blobs_dir = spool / "blobs"
    blobs_dir.mkdir(exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    original = tmp_path / "ckpt.bin"
    original.write_bytes(b"x" * 1000)
    orphan = blobs_dir / f"{STAGED_PREFIX}{dead}-00ff"
    os.link(original, orphan)
    original.unlink()  # the user's file is gone: the link alone holds the bytes
    live = blobs_dir / f"{STAGED_PREFIX}{os.getpid()}-00aa"
    live.write_bytes(b"y" * 10)
    old_format = blobs_dir / f"{STAGED_PREFIX}0123456789abcdef"
    old_format.write_bytes(b"z" * 10)
    past = os.stat(old_format).st_mtime - STAGED_ORPHAN_SECONDS - 60
    os.utime(old_format, (past, past))

    dry = prune(spool, dry_run=True)
    assert dry.report.blobs == 2 and dry.report.blob_bytes == 1010 and orphan.exists()
    done = prune(spool)
    assert not orphan.exists() and not old_format.exists() and live.exists()
    assert done.report.blobs == 2 and done.report.blob_bytes == 1010


def test_a_file_whose_journal_is_not_replayed_stays(tmp_path, monkeypatch):
    """Calls still only in a dead writer's journal are not in SQLite: prune keeps the file."""
    from bridge.spool import recover, segment

    spool = tmp_path / "spool"
    STORE.pop("jr", None)
    run = _log(spool, "journal-left", _mem("jr"))
    _sync(spool)
    [path] = spool_files(spool)
    seg = segment.segment_path(path, 7)  # as a killed writer leaves it
    seg.write_bytes(segment.MAGIC + bytes(64))

    def refuse(db):
        raise OSError("read-only filesystem")

    monkeypatch.setattr(recover, "recover_file", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = prune(spool)
    assert not out.runs[0].prune and "journal not replayed" in out.runs[0].reason
    assert path.exists() and seg.exists()
    monkeypatch.undo()
    out = prune(spool)  # replayed at this open (nothing past the position): pruned whole
    assert out.runs[0].prune and not path.exists() and not seg.exists()
    assert run.id not in set(data(dir=spool, run="all", run_id=True)["run_id"])
