"""File names that would leave the run's artifact folder are dead letters with a reason, on
the embedded sqlite store and on a server alike; the rest of the run is delivered and
confirmed, and nothing is written outside the run's artifact folder."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import bridge
from bridge.agent.state import StateStore
from bridge.agent.status import spool_status
from bridge.cli.main import app

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402


@pytest.fixture(autouse=True)
def quick_http(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.setenv("BRIDGE_AGENT_RETRY_ATTEMPTS", "3")


def _files(root):
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.mark.parametrize("store", ["embedded", "server"])
def test_bad_artifact_names_are_dead_letters_and_the_rest_is_delivered(
        tmp_path, store, request):
    if store == "server":
        server = request.getfixturevalue("mlflow_server")
        backends = [{"name": "mlflow", "tracking_uri": server.url}]
        artifacts = server.root / "artifacts"
        uri = server.url
    else:
        backends = ["mlflow"]
        artifacts = tmp_path / "spool" / "mlartifacts"
        uri = f"sqlite:///{tmp_path / 'spool' / 'mlflow.db'}"
    spool = tmp_path / "spool"
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "work").mkdir()
    weights = tmp_path / "work" / "weights.bin"
    weights.write_bytes(b"\x00" * 100)
    before = _files(artifacts)
    with bridge.init(project=f"names-{store}", dir=spool, sync="offline",
                     backends=backends) as run:
        run.log({"x": 1.0}, step=0)
        run.log_text("up", "../../../../x.txt")
        run.log_text("abs", str(outside / "abs.txt"))
        run.log_dict({"a": 1}, "../../d.json")
        run.log_dict({"a": 2}, str(outside / "abs.json"))
        run.log_artifact(weights, name="../../x")
        run.log_artifact(weights, name=str(outside))
        run.log_text("fine", "./notes//ok.txt")  # harmless forms are normalized, not refused
        for i in range(1, 3000):
            run.log({"x": float(i)}, step=i)
    out = CliRunner().invoke(app, ["sync", "--dir", str(spool)], env={"COLUMNS": "250"})
    # Dead letters alone do not fail `bridge sync` (it exits 0 and says so); anything
    # pending would (exit 1).
    assert out.exit_code == 0, out.output
    assert "6 events refused by a backend (dead letters)" in out.output
    [st] = spool_status(spool)
    [b] = st.backends
    assert (b.pending, b.dead, b.delivered, b.closed) == (0, 6, st.events - 6, True)
    s = StateStore(spool)
    try:
        reasons = sorted(d.reason for d in s.dead_letters())
    finally:
        s.close()
    assert len(reasons) == 6
    for name in ("../../../../x.txt", "../../d.json", "../../x"):
        assert any(name in r and "leaves the run's artifact folder" in r for r in reasons), reasons
    for name in (str(outside / "abs.txt"), str(outside / "abs.json"), str(outside)):
        assert any(name in r and "is absolute" in r for r in reasons), reasons
    # every metric reached MLflow, the good file too, and the run is closed
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(f"names-{store}")
    [remote] = client.search_runs([exp.experiment_id], f"tags.`bridge.run_id` = '{run.id}'")
    assert remote.info.status == "FINISHED"
    history = client.get_metric_history(remote.info.run_id, "x")
    assert sorted(m.step for m in history) == list(range(3000))
    got = client.download_artifacts(remote.info.run_id, "notes/ok.txt", str(tmp_path / "dl"))
    assert open(got).read() == "fine"
    # nothing was written outside the run's artifact folder
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "x.txt").exists() and not (tmp_path / "d.json").exists()
    new = _files(artifacts) - before
    run_dir = [p for p in new if f"/{remote.info.run_id}/" in p.as_posix()]
    assert new == set(run_dir) and run_dir
    outside_spool = _files(tmp_path) - _files(spool) - _files(artifacts) - _files(tmp_path / "dl")
    assert outside_spool == {weights}, outside_spool
    status = CliRunner().invoke(app, ["status", "--dead", "--dir", str(spool)],
                                env={"COLUMNS": "250"})
    assert "leaves the run's artifact folder" in status.output
