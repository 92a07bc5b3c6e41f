"""Done-when of the MLflow plugin: a script written for MLflow (seed_workflow.py) run once
with ``MLFLOW_TRACKING_URI=bridge:`` and no server, then ``bridge sync`` to a real
``mlflow server``, leaves that server holding what the same script leaves on a second real
server when run against it directly (compared field by field, ids and times aside); the same
runs appear in W&B's offline files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("sklearn")
from mlflow import MlflowClient  # noqa: E402

from mlflow_server import MlflowServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from snapshot import snapshot  # noqa: E402

from bridge.spool.reader import iter_events, list_runs  # noqa: E402

SEED = Path(__file__).with_name("seed_workflow.py")
BRIDGE_CLI = Path(sys.executable).with_name("bridge")
pytestmark = pytest.mark.mlflow_server


@pytest.fixture(scope="module")
def second_server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp("mlflow-direct")) as server:
        yield server


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "BRIDGE_", "WANDB_"))}
    env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="30",
               BRIDGE_CONFIG=str(tmp_path / "bridge.toml"), **extra)
    return env


def _run(cmd, env, cwd):
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """The seed workflow run once, offline, with the tracking URI pointing at a spool."""
    root = tmp_path_factory.mktemp("seeded")
    spool, work = root / "spool", root / "work"
    work.mkdir()
    (root / "bridge.toml").write_text("")
    _run([sys.executable, str(SEED)], _env(root, MLFLOW_TRACKING_URI=f"bridge://{spool}"),
         work)
    runs = list_runs(spool)
    assert {r.name for r in runs} == {"ridge-manual", "search", "trial-0", "trial-1",
                                      "ridge-autolog"}
    assert all(r.status == "FINISHED" and r.backends == [] for r in runs)
    return spool, work, runs


def test_seed_workflow_synced_equals_direct(tmp_path, seeded, mlflow_server, second_server):
    spool, work, runs = seeded

    # bridge sync to a real server (the backend from bridge's configuration)
    (tmp_path / "bridge.toml").write_text(
        f'[backends.mlflow]\ntracking_uri = "{mlflow_server.url}"\n')
    out = _run([str(BRIDGE_CLI), "sync", str(spool), "-b", "mlflow", "--json"],
               _env(tmp_path), work)
    summary = json.loads(out.stdout[out.stdout.index("{"):])
    assert summary["complete"] and len(summary["results"]) == 5
    assert all(r["dead"] == 0 and r["pending"] == 0 and r["delivered"] > 0
               for r in summary["results"])

    # the same script directly against a second server
    _run([sys.executable, str(SEED)], _env(tmp_path, MLFLOW_TRACKING_URI=second_server.url),
         work)

    synced, direct = MlflowClient(mlflow_server.url), MlflowClient(second_server.url)
    mlflow.set_tracking_uri(mlflow_server.url)
    try:
        got = snapshot(synced)
        mlflow.set_tracking_uri(second_server.url)
        want = snapshot(direct)
    finally:
        mlflow.set_tracking_uri(None)
    exp = got["nyc-taxi-experiment"]
    assert set(exp["runs"]) == {"ridge-manual", "search", "trial-0", "trial-1",
                                "ridge-autolog"}
    assert exp["runs"]["trial-0"]["parent"] == "search"
    assert exp["runs"]["ridge-manual"]["history"]["loss"] == [
        (i, 1.0 / (i + 1)) for i in range(5)]
    assert "preprocessor/preprocessor.b" in exp["runs"]["ridge-manual"]["artifacts"]
    assert exp["runs"]["ridge-autolog"]["datasets"]
    assert {k for k in exp["models"]} == {("ridge-manual", "models_mlflow"),
                                          ("ridge-autolog", "model")}
    assert "model.pkl" in exp["models"][("ridge-autolog", "model")]["artifacts"]
    for name in sorted(set(got) | set(want)):
        assert got.get(name) == want.get(name), name
    assert got == want

    # bridge's ids are kept in tags: runs by bridge.run_id, models by bridge.model_id
    exp_id = synced.get_experiment_by_name("nyc-taxi-experiment").experiment_id
    remote = synced.search_runs([exp_id])
    assert sorted(r.data.tags["bridge.run_id"] for r in remote) == sorted(r.run_id for r in runs)
    spool_models = {e.key for r in runs for e in iter_events(r.files, r.run_id)
                    if e.kind == "model"}
    assert {m.tags["bridge.model_id"] for m in synced.search_logged_models([exp_id])} == \
        spool_models

    # a second sync delivers nothing twice
    _run([str(BRIDGE_CLI), "sync", str(spool), "-b", "mlflow"], _env(tmp_path), work)
    mlflow.set_tracking_uri(mlflow_server.url)
    try:
        assert snapshot(synced) == got
    finally:
        mlflow.set_tracking_uri(None)


def test_seed_workflow_in_wandb_offline_files(tmp_path, seeded):
    """The same runs in W&B's offline files: ids, params, metric histories, artifacts, and
    each logged model as a W&B model artifact, dataset inputs as dataset artifacts."""
    pytest.importorskip("wandb")
    sys.path.insert(0, str(Path(__file__).parents[1] / "adapters"))
    from wandb_readback import read_back

    spool, work, runs = seeded
    out_dir = tmp_path / "wandb"
    (tmp_path / "bridge.toml").write_text(
        f'[backends.wandb]\nmode = "offline"\ndir = "{out_dir}"\n')
    done = subprocess.run([str(BRIDGE_CLI), "sync", str(spool), "-b", "wandb", "--json"],
                          env=_env(tmp_path), cwd=work, capture_output=True, text=True,
                          timeout=600)
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    dead = {r["run_id"]: r["dead"] for r in summary["results"]}
    by_name = {r.name: r for r in runs}
    assert all(r["pending"] == 0 for r in summary["results"]), summary
    assert not any(dead.values()), summary  # models and datasets: each has a W&B form
    for name, rec in by_name.items():
        got = read_back(out_dir, rec.run_id)
        assert got.name == name and got.project == "nyc-taxi-experiment"
        mlflow_params = {e.key: e.payload for e in iter_events(rec.files, rec.run_id)
                         if e.kind == "param"}
        for k, v in mlflow_params.items():
            assert str(got.config[k]) == v, (name, k)
    manual = read_back(out_dir, by_name["ridge-manual"].run_id)
    assert [(s, v) for s, _, v in manual.points("loss")] == [(i, 1.0 / (i + 1))
                                                            for i in range(5)]
    models = [a for a in manual.artifacts if a["type"] == "model"]
    assert [a["name"] for a in models] == ["models_mlflow"]
    assert {"MLmodel", "requirements.txt"} <= {f["path"] for f in models[0]["files"]}
    assert models[0]["metadata"]["bridge_model_id"].startswith("m-")
