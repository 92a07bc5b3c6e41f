"""System metrics: a sampler thread fills ``system/*`` series and stops with the run."""

from __future__ import annotations

import inspect
import threading
import time

import pytest

import bridge
from bridge.system_metrics import SystemMetricsSampler, start_for
from bridge_readback import events

pytest.importorskip("psutil")

REQUIRED = {"system/cpu/percent", "system/cpu/core_0/percent", "system/memory/used_bytes",
            "system/memory/percent", "system/disk/used_bytes", "system/disk/percent",
            "system/process/rss_bytes", "system/process/cpu_percent"}


def _wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)  # a poll interval, not a wait for the condition
    return cond()


def _system_points(spool, run):
    run.flush()
    return [e for e in events(spool, run.id) if e.kind == "metric" and e.key.startswith("system/")]


def test_sampler_fills_system_series_and_stops(spool):
    run = bridge.init(project="sys")
    sampler = SystemMetricsSampler(run, 0.05).start()
    assert sampler.running
    assert _wait_for(lambda: len({e.ts_ms for e in _system_points(spool, run)
                                  if e.key == "system/cpu/percent"}) >= 2)
    sampler.stop()
    assert not sampler.running
    run.finish()
    points = _system_points(spool, run)
    keys = {e.key for e in points}
    assert REQUIRED <= keys, REQUIRED - keys
    assert all(e.step is None for e in points)  # stepless: never moves the training step
    assert run.step == 0
    rss = [e.value for e in points if e.key == "system/process/rss_bytes"]
    assert min(rss) > 1_000_000
    assert all(0.0 <= e.value <= 100.0 for e in points if e.key.endswith("percent")
               and not e.key.startswith("system/process/"))
    assert not any(k.startswith("system/gpu/") for k in keys)  # no GPU here: skipped quietly
    n = len(points)
    assert len(_system_points(spool, run)) == n  # nothing after finish


def test_sampler_ends_by_itself_when_the_run_finishes(spool):
    run = bridge.init(project="sys")
    sampler = SystemMetricsSampler(run, 0.05).start()
    assert _wait_for(lambda: sampler.samples >= 1)
    run.finish()
    assert _wait_for(lambda: not sampler.running)


def test_sampler_never_raises_into_the_caller():
    class Broken:
        """A run whose logging fails, as a full disk would."""
        dir = None
        _finished = False
        calls = 0

        def log_metrics(self, values):
            Broken.calls += 1
            raise OSError("disk full")

    errors: list = []
    old = threading.excepthook
    threading.excepthook = lambda args: errors.append(args)
    try:
        sampler = SystemMetricsSampler(Broken(), 0.05).start()
        assert _wait_for(lambda: Broken.calls >= 2)
        sampler.stop()
    finally:
        threading.excepthook = old
    assert errors == [] and not sampler.running


def test_start_for_interprets_the_init_argument(spool):
    run = bridge.init(project="sys")
    assert start_for(run, False) is None and start_for(run, None) is None
    assert start_for(run, 0) is None
    s = start_for(run, 0.05)
    assert s is not None and s.interval_s == 0.05
    s.stop()
    s = start_for(run, True)
    assert s.interval_s == 10.0
    s.stop()
    with pytest.raises(bridge.errors.ConfigError):
        start_for(run, "often")
    run.finish()


@pytest.mark.skipif("system_metrics" not in inspect.signature(bridge.init).parameters,
                    reason="bridge.init(system_metrics=...) is not wired in yet")
def test_init_starts_and_finish_stops_the_sampler(spool):
    run = bridge.init(project="sys", system_metrics=0.05)
    assert _wait_for(lambda: any(e.key == "system/memory/percent"
                                 for e in _system_points(spool, run)))
    run.finish()
    n = len(_system_points(spool, run))
    threads = [t for t in threading.enumerate() if t.name == "bridge-system-metrics"]
    assert not any(t.is_alive() for t in threads)
    assert len(_system_points(spool, run)) == n
