"""Sharded delivery: N agents share a spool, each delivers its own runs into its own state
file, `bridge status` sums them up, `--reshard` changes N without losing or repeating
anything, and prune removes a run only once the shard that owns it delivered it."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bridge
from bridge import writer_pool
from bridge.adapters import memory
from bridge.agent import shards
from bridge.agent.retention import prune
from bridge.agent.shards import Shard, ShardLayoutError, parse_shard, reshard, shard_of
from bridge.agent.status import spool_status
from bridge.agent.sync import Syncer
from bridge.cli.main import app
from bridge.config import AgentSettings
from bridge.errors import ConfigError
from bridge.spool.reader import list_runs

FAST = AgentSettings(retry_initial=0.001, retry_max=0.01, retry_attempts=4)
runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_store():
    memory.STORE.clear()
    yield
    memory.STORE.clear()


def _runs(spool: Path, n: int, events: int = 30, finish: bool = True, cover: int = 3) -> list:
    """At least ``n`` runs, more until each shard of 2 and of 3 has at least one of them
    (run ids are random: a small set could otherwise fall in one shard)."""
    out: list = []
    i = 0
    while len(out) < n or any({shard_of(r.id, c) for r in out} != set(range(c))
                              for c in range(2, cover + 1)):
        i += 1
        run = bridge.init(project="p", dir=spool, name=f"r{i}", sync="offline",
                          backends=[{"name": "memory", "store": "s"}])
        for step in range(events):
            run.log({"loss": float(step)}, step=step)
        run.set_tag("i", str(i))
        if finish:
            run.finish()
        else:
            # the run's system facts are recorded by a thread of their own: wait for them, so
            # a live run holds nothing that arrives after a sync's snapshot of it
            facts = getattr(run, "_system_thread", None)
            if facts is not None:
                facts.join(30)
            run.flush()
        out.append(run)
        assert i < 200
    return out


def _sync(spool: Path, shard: Shard | None) -> list:
    syncer = Syncer(spool, settings=FAST, shard=shard)
    try:
        summary = syncer.run_once()
    finally:
        syncer.shutdown()
    assert summary.complete, [(r.run_id, r.error, r.pending) for r in summary.results]
    return summary.results


def _state_runs(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for t in ("cursors", "run_map", "adapter_state", "dead_letters")
                for r in conn.execute(f"SELECT run_id FROM {t}")}
    finally:
        conn.close()


def _assert_exactly_once(spool: Path) -> None:
    """Every spool event of every run reached the memory store once; each run closed once."""
    st = memory.STORE["s"]
    statuses = spool_status(spool)
    for s in statuses:
        [b] = s.backends
        uids = [e.uid for e in st["events"][s.run_id]]  # dead letters are not there
        assert len(uids) == len(set(uids)) == s.events - b.dead > 0, s.run_id
        assert (b.delivered, b.pending, b.closed) == (b.total - b.dead, 0, True), s.run_id
    closes = [c[1] for c in st["calls"] if c[0] == "close_run"]
    assert sorted(closes) == sorted(s.run_id for s in statuses)


def test_parse_shard_literal_slurm_and_kubernetes():
    assert parse_shard("1/4") == Shard(1, 4)
    assert parse_shard("0/1") == Shard(0, 1)
    slurm = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1",
             "SLURM_ARRAY_TASK_COUNT": "4"}
    assert parse_shard("auto", slurm) == Shard(3, 4)  # --array=1-4: 0-based inside
    k8s = {"JOB_COMPLETION_INDEX": "2", "BRIDGE_SHARD_COUNT": "3"}
    assert parse_shard("auto", k8s) == Shard(2, 3)
    for bad in ("4/4", "5/4", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    with pytest.raises(ConfigError, match="BRIDGE_SHARD_COUNT"):
        parse_shard("auto", {"JOB_COMPLETION_INDEX": "0"})
    with pytest.raises(ConfigError):
        parse_shard("auto", {})
    # stable: the same run id always lands in the same shard, and shards are balanced
    ids = [f"run-{i:04d}" for i in range(2000)]
    assert [shard_of(r, 4) for r in ids] == [shard_of(r, 4) for r in ids]
    counts = [sum(1 for r in ids if shard_of(r, 4) == k) for k in range(4)]
    assert min(counts) > 400, counts


def test_two_shards_deliver_every_run_once_into_their_own_state_files(tmp_path):
    runs = _runs(tmp_path, 12)
    owners = {r.id: shard_of(r.id, 2) for r in runs}
    assert set(owners.values()) == {0, 1}
    results: dict[int, list] = {}
    threads = [threading.Thread(target=lambda k=k: results.setdefault(k, _sync(tmp_path,
                                                                               Shard(k, 2))))
               for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    got = {k: {r.run_id for r in res if r.delivered} for k, res in results.items()}
    assert got[0].isdisjoint(got[1])
    assert got[0] | got[1] == set(owners)
    for k in (0, 1):
        assert got[k] == {r for r, o in owners.items() if o == k}
        assert _state_runs(tmp_path / f"state-shard-{k}-of-2.db") == got[k]
    assert not (tmp_path / "state.db").exists()
    opened = [c[1] for c in memory.STORE["s"]["calls"] if c[0] == "open_run"]
    assert sorted(opened) == sorted(owners)  # each run opened by one shard, once
    _assert_exactly_once(tmp_path)

    # a second pass of each shard delivers nothing again
    for k in (0, 1):
        assert all(r.delivered == 0 for r in _sync(tmp_path, Shard(k, 2)))
    _assert_exactly_once(tmp_path)

    out = runner.invoke(app, ["status", "--json", "--dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert {r["run_id"] for r in doc["runs"]} == set(owners)
    for r in doc["runs"]:
        [b] = r["backends"]
        assert b["pending"] == 0 and b["delivered"] == b["total"] == r["events"] > 0
        assert b["closed"] and b["remote_id"] == f"mem-{r['run_id']}"
    table = runner.invoke(app, ["status", "--dir", str(tmp_path)])
    assert table.exit_code == 0 and "mem-" in table.stdout
    assert not (tmp_path / "state.db").exists()  # status opened nothing for writing


def test_another_n_is_refused_until_reshard(tmp_path):
    _runs(tmp_path, 4)
    _sync(tmp_path, Shard(0, 2))
    with pytest.raises(ShardLayoutError, match="--reshard 3"):
        Syncer(tmp_path, settings=FAST, shard=Shard(0, 3)).run_once()
    with pytest.raises(ShardLayoutError, match="--shard"):
        Syncer(tmp_path, settings=FAST).run_once()  # unsharded beside shards
    out = runner.invoke(app, ["sync", "--shard", "1/3", "--dir", str(tmp_path)])
    assert out.exit_code == 2 and "reshard" in out.output
    out = runner.invoke(app, ["sync", "--shard", "3/3", "--dir", str(tmp_path)])
    assert out.exit_code == 2 and "0-based" in out.output
    # an unsharded spool's state.db binds N=1 once it holds state
    other = tmp_path / "other"
    _runs(other, 2)
    _sync(other, None)
    with pytest.raises(ShardLayoutError):
        Syncer(other, settings=FAST, shard=Shard(1, 2)).run_once()


def test_changing_n_two_to_three_loses_and_repeats_nothing(tmp_path):
    done = _runs(tmp_path, 6)
    live = _runs(tmp_path, 6, finish=False)
    memory.STORE["s"]["reject"] = {("tag", "i"): "tags refused here"}
    for k in (0, 1):
        _sync(tmp_path, Shard(k, 2))
    assert all(memory.STORE["s"]["events"][r.id] for r in done + live)

    def delivery() -> dict:
        return {s.run_id: (b.delivered, b.dead, b.remote_id, b.closed)
                for s in spool_status(tmp_path) for b in s.backends}

    before = delivery()
    assert len(before) == len(done) + len(live) and all(d[1] == 1 for d in before.values())

    out = runner.invoke(app, ["sync", "--reshard", "3", "--dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    names = sorted(p.name for p in tmp_path.glob("state*.db"))
    assert names == [f"state-shard-{k}-of-3.db" for k in range(3)]
    for k in range(3):  # every run's state moved to its new owner, dead letters included
        owned = {r.id for r in done + live if shard_of(r.id, 3) == k}
        assert _state_runs(tmp_path / f"state-shard-{k}-of-3.db") == owned
    assert delivery() == before
    out = runner.invoke(app, ["status", "--dead", "--dir", str(tmp_path)])
    assert out.exit_code == 0 and out.stdout.count("tags refused here") == len(before)

    for step in range(30, 50):  # the live runs go on, then finish
        for r in live:
            r.log({"loss": float(step)}, step=step)
    for r in live:
        r.finish()
    with pytest.raises(ShardLayoutError):
        Syncer(tmp_path, settings=FAST, shard=Shard(0, 2)).run_once()
    for k in range(3):
        results = _sync(tmp_path, Shard(k, 3))
        for res in results:  # finished runs: nothing again; live ones: only what is new
            assert shard_of(res.run_id, 3) == k
            if res.run_id in {r.id for r in live}:
                assert res.delivered >= 20 and res.closed
            else:
                assert res.delivered == 0 and not res.closed
    memory.STORE["s"]["reject"] = {}
    _assert_exactly_once(tmp_path)
    steps = [e.step for e in memory.STORE["s"]["events"][live[0].id] if e.kind == "metric"]
    assert steps == list(range(50))

    # and back to one agent: state.db alone, nothing left to deliver
    assert reshard(tmp_path, 1).targets == ["state.db"]
    assert sorted(p.name for p in tmp_path.glob("state*.db")) == ["state.db"]
    assert all(r.delivered == 0 and r.dead == 0 for r in _sync(tmp_path, None))
    _assert_exactly_once(tmp_path)
    assert len(spool_status(tmp_path)) == len(done) + len(live)


def test_interrupted_reshard_is_finished_by_running_it_again(tmp_path, monkeypatch):
    _runs(tmp_path, 6)
    for k in (0, 1):
        _sync(tmp_path, Shard(k, 2))
    real = shards.os.replace
    calls = {"n": 0}

    def crash_after_one(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("power cut")
        return real(src, dst)

    monkeypatch.setattr(shards.os, "replace", crash_after_one)
    with pytest.raises(OSError):
        reshard(tmp_path, 3)
    monkeypatch.setattr(shards.os, "replace", real)
    with pytest.raises(ShardLayoutError):  # half-done: two layouts, shards refuse
        Syncer(tmp_path, settings=FAST, shard=Shard(0, 3)).run_once()
    assert all(s.backends[0].pending == 0 for s in spool_status(tmp_path))
    reshard(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.glob("state*")) == [
        f"state-shard-{k}-of-3.db" for k in range(3)]
    for k in range(3):
        assert all(r.delivered == 0 for r in _sync(tmp_path, Shard(k, 3)))
    _assert_exactly_once(tmp_path)


def test_prune_removes_a_run_only_when_its_owning_shard_delivered_it(tmp_path):
    runs = _runs(tmp_path, 8)
    first = {r.id for r in runs if shard_of(r.id, 2) == 0}
    second = {r.id for r in runs if shard_of(r.id, 2) == 1}
    assert first and second
    _sync(tmp_path, Shard(0, 2))
    Syncer(tmp_path, settings=FAST, shard=Shard(1, 2), dry_run=True).run_once()
    writer_pool.close_all()  # the writers are done: their file may be rewritten

    outcome = prune(tmp_path)
    assert not outcome.errors
    assert set(outcome.report.runs) == first
    kept = {v.run_id: v.reason for v in outcome.runs if not v.prune}
    assert set(kept) == second and all("pending" in why for why in kept.values())
    assert {r.run_id for r in list_runs(tmp_path)} == second
    assert not _state_runs(tmp_path / "state-shard-0-of-2.db") - {
        r for r in first}  # leftovers only: the run map stays for a resumed run

    _sync(tmp_path, Shard(1, 2))
    assert prune(tmp_path, shard=Shard(0, 2)).report.runs == []  # not its runs
    outcome = prune(tmp_path, shard=Shard(1, 2))
    assert set(outcome.report.runs) == second
    assert list_runs(tmp_path) == []
    conn = sqlite3.connect(tmp_path / "state-shard-1-of-2.db")
    assert conn.execute("SELECT count(*) FROM cursors").fetchone()[0] == 0
    conn.close()


def test_prune_refuses_two_layouts(tmp_path):
    runs = _runs(tmp_path, 3)
    _sync(tmp_path, Shard(0, 2))
    _sync(tmp_path, Shard(1, 2))
    writer_pool.close_all()
    [some] = list(tmp_path.glob("state-shard-0-of-2.db")) or list(
        tmp_path.glob("state-shard-1-of-2.db"))
    (tmp_path / "state-shard-0-of-3.db").write_bytes(some.read_bytes())
    outcome = prune(tmp_path)
    assert outcome.report.runs == [] and "reshard" in outcome.errors[0]
    assert len(list_runs(tmp_path)) == len(runs)


def test_two_shard_processes_into_a_real_mlflow_server(tmp_path, mlflow_server, monkeypatch):
    """Two `bridge agent --shard K/2 --once` processes at once: every bridge run is one
    MLflow run holding each spool point once, and each shard delivered only its own runs."""
    mlflow = pytest.importorskip("mlflow")
    import subprocess
    import sys

    from mlflow import MlflowClient

    from bridge.spool.reader import iter_events

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    ids = []
    while len(ids) < 6 or {shard_of(r, 2) for r in ids} != {0, 1}:
        r = len(ids)
        with bridge.init(project="shards", dir=tmp_path, sync="offline",
                         backends=[{"name": "mlflow", "tracking_uri": mlflow_server.url}]) as run:
            for i in range(300):
                run.log({"v": float(i + r)}, step=i)
        ids.append(run.id)
    writer_pool.close_all()
    procs = [subprocess.Popen([sys.executable, "-m", "bridge.cli.main", "agent", str(tmp_path),
                               "--once", "--shard", f"{k}/2"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for k in (0, 1):
        assert _state_runs(tmp_path / f"state-shard-{k}-of-2.db") == {
            r for r in ids if shard_of(r, 2) == k}
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("shards")
    records = {r.run_id: r for r in list_runs(tmp_path)}
    for run_id in ids:
        remote = client.search_runs([exp.experiment_id], f"tags.`bridge.run_id` = '{run_id}'",
                                    run_view_type=mlflow.entities.ViewType.ALL)
        assert len(remote) == 1, run_id
        got = sorted((m.step, m.value) for m in
                     client.get_metric_history(remote[0].info.run_id, "v"))
        want = sorted((e.step, e.value) for e in iter_events(records[run_id].files, run_id)
                      if e.kind == "metric" and e.key == "v")
        assert got == want and len(got) == 300
    for s in spool_status(tmp_path):
        [b] = s.backends
        assert (b.pending, b.dead, b.delivered, b.closed) == (0, 0, s.events, True)
