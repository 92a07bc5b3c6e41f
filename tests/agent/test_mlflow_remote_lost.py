"""A wiped or replaced MLflow store: bridge notices the mapped run is gone and delivers the
whole run again, into one MLflow run holding every point once; never reports success over
missing data. A real `mlflow server` whose database is deleted between and during syncs,
and the embedded sqlite store deleted between two `bridge sync` processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

import bridge
from bridge.adapters.base import Limits, RemoteRunLost
from bridge.agent.state import StateStore
from bridge.agent.status import spool_status
from bridge.agent.sync import Syncer
from bridge.config import AgentSettings
from bridge.spool.reader import iter_events, list_runs

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

FAST = AgentSettings(retry_initial=0.05, retry_max=0.5, retry_attempts=6)


@pytest.fixture(autouse=True)
def quick_http(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def _wipe(server):
    """The server's database is deleted and the server restarted on it: an empty store."""
    server.stop()
    (server.root / "mlflow.db").unlink()
    server.start()


def _backend(url):
    return [{"name": "mlflow", "tracking_uri": url}]


def _runs(client, project, run_id):
    exp = client.get_experiment_by_name(project)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], f"tags.`bridge.run_id` = '{run_id}'",
                              run_view_type=mlflow.entities.ViewType.ALL)


def _only_run(client, project, run_id):
    runs = _runs(client, project, run_id)
    assert len(runs) == 1, f"{len(runs)} MLflow runs for bridge run {run_id}"
    return runs[0]


def _spool_points(spool, run_id):
    rec = [r for r in list_runs(spool) if r.run_id == run_id][0]
    return sorted((e.key, e.step, e.ts_ms, e.value) for e in iter_events(rec.files, run_id)
                  if e.kind == "metric")


def _remote_points(client, remote_id, keys):
    return sorted((key, m.step, m.timestamp, m.value) for key in keys
                  for m in client.get_metric_history(remote_id, key))


def _assert_exactly_once(client, project, spool, run_id):
    """One MLflow run for the bridge run, holding every logged point exactly once."""
    remote = _only_run(client, project, run_id)
    want = _spool_points(spool, run_id)
    got = _remote_points(client, remote.info.run_id, {p[0] for p in want})
    assert len(got) == len(want) and got == want
    return remote


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bridge.cli.main", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def _status(spool, run_id):
    out = _cli("status", "--json", str(spool))
    assert out.returncode == 0, out.stderr
    [run] = [r for r in json.loads(out.stdout)["runs"] if r["run_id"] == run_id]
    [b] = run["backends"]
    return run, b


def test_wiped_between_two_syncs_the_next_sync_delivers_the_whole_run_again(
        tmp_path, mlflow_server):
    spool = tmp_path / "spool"
    with bridge.init(project="lost-between", dir=spool, sync="offline",
                     backends=_backend(mlflow_server.url)) as run:
        run.log_param("lr", 0.1)
        for i in range(10_000):
            run.log({"loss": 1.0 / (i + 1)}, step=i)
    first = _cli("sync", str(spool))
    assert first.returncode == 0, first.stdout + first.stderr
    client = MlflowClient(mlflow_server.url)
    old = _assert_exactly_once(client, "lost-between", spool, run.id).info.run_id

    _wipe(mlflow_server)
    assert _runs(client, "lost-between", run.id) == []  # MLflow holds 0 of 10,000 points

    # A plain `bridge sync` checks the mapped run (the run is finished and was delivered),
    # finds it gone and delivers the whole run again.
    again = _cli("sync", "--json", str(spool))
    assert again.returncode == 0, again.stdout + again.stderr
    [res] = json.loads(again.stdout)["results"]
    assert res["remote_lost"] and old in res["remote_lost"]
    st, b = _status(spool, run.id)
    assert res["delivered"] == st["events"] > 10_000 and res["pending"] == 0 and res["closed"]
    remote = _assert_exactly_once(client, "lost-between", spool, run.id)
    assert remote.info.run_id != old and res["remote_id"] == remote.info.run_id
    assert remote.data.params == {"lr": "0.1"} and remote.info.status == "FINISHED"
    assert (b["delivered"], b["pending"], b["dead"]) == (st["events"], 0, 0)
    assert b["remote_id"] == remote.info.run_id and b["closed"]

    # The run is there now: the next sync checks it, finds it, and sends nothing.
    quiet = _cli("sync", "--json", str(spool))
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    [res] = json.loads(quiet.stdout)["results"]
    assert res["remote_lost"] is None and res["delivered"] == 0
    _assert_exactly_once(client, "lost-between", spool, run.id)


def test_wiped_while_the_run_goes_on_logging(tmp_path, mlflow_server):
    spool = tmp_path / "spool"
    run = bridge.init(project="lost-running", dir=spool, sync="offline",
                      backends=_backend(mlflow_server.url))
    for i in range(5000):
        run.log({"loss": float(i)}, step=i)
    run.flush()
    first = Syncer(spool, settings=FAST).run_once()
    assert first.results[0].delivered >= 5000 and first.results[0].error is None, first
    _wipe(mlflow_server)
    for i in range(5000, 10_000):
        run.log({"loss": float(i)}, step=i)
    run.finish()
    summary = Syncer(spool, settings=FAST).run_once()
    assert summary.complete, summary
    [res] = summary.results
    assert res.remote_lost is not None
    client = MlflowClient(mlflow_server.url)
    remote = _assert_exactly_once(client, "lost-running", spool, run.id)
    assert len(client.get_metric_history(remote.info.run_id, "loss")) == 10_000
    assert remote.info.status == "FINISHED"


def test_wiped_mid_sync_after_3000_events(tmp_path, mlflow_server):
    """The store is wiped after the first 3,000 events were confirmed: no dead letters, no
    empty run; the run is delivered again from its first event, all in one run."""
    spool = tmp_path / "spool"
    with bridge.init(project="lost-mid-sync", dir=spool, sync="offline",
                     backends=_backend(mlflow_server.url)) as run:
        for i in range(30_000):
            run.log({"loss": float(i)}, step=i)
    wiped = []

    def progress(backend, run_id, done, total):
        # Called on the sync thread after a batch was confirmed and its cursor saved: the
        # sync waits here while the store is wiped, exactly after the first 3,000 events.
        if not wiped and done >= 3000:
            wiped.append(done)
            _wipe(mlflow_server)

    syncer = Syncer(spool, settings=FAST, progress=progress)
    try:
        summary = syncer.run_once()
    finally:
        syncer.shutdown()
    assert wiped == [3000]
    assert summary.complete, summary
    [res] = summary.results
    assert "no longer exists" in res.remote_lost and res.error is None
    assert (res.dead, res.pending, res.closed) == (0, 0, True)
    store = StateStore(spool)
    try:
        assert store.dead_letters() == []
    finally:
        store.close()
    client = MlflowClient(mlflow_server.url)
    remote = _assert_exactly_once(client, "lost-mid-sync", spool, run.id)
    assert remote.info.status == "FINISHED"
    st, b = _status(spool, run.id)
    assert (b["delivered"], b["pending"], b["dead"]) == (st["events"], 0, 0)
    final = _cli("sync", "--retry-dead", str(spool))
    assert final.returncode == 0, final.stdout + final.stderr
    _assert_exactly_once(client, "lost-mid-sync", spool, run.id)


def test_mapped_run_replaced_by_another_runs_is_redelivered_into_its_own(
        tmp_path, mlflow_server):
    """The mapped remote id names another bridge run's MLflow run (a store replaced by
    another one): bridge re-delivers into the run carrying its own tag; replayed points
    are ignored by MLflow, so both runs still hold every point exactly once."""
    spool = tmp_path / "spool"
    ids = []
    for r in range(2):
        with bridge.init(project="lost-replaced", dir=spool, sync="offline",
                         backends=_backend(mlflow_server.url)) as run:
            for i in range(2000):
                run.log({"v": float(i * (r + 1))}, step=i)
        ids.append(run.id)
    assert Syncer(spool, settings=FAST).run_once().complete
    client = MlflowClient(mlflow_server.url)
    remotes = [_only_run(client, "lost-replaced", i).info.run_id for i in ids]
    conn = sqlite3.connect(spool / "state.db")
    with conn:
        conn.execute("UPDATE run_map SET remote_id=? WHERE run_id=?", (remotes[1], ids[0]))
        conn.execute("UPDATE adapter_state SET state=? WHERE run_id=?",
                     (json.dumps({"mlflow_run_id": remotes[1]}), ids[0]))
    conn.close()
    summary = Syncer(spool, settings=FAST).run_once()
    assert summary.complete, summary
    by_run = {r.run_id: r for r in summary.results}
    assert "now belongs to bridge run" in by_run[ids[0]].remote_lost
    assert by_run[ids[0]].remote_id == remotes[0] and by_run[ids[1]].remote_lost is None
    for run_id in ids:
        _assert_exactly_once(client, "lost-replaced", spool, run_id)


def test_embedded_store_deleted_between_two_syncs(tmp_path):
    spool = tmp_path / "spool"
    with bridge.init(project="lost-embedded", dir=spool, sync="offline",
                     backends=["mlflow"]) as run:
        for i in range(1000):
            run.log({"x": float(i)}, step=i)
    first = _cli("sync", str(spool))
    assert first.returncode == 0, first.stdout + first.stderr
    (spool / "mlflow.db").unlink()
    again = _cli("sync", "--json", str(spool))  # a new process: a fresh embedded store
    assert again.returncode == 0, again.stdout + again.stderr
    [res] = json.loads(again.stdout)["results"]
    assert res["remote_lost"] and res["delivered"] >= 1000 and res["pending"] == 0
    client = MlflowClient(f"sqlite:///{spool / 'mlflow.db'}")
    _assert_exactly_once(client, "lost-embedded", spool, run.id)


class _AlwaysLost:
    """A backend whose every run vanishes as soon as it is opened (a misbehaving store)."""

    name = "always-lost"
    limits = Limits()
    opened = 0

    def open_run(self, run):
        _AlwaysLost.opened += 1
        if run.remote_id is not None:
            raise RemoteRunLost(f"run {run.remote_id} is gone")
        return f"r{_AlwaysLost.opened}"

    def export(self, run, batch):
        raise RemoteRunLost("gone while exporting")

    def close_run(self, run, status, end_time_ms):
        pass

    def shutdown(self):
        pass


def test_lost_again_and_again_stops_with_a_clear_error(tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    with bridge.init(project="lost-loop", dir=spool, sync="offline", backends=["memory"]) as run:
        for i in range(10):
            run.log({"x": float(i)}, step=i)
    _AlwaysLost.opened = 0
    syncer = Syncer(spool, settings=FAST)
    monkeypatch.setattr(syncer, "_adapter", lambda label, spec, slot=0: _AlwaysLost())
    summary = syncer.run_once()
    assert not summary.complete
    [res] = summary.results
    assert res.error.startswith("remote run lost again") and "gone while exporting" in res.error
    [st] = spool_status(spool)
    assert res.pending == st.events >= 10 and _AlwaysLost.opened == Syncer.MAX_REDELIVERIES + 1
    [b] = st.backends
    assert (b.delivered, b.pending, b.remote_id) == (0, st.events, None)
    assert b.last_error.startswith("remote run lost again")
