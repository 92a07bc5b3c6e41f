"""The whole path against a real `mlflow server`: bridge.init -> spool -> agent -> MLflow,
read back through MlflowClient. Outages, faults, kills and two agents included."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

import bridge
from bridge.agent.state import StateStore
from bridge.agent.status import spool_status
from bridge.agent.sync import Syncer
from bridge.config import AgentSettings
from bridge.spool.reader import iter_events, list_runs

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from mlflow_server import wait_until  # noqa: E402

FAST = AgentSettings(retry_initial=0.05, retry_max=0.5, retry_attempts=6)


@pytest.fixture(autouse=True)
def quick_http(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def _backend(url, **kw):
    return [{"name": "mlflow", "tracking_uri": url, **kw}]


def _remote(client, project, run_id):
    exp = client.get_experiment_by_name(project)
    runs = client.search_runs([exp.experiment_id], f"tags.`bridge.run_id` = '{run_id}'",
                              run_view_type=mlflow.entities.ViewType.ALL)
    assert len(runs) == 1, f"{len(runs)} MLflow runs for bridge run {run_id}"
    return runs[0]


def _spool_metrics(spool, run_id):
    rec = [r for r in list_runs(spool) if r.run_id == run_id][0]
    out = {}
    for e in iter_events(rec.files, run_id):
        if e.kind == "metric":
            out.setdefault(e.key, []).append((e.step or 0, e.ts_ms, e.value))
    return out


def _assert_same_history(client, remote_id, expected):
    for key, points in expected.items():
        got = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(remote_id, key))
        want = sorted(points)
        assert len(got) == len(want), key
        for (s1, t1, v1), (s2, t2, v2) in zip(got, want):
            assert (s1, t1) == (s2, t2)
            assert v1 == v2 or (math.isnan(v1) and math.isnan(v2)), (key, s1, v1, v2)


def test_round_trip_every_field(tmp_path, mlflow_server):
    art = tmp_path / "weights.bin"
    art.write_bytes(os.urandom(3000))
    run = bridge.init(project="e2e-roundtrip", name="rt", dir=tmp_path / "spool", sync="offline",
                      backends=_backend(mlflow_server.url), notes="about this run", group="g1",
                      config={"lr": 0.01, "optimizer": {"name": "adam", "beta1": 0.9}},
                      tags={"team": "vision"})
    for i in range(2500):
        run.log({"loss": 1.0 / (i + 1), "acc": i / 2500}, step=i)
    run.log({"nan": math.nan}, step=2500)
    run.log_metric("val", 0.5, step=7, timestamp=1_700_000_000_000)
    run.summary["best_acc"] = 0.99
    run.log_artifact(art, name="model")
    run.log_text("hello", "notes/readme.txt")
    run.finish()
    summary = Syncer(tmp_path / "spool", settings=FAST).run_once()
    assert summary.complete, summary
    client = MlflowClient(mlflow_server.url)
    remote = _remote(client, "e2e-roundtrip", run.id)
    assert remote.info.run_name == "rt"
    assert remote.info.status == "FINISHED"
    rec = list_runs(tmp_path / "spool")[0]
    assert remote.info.start_time == rec.start_ms and remote.info.end_time == rec.end_ms
    assert remote.data.params == {"lr": "0.01", "optimizer.name": "adam", "optimizer.beta1": "0.9"}
    tags = remote.data.tags
    assert tags["team"] == "vision" and tags["bridge.run_id"] == run.id
    assert tags["mlflow.note.content"] == "about this run" and tags["bridge.group"] == "g1"
    assert json.loads(tags["summary.best_acc"]) == 0.99
    _assert_same_history(client, remote.info.run_id, _spool_metrics(tmp_path / "spool", run.id))
    local = client.download_artifacts(remote.info.run_id, "model/weights.bin", str(tmp_path / "dl"))
    assert open(local, "rb").read() == art.read_bytes()
    text = client.download_artifacts(remote.info.run_id, "notes/readme.txt", str(tmp_path / "dl"))
    assert open(text).read() == "hello"
    # status tells the truth
    [st] = spool_status(tmp_path / "spool")
    [b] = st.backends
    assert (b.pending, b.dead, b.delivered, b.remote_id) == (0, 0, st.events, remote.info.run_id)


def test_embedded_store_is_the_default(tmp_path):
    spool = tmp_path / "spool"
    with bridge.init(project="embedded", dir=spool, sync="offline", backends=["mlflow"]) as run:
        run.log({"x": 1.0}, step=0)
    assert Syncer(spool, settings=FAST).run_once().complete
    client = MlflowClient(f"sqlite:///{spool / 'mlflow.db'}")
    remote = _remote(client, "embedded", run.id)
    assert [m.value for m in client.get_metric_history(remote.info.run_id, "x")] == [1.0]


def test_a_down_backend_does_not_hold_another_back(tmp_path, mlflow_server):
    from mlflow_server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    spool = tmp_path / "spool"
    with bridge.init(project="e2e-down", dir=spool, sync="offline",
                     backends=[{"name": "mlflow", "id": "dead", "tracking_uri": dead},
                               {"name": "mlflow", "id": "live", "tracking_uri": mlflow_server.url}]
                     ) as run:
        for i in range(50):
            run.log({"x": float(i)}, step=i)
    t0 = time.monotonic()
    summary = Syncer(spool, settings=AgentSettings(retry_initial=0.01, retry_max=0.05,
                                                   retry_attempts=3)).run_once()
    assert time.monotonic() - t0 < 60
    by = {r.backend: r for r in summary.results}
    assert by["live"].pending == 0 and by["live"].error is None
    assert by["dead"].pending > 0 and "retries exhausted" in by["dead"].error
    client = MlflowClient(mlflow_server.url)
    remote = _remote(client, "e2e-down", run.id)
    assert len(client.get_metric_history(remote.info.run_id, "x")) == 50


def test_changed_param_is_a_dead_letter_the_rest_arrives(tmp_path, mlflow_server):
    spool = tmp_path / "spool"
    with bridge.init(project="e2e-param", dir=spool, sync="offline",
                     backends=_backend(mlflow_server.url)) as run:
        run.log_param("lr", 0.1)
        run.log({"x": 1.0}, step=0)
        run.log_param("lr", 0.2)  # MLflow params are immutable
        run.log({"x": 2.0}, step=1)
    summary = Syncer(spool, settings=FAST).run_once()
    assert summary.results[0].dead == 1 and summary.results[0].pending == 0
    [b] = spool_status(spool)[0].backends
    assert b.dead == 1
    store = StateStore(spool)
    [dl] = store.dead_letters()
    store.close()
    assert "INVALID_PARAMETER_VALUE" in dl.reason or "Changing param values" in dl.reason
    from typer.testing import CliRunner

    from bridge.cli.main import app

    out = CliRunner().invoke(app, ["status", "--dead", "--dir", str(spool)], env={"COLUMNS": "250"})
    assert "lr" in out.output or "param" in out.output.lower()
    client = MlflowClient(mlflow_server.url)
    remote = _remote(client, "e2e-param", run.id)
    assert remote.data.params == {"lr": "0.1"}
    assert [m.value for m in client.get_metric_history(remote.info.run_id, "x")] == [1.0, 2.0]


def test_server_stopped_mid_sync_and_restarted(tmp_path, mlflow_server):
    spool = tmp_path / "spool"
    with bridge.init(project="e2e-outage", dir=spool, sync="offline",
                     backends=_backend(mlflow_server.url)) as run:
        for i in range(30_000):
            run.log({"loss": float(i)}, step=i)
    stop = threading.Event()
    syncer = Syncer(spool, settings=AgentSettings(retry_initial=0.05, retry_max=0.2,
                                                  retry_attempts=1000), stop=stop)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("s", syncer.run_once()))
    t.start()

    def delivered():
        store = StateStore(spool)
        try:
            return sum(store.cursors("mlflow", run.id).values())
        finally:
            store.close()

    assert wait_until(lambda: delivered() > 0, 60)
    mlflow_server.stop()
    time.sleep(0.5)  # let a few attempts fail against the closed port
    mlflow_server.start()
    t.join(timeout=240)
    assert not t.is_alive()
    assert result["s"].complete, repr(result["s"].results[0])
    client = MlflowClient(mlflow_server.url)
    remote = _remote(client, "e2e-outage", run.id)
    _assert_same_history(client, remote.info.run_id, _spool_metrics(spool, run.id))


def test_fault_proxy_429_500_reset_stall(tmp_path, fault_proxy):
    spool = tmp_path / "spool"
    with bridge.init(project="e2e-faults", dir=spool, sync="offline",
                     backends=_backend(fault_proxy.url)) as run:
        for i in range(3000):
            run.log({"m": float(i)}, step=i)
    fault_proxy.respond(429, retry_after=0.3, path="log-batch")
    fault_proxy.respond(500, path="log-batch")
    fault_proxy.reset(path="log-batch")
    fault_proxy.stall(7, path="log-batch")  # beyond the 5 s client timeout
    fault_proxy.truncate(path="log-batch")
    summary = Syncer(spool, settings=FAST).run_once()
    assert summary.complete, summary
    assert fault_proxy.pending == 0  # every scripted fault was hit
    client = MlflowClient(fault_proxy.url)
    remote = _remote(client, "e2e-faults", run.id)
    _assert_same_history(client, remote.info.run_id, _spool_metrics(spool, run.id))


SYNC_KILLS = int(os.environ.get("BRIDGE_TEST_SYNC_KILLS", "20"))


def test_bridge_sync_sigkilled_at_random_points(tmp_path, mlflow_server):
    seed = int(os.environ.get("BRIDGE_TEST_SEED", random.SystemRandom().randrange(1 << 30)))
    rng = random.Random(seed)
    spool = tmp_path / "spool"
    ids = []
    for r in range(2):
        with bridge.init(project="e2e-kill", dir=spool, sync="offline",
                         backends=_backend(mlflow_server.url)) as run:
            run.log_param("r", r)
            for i in range(15_000):
                run.log({"a": float(i), "b": i * 0.5}, step=i)
        ids.append(run.id)
    total = sum(st.events for st in spool_status(spool))
    env = {**os.environ, "BRIDGE_AGENT_RETRY_INITIAL": "0.05"}

    def delivered():
        conn = sqlite3.connect(spool / "state.db")
        try:
            return conn.execute("SELECT coalesce(sum(seq), 0) FROM cursors").fetchone()[0]
        except sqlite3.Error:
            return 0
        finally:
            conn.close()

    kills = 0
    for k in range(SYNC_KILLS):
        before = delivered()
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli.main", "sync", str(spool)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = before + rng.randint(1, 8000)
        wait_until(lambda: delivered() >= target or proc.poll() is not None, 120)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run([sys.executable, "-m", "bridge.cli.main", "sync", str(spool)],
                           env=env, capture_output=True, text=True)
    assert final.returncode == 0, f"seed {seed}: {final.stdout}{final.stderr}"
    assert kills >= 1, f"seed {seed}: no sync was killed mid-way"
    client = MlflowClient(mlflow_server.url)
    for run_id in ids:
        remote = _remote(client, "e2e-kill", run_id)  # exactly one MLflow run each
        _assert_same_history(client, remote.info.run_id, _spool_metrics(spool, run_id))
        assert remote.info.status == "FINISHED"
    assert sum(b.delivered for st in spool_status(spool) for b in st.backends) == total


def test_two_agents_on_one_directory(tmp_path, mlflow_server):
    spool = tmp_path / "spool"
    ids = []
    for r in range(4):
        with bridge.init(project="e2e-agents", dir=spool, sync="offline",
                         backends=_backend(mlflow_server.url)) as run:
            for i in range(2000):
                run.log({"v": float(i)}, step=i)
        ids.append(run.id)
    procs = [subprocess.Popen([sys.executable, "-m", "bridge.cli.main", "agent", str(spool),
                               "--once"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # whatever one agent skipped (leased by the other) a last pass delivers
    assert Syncer(spool, settings=FAST).run_once().complete
    client = MlflowClient(mlflow_server.url)
    for run_id in ids:
        remote = _remote(client, "e2e-agents", run_id)
        _assert_same_history(client, remote.info.run_id, _spool_metrics(spool, run_id))


def test_background_sync_while_training(tmp_path, mlflow_server):
    spool = tmp_path / "spool"
    run = bridge.init(project="e2e-background", dir=spool, backends=_backend(mlflow_server.url))
    for i in range(5000):
        run.log({"loss": 1.0 / (i + 1)}, step=i)
        if i % 1000 == 0:
            run.flush()
    run.finish(timeout=120)
    [b] = spool_status(spool)[0].backends
    assert b.pending == 0 and b.closed
    client = MlflowClient(mlflow_server.url)
    remote = _remote(client, "e2e-background", run.id)
    assert remote.info.status == "FINISHED"
    _assert_same_history(client, remote.info.run_id, _spool_metrics(spool, run.id))


def test_child_runs_nest_under_their_parent(tmp_path):
    spool = tmp_path / "spool"
    with bridge.init(project="nested", dir=spool, sync="offline", backends=["mlflow"]) as parent:
        parent.log({"x": 1.0}, step=0)
    with bridge.init(project="nested", dir=spool, sync="offline", backends=["mlflow"],
                     tags={"bridge.parent_run_id": parent.id}) as child:
        child.log({"x": 2.0}, step=0)
    assert Syncer(spool, settings=FAST).run_once().complete
    client = MlflowClient(f"sqlite:///{spool / 'mlflow.db'}")
    remote_parent = _remote(client, "nested", parent.id)
    remote_child = _remote(client, "nested", child.id)
    assert remote_child.data.tags["mlflow.parentRunId"] == remote_parent.info.run_id


def test_long_outage_while_training_logs(tmp_path, mlflow_server):
    """The server is down while the loop logs: log() never waits for it (the loop finishes
    during the outage), the agent backs off, and everything arrives after the restart."""
    spool = tmp_path / "spool"
    mlflow_server.stop()
    run = bridge.init(project="e2e-long-outage", dir=spool, backends=_backend(mlflow_server.url),
                      agent={"retry_initial": 0.05, "retry_max": 0.5, "retry_attempts": 1000})
    samples = []
    for i in range(20_000):
        t0 = time.perf_counter_ns()
        run.log({"loss": 1.0 / (i + 1)}, step=i)
        samples.append(time.perf_counter_ns() - t0)
    run.flush()
    [before] = spool_status(spool)[0].backends
    assert before.delivered == 0 and before.pending >= 20_000  # all logged, nothing sent
    samples.sort()
    print(f"log() during the outage: median {samples[len(samples) // 2] / 1000:.2f} us, "
          f"p99 {samples[int(len(samples) * 0.99)] / 1000:.2f} us")
    mlflow_server.start()
    run.finish(timeout=180)
    [b] = spool_status(spool)[0].backends
    assert b.pending == 0 and b.closed
    client = MlflowClient(mlflow_server.url)
    remote = _remote(client, "e2e-long-outage", run.id)
    _assert_same_history(client, remote.info.run_id, _spool_metrics(spool, run.id))
