"""The sync engine against the in-memory adapter: order, batching, retries, dead letters,
cursors, leases, pausing a failing backend, and the in-process background mode."""

from __future__ import annotations

import threading
import time

import pytest

import bridge
from bridge.adapters import memory
from bridge.adapters.base import ExportResult, TransientError
from bridge.agent.state import StateStore
from bridge.agent.status import spool_status
from bridge.agent.sync import Syncer
from bridge.config import AgentSettings

FAST = AgentSettings(retry_initial=0.001, retry_max=0.01, retry_attempts=4)


@pytest.fixture(autouse=True)
def clean_store():
    memory.STORE.clear()
    yield
    memory.STORE.clear()


def _run(spool, store="s", n=1200, **kw):
    run = bridge.init(project="p", dir=spool, backends=[{"name": "memory", "store": store}],
                      sync="offline", **kw)
    for i in range(n):
        run.log({"loss": float(i)}, step=i)
    return run


def test_everything_delivered_in_order_and_batched(tmp_path):
    run = _run(tmp_path)
    run.log_param("lr", 0.1)
    run.finish()
    summary = Syncer(tmp_path, settings=FAST).run_once()
    assert summary.complete
    st = memory.STORE["s"]
    got = [e for e in st["events"][run.id] if e.kind == "metric"]
    assert [e.step for e in got] == list(range(1200))
    sizes = [c[2] for c in st["calls"] if c[0] == "export"]
    assert max(sizes) <= memory.MemoryAdapter.limits.max_events
    assert st["runs"][run.id]["status"] == "FINISHED"
    # a second pass has nothing to do and does not close twice
    again = Syncer(tmp_path, settings=FAST).run_once()
    assert again.complete and again.results[0].delivered == 0
    assert [c for c in st["calls"] if c[0] == "close_run"] == [("close_run", run.id, "FINISHED")]


def test_retry_then_success_with_retry_after(tmp_path):
    run = _run(tmp_path, n=10)
    run.finish()
    memory.STORE["s"]["faults"] = [ExportResult.retry("429 slow down", retry_after=0.05),
                                   ExportResult.retry("500")]
    t0 = time.monotonic()
    summary = Syncer(tmp_path, settings=FAST).run_once()
    assert summary.complete
    assert time.monotonic() - t0 >= 0.05  # Retry-After honoured
    assert len([e for e in memory.STORE["s"]["events"][run.id] if e.kind == "metric"]) == 10


def test_permanent_refusals_become_dead_letters_and_the_rest_goes_on(tmp_path):
    run = _run(tmp_path, n=5)
    run.set_tag("bad", "x")
    run.finish()
    memory.STORE["s"]["reject"] = {("tag", "bad"): "tag refused by backend"}
    summary = Syncer(tmp_path, settings=FAST).run_once()
    r = summary.results[0]
    assert (r.dead, r.pending) == (1, 0)
    status = spool_status(tmp_path)[0].backends[0]
    assert (status.dead, status.pending, status.delivered) == (1, 0, status.total - 1)
    store = StateStore(tmp_path)
    [dl] = store.dead_letters()
    assert dl.reason == "tag refused by backend"
    store.close()
    # the cause is fixed: --retry-dead delivers it and clears the letter
    memory.STORE["s"]["reject"] = {}
    Syncer(tmp_path, settings=FAST, retry_dead=True).run_once()
    assert spool_status(tmp_path)[0].backends[0].dead == 0
    assert any(e.kind == "tag" for e in memory.STORE["s"]["events"][run.id])


def test_whole_batch_permanent(tmp_path):
    run = _run(tmp_path, n=3)
    run.finish()
    memory.STORE["s"]["faults"] = [ExportResult.permanent("schema refused")]
    r = Syncer(tmp_path, settings=FAST).run_once().results[0]
    assert r.dead >= 3 and r.pending == 0


def test_a_failing_backend_is_paused_and_others_progress(tmp_path):
    run = bridge.init(project="p", dir=tmp_path, sync="offline",
                      backends=[{"name": "memory", "store": "down", "id": "down"},
                                {"name": "memory", "store": "up", "id": "up"}])
    for i in range(20):
        run.log({"x": float(i)})
    run.finish()
    memory.STORE["down"]["faults"] = [ExportResult.retry("503")] * 100
    summary = Syncer(tmp_path, settings=FAST).run_once()
    by = {r.backend: r for r in summary.results}
    assert by["up"].pending == 0 and by["up"].error is None
    assert by["down"].pending > 0 and "retries exhausted" in by["down"].error
    assert not summary.complete
    assert spool_status(tmp_path)[0].backends[0].last_error.startswith("retries exhausted")
    memory.STORE["down"]["faults"] = []
    assert Syncer(tmp_path, settings=FAST).run_once().complete
    assert len(memory.STORE["down"]["events"][run.id]) == len(memory.STORE["up"]["events"][run.id])


def test_cursor_advances_only_after_confirmation(tmp_path):
    run = _run(tmp_path, n=1000)
    run.finish()

    class Boom(Exception):
        pass

    calls = {"n": 0}
    original = memory.MemoryAdapter.export

    def flaky(self, info, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Boom("network died mid-batch")
        return original(self, info, batch)

    memory.MemoryAdapter.export = flaky
    try:
        Syncer(tmp_path, settings=AgentSettings(retry_attempts=1)).run_once()
    finally:
        memory.MemoryAdapter.export = original
    first = len(memory.STORE["s"]["events"][run.id])
    assert first == 500  # the first batch only
    Syncer(tmp_path, settings=FAST).run_once()
    steps = [e.step for e in memory.STORE["s"]["events"][run.id] if e.kind == "metric"]
    assert steps == list(range(1000))  # nothing skipped, nothing twice


def test_open_run_transient_error_is_retried(tmp_path):
    run = _run(tmp_path, n=2)
    run.finish()
    original = memory.MemoryAdapter.open_run
    fails = {"n": 2}

    def open_run(self, info):
        if fails["n"]:
            fails["n"] -= 1
            raise TransientError("connection refused")
        return original(self, info)

    memory.MemoryAdapter.open_run = open_run
    try:
        assert Syncer(tmp_path, settings=FAST).run_once().complete
    finally:
        memory.MemoryAdapter.open_run = original


def test_adapter_state_is_saved_with_the_cursor(tmp_path):
    run = _run(tmp_path, n=3)
    run.finish()
    original = memory.MemoryAdapter.export

    def export(self, info, batch):
        info.state["seen"] = info.state.get("seen", 0) + len(batch)
        return original(self, info, batch)

    memory.MemoryAdapter.export = export
    try:
        Syncer(tmp_path, settings=FAST).run_once()
    finally:
        memory.MemoryAdapter.export = original
    store = StateStore(tmp_path)
    assert store.adapter_state("memory", run.id)["seen"] == spool_status(tmp_path)[0].events
    store.close()


def test_live_lease_blocks_a_second_agent(tmp_path):
    run = _run(tmp_path, n=3)
    run.finish()
    store = StateStore(tmp_path)
    assert store.acquire_lease(run.id, "otherhost:1:abc", 60)
    store.close()
    r = Syncer(tmp_path, settings=FAST).run_once().results[0]
    assert r.skipped == "leased by another agent" and r.pending > 0
    store = StateStore(tmp_path)
    store.release_lease(run.id, "otherhost:1:abc")
    store.close()
    assert Syncer(tmp_path, settings=FAST).run_once().complete


def test_dead_holder_on_this_host_frees_the_lease(tmp_path):
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = _run(tmp_path, n=3)
    run.finish()
    store = StateStore(tmp_path)
    store.acquire_lease(run.id, f"{socket.gethostname()}:{dead.pid}:x", 600)
    store.close()
    assert Syncer(tmp_path, settings=FAST).run_once().complete


def test_two_agents_in_parallel_deliver_each_event_once(tmp_path):
    runs = [_run(tmp_path, n=800) for _ in range(3)]
    for r in runs:
        r.finish()
    barrier = threading.Barrier(2)

    def agent():
        barrier.wait()
        for _ in range(3):
            Syncer(tmp_path, settings=FAST).run_once()

    threads = [threading.Thread(target=agent) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in runs:
        uids = [e.uid for e in memory.STORE["s"]["events"][r.id]]
        assert len(uids) == len(set(uids)) == spool_status(tmp_path)[0].events


def test_background_sync_while_training(tmp_path):
    run = bridge.init(project="p", dir=tmp_path, sync="background",
                      backends=[{"name": "memory", "store": "bg"}])
    for i in range(3000):
        run.log({"loss": float(i)}, step=i)
        if i == 1500:
            run.flush()
    run.finish(timeout=60)
    evs = [e for e in memory.STORE["bg"]["events"][run.id] if e.kind == "metric"]
    assert [e.step for e in evs] == list(range(3000))
    assert memory.STORE["bg"]["runs"][run.id]["status"] == "FINISHED"
    assert spool_status(tmp_path)[0].backends[0].pending == 0


def test_dry_run_delivers_nothing(tmp_path):
    run = _run(tmp_path, n=7)
    run.finish()
    r = Syncer(tmp_path, settings=FAST, dry_run=True).run_once().results[0]
    assert r.pending > 0
    assert not memory.STORE.get("s", {}).get("events")
