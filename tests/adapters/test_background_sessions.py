"""Background sync paces W&B sessions and Comet offline archives (agent.session_interval).

Real SDKs offline; what they wrote is read back with the vendors' own formats
(``wandb_readback``, ``comet_readback``). Timing only paces the training loop: every
assertion waits on a condition (a paced delivery happened, a fragment appeared) and the
bounds are computed from the elapsed time, never from a sleep.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import pytest

pytest.importorskip("wandb")
pytest.importorskip("comet_ml")

import bridge  # noqa: E402
from bridge.agent.sync import Syncer  # noqa: E402
from bridge.spool.reader import find_run, iter_events  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import comet_readback as rb  # noqa: E402
from wandb_readback import fragments, read_back  # noqa: E402

SESSION_INTERVAL = 1.5  # seconds: small, so several paced deliveries fit in a short test


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No vendor file or setting outside tmp_path, no key, no network."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BRIDGE_CONFIG", str(tmp_path / "no-such-bridge.toml"))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-env" / var.lower()))
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME",
                "COMET_OFFLINE_DIRECTORY", "COMET_PROJECT_NAME", "COMET_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("COMET_API_KEY", "dummy")
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")
    for var in [v for v in os.environ if v.startswith("BRIDGE_AGENT_")]:
        monkeypatch.delenv(var)
    from bridge.adapters import memory

    memory.STORE.pop("bg-sessions", None)


def backends(tmp_path: Path) -> list[dict]:
    return [
        {"name": "wandb", "mode": "offline", "dir": str(tmp_path / "wb"), "project": "bg"},
        {"name": "comet", "mode": "offline", "offline_directory": str(tmp_path / "cm")},
        {"name": "memory", "store": "bg-sessions"},
    ]


def archives(tmp_path: Path, run_id: str) -> list[Path]:
    return sorted((tmp_path / "cm").glob(f"{run_id}-*.zip"))


def train_until(run: "bridge.Run", done: Callable[[], bool], deadline_s: float = 180.0) -> int:
    """Log one point every ~2 ms (a training loop) until ``done()``; return the count."""
    start = time.monotonic()
    i = 0
    while not done():
        assert time.monotonic() - start < deadline_s, "condition never met"
        run.log({"loss": 1.0 / (i + 1), "acc": float(i)}, step=i)
        i += 1
        time.sleep(0.002)  # pacing of the simulated training step, not a correctness wait
    return i


def assert_exactly_once(tmp_path: Path, run_id: str, steps: int) -> None:
    back = read_back(tmp_path / "wb", run_id)
    for key in ("loss", "acc"):
        assert [s for s, _, _ in back.points(key)] == list(range(steps)), key
    assert [v for _, _, v in back.points("acc")] == [float(i) for i in range(steps)]
    merged = rb.merged(rb.read_archives(tmp_path / "cm", run_id))
    for key in ("loss", "acc"):
        got = sorted(p.step for p in merged.metrics if p.name == key)
        assert got == list(range(steps)), key
    assert all(math.isclose(p.value, 1.0 / (p.step + 1)) for p in merged.metrics
               if p.name == "loss")


def test_background_sync_bounds_sessions_and_delivers_each_point_once(tmp_path: Path) -> None:
    t0 = time.monotonic()
    run = bridge.init(project="bg", dir=tmp_path / "spool", backends=backends(tmp_path),
                      config={"lr": 0.5}, agent={"session_interval": SESSION_INTERVAL})
    bg = run._sync
    # Train across several paced deliveries; the memory backend (no vendor session) keeps
    # being delivered every pass in between.
    steps = train_until(run, lambda: bg.paced_passes >= 4 and bool(fragments(tmp_path / "wb", run.id)))
    assert sorted(bg.paced_backends) == ["comet", "wandb"]
    run.finish(timeout=120)
    elapsed = time.monotonic() - t0
    # Paced deliveries happen at most once per interval; each wrote one fragment and one
    # archive (an interval holds far fewer events than one batch), the final drain one more
    # (its last export also closes the run: no separate closing session).
    bound = int(elapsed / SESSION_INTERVAL) + 1
    n_frag, n_arch = len(fragments(tmp_path / "wb", run.id)), len(archives(tmp_path, run.id))
    assert 2 <= n_frag <= bg.paced_passes + 1 <= bound, (n_frag, bg.paced_passes, bound)
    assert 2 <= n_arch <= bg.paced_passes + 1 <= bound, (n_arch, bg.paced_passes, bound)
    assert_exactly_once(tmp_path, run.id, steps)
    back = read_back(tmp_path / "wb", run.id)
    assert back.exit_code == 0 and back.config.get("lr") == 0.5  # the last export closed it
    assert rb.merged(rb.read_archives(tmp_path / "cm", run.id)).others["bridge_status"] == "FINISHED"
    from bridge.adapters import memory

    calls = [c for c in memory.STORE["bg-sessions"]["calls"] if c[0] == "export"]
    assert len(calls) > bg.paced_passes  # the eager backend was not held back


def test_first_paced_delivery_waits_one_interval_and_finish_delivers_at_once(
        tmp_path: Path) -> None:
    """An interval longer than the run: nothing is written while it trains (the eager
    backend is delivered meanwhile), one fragment and one archive at finish."""
    run = bridge.init(project="bg", dir=tmp_path / "spool", backends=backends(tmp_path),
                      agent={"session_interval": 3600})
    from bridge.adapters import memory

    store = memory.STORE["bg-sessions"]
    steps = train_until(run, lambda: len(store.get("events", {}).get(run.id, [])) >= 200)
    assert not fragments(tmp_path / "wb", run.id) and not archives(tmp_path, run.id)
    run.finish(timeout=120)
    assert len(fragments(tmp_path / "wb", run.id)) == 1
    assert len(archives(tmp_path, run.id)) == 1
    assert_exactly_once(tmp_path, run.id, steps)


def test_session_interval_is_a_checked_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.config import load
    from bridge.errors import ConfigError

    assert load().agent.session_interval == 300.0
    monkeypatch.setenv("BRIDGE_AGENT_SESSION_INTERVAL", "42")
    assert load().agent.session_interval == 42.0
    with pytest.raises(ConfigError, match="session_interval"):
        load(agent={"session_interval": -1})


def wandb_sync_dry_run(out: Path) -> set[Path]:
    """The fragment dirs the real `wandb sync --dry-run <out>/wandb` would upload."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    cmd = [str(wandb_cli)] if wandb_cli.exists() else [sys.executable, "-m", "wandb"]
    res = subprocess.run([*cmd, "sync", "--dry-run", str(out / "wandb")],
                         capture_output=True, text=True, timeout=120, cwd=out)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    listed = {(out / line.split()[-1]).resolve().parent
              for line in text.splitlines() if line.strip().endswith(".wandb")}
    assert f"Would sync {len(listed)} run(s)" in text, text
    return listed


_CHILD = textwrap.dedent("""
    import sys, time
    import bridge
    spool, wb, cm = sys.argv[1:4]
    run = bridge.init(project="bg", dir=spool, durability="commit", agent={"session_interval": 1.0},
                      backends=[{"name": "wandb", "mode": "offline", "dir": wb, "project": "bg"},
                                {"name": "comet", "mode": "offline", "offline_directory": cm}])
    print(run.id, flush=True)
    i = 0
    while True:  # until SIGKILL
        run.log({"loss": 1.0 / (i + 1), "acc": float(i)}, step=i)
        i += 1
        time.sleep(0.002)
""")


def test_a_killed_training_process_loses_nothing_bridge_sync_delivers_the_rest(
        tmp_path: Path) -> None:
    spool, wb, cm = tmp_path / "spool", tmp_path / "wb", tmp_path / "cm"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(spool), str(wb), str(cm)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        deadline = time.monotonic() + 180
        # Kill once both vendors hold paced deliveries and more is pending behind them.
        while len(fragments(wb, run_id)) < 2 or len(archives(tmp_path, run_id)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)  # polling for the condition
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    rec = find_run(spool, run_id)
    assert rec is not None and rec.status == "RUNNING"
    steps = sorted({ev.step for ev in iter_events(rec.files, run_id, {}, 5000)
                    if ev.kind == "metric" and ev.key == "loss"})
    assert steps == list(range(len(steps))) and len(steps) > 0
    summary = Syncer(spool).run_once()  # what `bridge sync` does
    assert all(r.pending == 0 and r.error is None for r in summary.results), summary.results
    assert_exactly_once(tmp_path, run_id, len(steps))
    # A session the kill cut short was renamed discarded-*: `wandb sync` skips it.
    assert wandb_sync_dry_run(wb) == {f.resolve() for f in fragments(wb, run_id)}


def test_wandb_sync_lists_every_fragment_of_the_run(tmp_path: Path) -> None:
    """The real `wandb sync` CLI, as far as it runs without a server (--dry-run): given the
    adapter's wandb/ folder it picks every complete fragment of the run."""
    run = bridge.init(project="bg", dir=tmp_path / "spool", backends=backends(tmp_path)[:1],
                      agent={"session_interval": 1.0})
    bg = run._sync
    train_until(run, lambda: bg.paced_passes >= 2 and len(fragments(tmp_path / "wb", run.id)) >= 2)
    run.finish(timeout=120)
    frags = fragments(tmp_path / "wb", run.id)
    assert len(frags) >= 3
    assert wandb_sync_dry_run(tmp_path / "wb") == {f.resolve() for f in frags}


# -- the final drain: the last export of an ended run also closes it -----------------------


def _events(run_id: str, n: int, start: int = 0) -> list:
    from bridge.adapters.base import Event

    return [Event("f0", i + 1, run_id, "metric", "loss", i, 1_700_000_000_000 + i, float(i))
            for i in range(start, start + n)]


@pytest.mark.parametrize("status,code", [("FINISHED", 0), ("FAILED", 1), ("KILLED", 137)])
def test_wandb_last_export_of_an_ended_run_closes_it(tmp_path: Path, status: str,
                                                     code: int) -> None:
    from bridge.adapters.base import Limits, RunInfo
    from bridge.adapters.wandb import WandbAdapter

    run_id = "ab" * 16
    run = RunInfo(run_id=run_id, project="bg", status=status, state={})
    a = WandbAdapter(mode="offline", dir=str(tmp_path / "wb"), spool_dir=str(tmp_path))
    a.limits = Limits(max_events=4)  # a full batch is never the last: it does not close
    a.open_run(run)
    assert a.export(run, _events(run_id, 4)).outcome.value == "success"
    assert run.state.get("closed_as") is None
    assert a.export(run, _events(run_id, 2, 4)).outcome.value == "success"
    assert run.state["closed_as"] == status
    a.close_run(run, status, 1_700_000_100_000)  # nothing left to write: no session
    a.shutdown()
    back = read_back(tmp_path / "wb", run_id)
    assert len(back.fragments) == 2 and back.exit_code == code
    assert [s for s, _, _ in back.points("loss")] == list(range(6))


def test_wandb_close_run_writes_its_own_session_when_no_export_closed(tmp_path: Path) -> None:
    from bridge.adapters.base import RunInfo
    from bridge.adapters.wandb import WandbAdapter

    run_id = "cd" * 16
    run = RunInfo(run_id=run_id, project="bg", status="RUNNING", state={})
    a = WandbAdapter(mode="offline", dir=str(tmp_path / "wb"), spool_dir=str(tmp_path))
    a.open_run(run)
    a.export(run, _events(run_id, 3))
    a.close_run(run, "FAILED", 1_700_000_100_000)
    a.shutdown()
    back = read_back(tmp_path / "wb", run_id)
    assert len(back.fragments) == 2 and back.exit_code == 1


def test_comet_last_export_of_an_ended_run_carries_the_status(tmp_path: Path) -> None:
    from bridge.adapters.base import Limits, RunInfo
    from bridge.adapters.comet import CometAdapter

    run_id = "ef" * 16
    run = RunInfo(run_id=run_id, project="bg", status="FAILED", state={})
    a = CometAdapter(mode="offline", offline_directory=str(tmp_path / "cm"))
    a.limits = Limits(max_events=4)
    a.open_run(run)
    assert a.export(run, _events(run_id, 4)).outcome.value == "success"
    assert a.export(run, _events(run_id, 2, 4)).outcome.value == "success"
    a.close_run(run, "FAILED", 1_700_000_100_000)
    a.shutdown()
    found = rb.read_archives(tmp_path / "cm", run_id)
    assert len(found) == 2
    assert "bridge_status" not in found[0].others and found[1].others["bridge_status"] == "FAILED"
    assert sorted(p.step for p in rb.merged(found).metrics) == list(range(6))
    # The closing event is no spool event: the ledger names the six metrics only.
    from bridge.adapters.comet import ledger_uids

    assert set().union(*(ledger_uids(x.ledger) for x in found)) == {("f0", i) for i in range(1, 7)}
