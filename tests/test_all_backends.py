"""One spool, four backends: MLflow (embedded store), W&B, Neptune and Comet (offline files
written by their real SDKs). The same history must arrive everywhere, read back from each
vendor's own format; what a backend refuses must show in `bridge status`; a `bridge sync`
SIGKILLed at random points and rerun adds nothing twice."""

from __future__ import annotations

import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bridge
from bridge.agent.state import StateStore
from bridge.agent.status import spool_status
from bridge.spool.reader import iter_events, list_runs

pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytest.importorskip("neptune")
pytest.importorskip("comet_ml")

sys.path.insert(0, str(Path(__file__).parent / "adapters"))
import comet_readback  # noqa: E402
import neptune_readback  # noqa: E402
import wandb_readback  # noqa: E402

from mlflow_server import wait_until  # noqa: E402


@pytest.fixture(autouse=True)
def offline_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COMET_API_KEY", "dummy")
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)


def _backends(out: Path) -> list[dict]:
    return [
        {"name": "mlflow"},
        {"name": "wandb", "mode": "offline", "dir": str(out / "wandb")},
        {"name": "neptune", "mode": "offline", "data_dir": str(out / "neptune")},
        {"name": "comet", "mode": "offline", "offline_directory": str(out / "comet")},
    ]


RANK = textwrap.dedent("""
    import sys, bridge
    run = bridge.init(run_id=sys.argv[1], resume="allow", dir=sys.argv[2], sync="offline",
                      node="rank1")
    for step in range(0, 60, 2):
        run.log({"rank1/loss": 1.0 / (step + 1)}, step=step)
    run.finish()
""")


def _expected(spool: Path, run_id: str) -> dict[str, list[tuple[int, int, float]]]:
    rec = [r for r in list_runs(spool) if r.run_id == run_id][0]
    out: dict[str, list] = {}
    for e in iter_events(rec.files, run_id):
        if e.kind == "metric":
            out.setdefault(e.key, []).append((e.step, e.ts_ms, e.value))
    return out


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _check_mlflow(spool: Path, run_id: str, expected: dict) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{spool / 'mlflow.db'}")
    exp = client.get_experiment_by_name("multi")
    [remote] = client.search_runs([exp.experiment_id], f"tags.`bridge.run_id` = '{run_id}'")
    for key, points in expected.items():
        got = sorted((m.step, m.timestamp, m.value)
                     for m in client.get_metric_history(remote.info.run_id, key))
        assert len(got) == len(points), key
        # MLflow's SQL store keeps ±inf as ±max float (docs/fidelity.md)
        want = [(s, t, math.copysign(sys.float_info.max, v) if math.isinf(v) else v)
                for s, t, v in sorted(points)]
        assert all(g[:2] == w[:2] and _same(g[2], w[2]) for g, w in zip(got, want)), key
    assert remote.data.params["lr"] == "0.001"
    assert remote.info.status == "FINISHED"


def _check_wandb(out: Path, run_id: str, expected: dict) -> None:
    rb = wandb_readback.read_back(out / "wandb", run_id)
    for key, points in expected.items():
        got = sorted((s, round(ts * 1000), v) for s, ts, v in rb.points(key))
        assert len(got) == len(points), key
        assert all(g[:2] == w[:2] and _same(g[2], w[2]) for g, w in zip(got, sorted(points)))
    assert rb.config["lr"] == 0.001
    assert rb.exit_code == 0


def _check_comet(out: Path, run_id: str, expected: dict) -> None:
    arch = comet_readback.merged(comet_readback.read_archives(out / "comet", run_id))
    for key, points in expected.items():
        got = sorted((p.step, p.timestamp, p.value) for p in arch.metrics if p.name == key)
        assert len(got) == len(points), key
        assert all(g[:2] == w[:2] and _same(g[2], w[2]) for g, w in zip(got, sorted(points)))
    assert str(arch.params["lr"]) == "0.001"


def _check_neptune(out: Path, run_id: str, expected: dict, refused: set) -> None:
    runs = neptune_readback.runs_for(out / "neptune" / ".neptune", run_id) or \
        neptune_readback.runs_for(out / "neptune", run_id)
    assert runs, "no Neptune offline run carries the bridge id"
    series: dict[str, list] = {}
    for r in runs:
        for key, pts in r.series.items():
            series.setdefault(key, []).extend(pts)
    for key, points in expected.items():
        want = sorted(p for p in points if (key, p[0]) not in refused)
        got = sorted((int(p.step), round(p.ts * 1000), p.value) for p in series.get(key, []))
        assert len(got) == len(want), key
        assert all(g[:2] == w[:2] and _same(g[2], w[2]) for g, w in zip(got, want))


def _log_run(spool: Path, out: Path) -> str:
    run = bridge.init(project="multi", dir=spool, sync="offline", backends=_backends(out),
                      config={"lr": 0.001, "arch": {"layers": 4}}, tags={"suite": "e2e"},
                      node="rank0")
    run.flush()
    child = subprocess.run([sys.executable, "-c", RANK, run.id, str(spool)], timeout=120)
    assert child.returncode == 0
    for step in range(60):
        run.log({"train/loss": 1.0 / (step + 1), "train/acc": step / 60.0}, step=step)
        if step % 20 == 19:
            run.log({"val/loss": 0.5 / (step + 1)}, step=step - 10)  # an earlier step
    run.log({"odd": math.inf}, step=60)
    run.summary["best"] = 0.75
    run.finish()
    return run.id


def test_same_history_in_every_backend(tmp_path):
    spool, out = tmp_path / "spool", tmp_path / "out"
    run_id = _log_run(spool, out)
    sync = [sys.executable, "-m", "bridge.cli.main", "sync", str(spool)]
    # A wandb service another test started in this process publishes its address in
    # WANDB_SERVICE; the syncs must start their own, as a user's `bridge sync` does.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    first = subprocess.run(sync, capture_output=True, text=True, timeout=600, env=env)
    expected = _expected(spool, run_id)
    statuses = {b.backend: b for b in spool_status(spool)[0].backends}
    # Neptune demands strictly increasing steps per series and refuses inf: visible dead letters
    store = StateStore(spool)
    dead = store.dead_letters("neptune", run_id)
    store.close()
    assert dead and all(d.reason for d in dead)
    assert statuses["neptune"].dead == len(dead) and statuses["neptune"].pending == 0
    for name in ("mlflow", "wandb", "comet"):
        assert (statuses[name].pending, statuses[name].dead) == (0, 0), (name, first.stdout)
    assert first.returncode == 0, first.stdout + first.stderr
    refused = set()
    conn_rows = {}
    for f in list_runs(spool)[0].files:
        conn = sqlite3.connect(f.path)
        for seq, key, step in conn.execute("SELECT seq, key, step FROM events"):
            conn_rows[(f.file_id, seq)] = (key, step)
        conn.close()
    for d in dead:
        refused.add(conn_rows[(d.file_id, d.seq)])
    _check_mlflow(spool, run_id, expected)
    _check_wandb(out, run_id, expected)
    _check_comet(out, run_id, expected)
    _check_neptune(out, run_id, expected, refused)
    # a second sync has nothing to add anywhere
    again = subprocess.run(sync, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    _check_mlflow(spool, run_id, expected)
    _check_wandb(out, run_id, expected)
    _check_comet(out, run_id, expected)
    _check_neptune(out, run_id, expected, refused)


KILLS = int(os.environ.get("BRIDGE_TEST_OFFLINE_SYNC_KILLS", "4"))


def test_sync_killed_at_random_points_then_rerun(tmp_path):
    seed = int(os.environ.get("BRIDGE_TEST_SEED", random.SystemRandom().randrange(1 << 30)))
    rng = random.Random(seed)
    spool, out = tmp_path / "spool", tmp_path / "out"
    backends = [b for b in _backends(out) if b["name"] != "neptune"]
    run = bridge.init(project="multi", dir=spool, sync="offline", backends=backends,
                      config={"lr": 0.001})
    for step in range(30_000):
        run.log({"a": float(step), "b": step * 0.25}, step=step)
    run.finish()

    def delivered() -> int:
        try:
            conn = sqlite3.connect(spool / "state.db")
            try:
                return conn.execute("SELECT coalesce(sum(seq), 0) FROM cursors").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error:
            return 0

    sync = [sys.executable, "-m", "bridge.cli.main", "sync", str(spool)]
    # A wandb service another test started in this process publishes its address in
    # WANDB_SERVICE; the syncs must start their own, as a user's `bridge sync` does.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    kills = 0
    for _ in range(KILLS):
        before = delivered()
        proc = subprocess.Popen(sync, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env)
        target = before + rng.randint(1, 20_000)
        wait_until(lambda: delivered() >= target or proc.poll() is not None, 300)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run(sync + ["--json"], capture_output=True, text=True, timeout=600,
                           env=env)
    assert final.returncode == 0, f"seed {seed}: {final.stdout}{final.stderr}"
    assert kills >= 1, f"seed {seed}: no sync was killed mid-way"
    expected = _expected(spool, run.id)
    try:
        _check_mlflow(spool, run.id, expected)
        _check_wandb(out, run.id, expected)
        _check_comet(out, run.id, expected)
    except AssertionError as exc:
        raise AssertionError(f"{exc} (replay with BRIDGE_TEST_SEED={seed})") from exc
