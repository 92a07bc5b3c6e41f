"""`bridge prune` with real backends: a run W&B (offline) holds and a real MLflow server
holds goes; a run whose MLflow delivery is pending while the server is down keeps every event
and blob MLflow needs, and is delivered intact once the server is back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bridge
from bridge import writer_pool
from bridge.agent.status import spool_status
from bridge.query import data
from bridge.spool.blobs import blob_path
from bridge.spool.media import blob_items
from bridge.spool.reader import iter_events, list_runs

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("wandb")
from mlflow import MlflowClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adapters"))
import wandb_readback  # noqa: E402


def _env() -> dict:
    # A wandb service another test started publishes its address in WANDB_SERVICE: the CLI
    # must start its own. A down MLflow server must fail fast.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5",
               BRIDGE_AGENT_RETRY_ATTEMPTS="2", BRIDGE_AGENT_RETRY_INITIAL="0.05",
               BRIDGE_AGENT_RETRY_MAX="0.1")
    return env


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge.cli.main", *args],
                          capture_output=True, text=True, timeout=600, env=_env())


def _log(spool: Path, name: str, backends: list[dict], art: Path, seed: int) -> str:
    run = bridge.init(project="prune-e2e", name=name, dir=spool, sync="offline",
                      backends=backends)
    for s in range(200):
        run.log({"loss": 1.0 / (s + 1)}, step=s)
    run.log_artifact(art)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    run.log({"sample": bridge.Image(pixels)}, step=200)
    run.finish()
    writer_pool.close_all()  # as a training process ends: its file is done
    return run.id


def _blobs(spool: Path, run_id: str) -> set[str]:
    rec = [r for r in list_runs(spool) if r.run_id == run_id][0]
    out = set()
    for ev in iter_events(rec.files, run_id):
        if ev.kind == "artifact":
            out.update(f["sha256"] for f in ev.payload["files"])
        elif ev.kind == "media":
            out.update(i["sha256"] for i in blob_items(ev.payload))
    return out


def test_prune_while_mlflow_is_down_keeps_what_mlflow_needs(tmp_path, mlflow_server):
    spool, out = tmp_path / "spool", tmp_path / "out"
    both = [{"name": "mlflow", "tracking_uri": mlflow_server.url},
            {"name": "wandb", "mode": "offline", "dir": str(out / "wandb")}]
    shared, own = tmp_path / "shared.bin", tmp_path / "own.bin"
    shared.write_bytes(os.urandom(50_000))
    own.write_bytes(os.urandom(70_000))
    done = _log(spool, "delivered", both, shared, seed=1)
    wandb_only = _log(spool, "wandb-only", both[1:], own, seed=2)
    first = _cli("sync", str(spool))
    assert first.returncode == 0, first.stdout + first.stderr
    mlflow_server.stop()
    try:
        half = _log(spool, "mlflow-pending", both, shared, seed=3)  # shares done's artifact
        second = _cli("sync", str(spool))
        assert second.returncode != 0  # MLflow is down: its events stay pending
        st = {s.run_id: {b.backend: b for b in s.backends} for s in spool_status(spool)}
        assert st[half]["wandb"].pending == 0 and st[half]["mlflow"].pending > 0
        assert wandb_readback.read_back(out / "wandb", half).points("loss")
        needed = _blobs(spool, half)
        gone = (_blobs(spool, done) | _blobs(spool, wandb_only)) - needed
        events_before = st[half]["mlflow"].total
        old = time.time() - 3600  # blobs older than prune's grace period
        for p in (spool / "blobs").rglob("*"):
            if p.is_file():
                os.utime(p, (old, old))

        res = _cli("prune", str(spool), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        doc = json.loads(res.stdout)
        verdicts = {v["run_id"]: v for v in doc["runs"]}
        assert verdicts[done]["prune"] and verdicts[wandb_only]["prune"]
        assert not verdicts[half]["prune"]
        assert verdicts[half]["reason"].startswith("mlflow: ") and "pending" in verdicts[half][
            "reason"]
        assert doc["freed"]["runs"] == 2 and doc["freed"]["files_deleted"] == 2
        assert doc["freed"]["blobs"] == len(gone) and doc["freed"]["bytes"] > 120_000
        assert all(blob_path(spool, s).exists() for s in needed)
        assert not any(blob_path(spool, s).exists() for s in gone)
        [kept] = spool_status(spool)
        assert kept.run_id == half and kept.events == events_before
        assert {b.backend: b.pending for b in kept.backends}["wandb"] == 0
        df = data(dir=spool, run="all", run_id=True)
        assert set(df["run_id"]) == {half} and (df["event"] == "metric").sum() == 200
    finally:
        mlflow_server.start()

    third = _cli("sync", str(spool))
    assert third.returncode == 0, third.stdout + third.stderr
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("prune-e2e")
    [remote] = client.search_runs([exp.experiment_id], f"tags.`bridge.run_id` = '{half}'")
    assert len(client.get_metric_history(remote.info.run_id, "loss")) == 200
    local = client.download_artifacts(remote.info.run_id, "shared.bin/shared.bin",
                                      str(tmp_path / "dl"))
    assert Path(local).read_bytes() == shared.read_bytes()
    # now every backend holds it: the spool empties
    res = _cli("prune", str(spool))
    assert res.returncode == 0 and "freed 1 runs" in res.stdout, res.stdout + res.stderr
    assert spool_status(spool) == []
    assert not [p for p in (spool / "blobs").rglob("*") if p.is_file()]


def test_reference_artifact_reaches_mlflow_without_a_spool_copy(tmp_path, mlflow_server):
    spool = tmp_path / "spool"
    ckpt = tmp_path / "ckpt.bin"
    ckpt.write_bytes(os.urandom(2_000_000))
    run = bridge.init(project="prune-e2e-ref", dir=spool, sync="offline",
                      backends=[{"name": "mlflow", "tracking_uri": mlflow_server.url}])
    run.log_artifact(ckpt, copy=False)
    run.finish()
    writer_pool.close_all()
    assert not [p for p in (spool / "blobs").rglob("*") if p.is_file()]
    res = _cli("sync", str(spool))
    assert res.returncode == 0, res.stdout + res.stderr
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("prune-e2e-ref")
    [remote] = client.search_runs([exp.experiment_id], f"tags.`bridge.run_id` = '{run.id}'")
    got = client.download_artifacts(remote.info.run_id, "ckpt.bin/ckpt.bin", str(tmp_path / "dl"))
    assert Path(got).read_bytes() == ckpt.read_bytes()
