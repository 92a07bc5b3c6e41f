"""`bridge migrate` from a real MLflow server's history (written by MLflow's own fluent API)
to W&B, Comet and Neptune offline files: ids kept, every point and step kept, timestamps
kept where the destination accepts them; `bridge verify` agrees by reading them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from bridge.cli.main import app

pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytest.importorskip("comet_ml")
pytest.importorskip("neptune")

CORPUS = textwrap.dedent("""
    import sys, mlflow
    mlflow.set_tracking_uri(sys.argv[1])
    mlflow.set_experiment("vision")
    ids = []
    with mlflow.start_run(run_name="resnet") as run:
        mlflow.log_params({"lr": 0.01, "depth": 50})
        mlflow.set_tags({"team": "cv"})
        for step in range(300):
            mlflow.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 300.0}, step=step,
                               timestamp=1_700_000_000_000 + step * 1000)
        ids.append(run.info.run_id)
    with mlflow.start_run(run_name="vit") as run:
        mlflow.log_param("lr", 0.001)
        for step in range(0, 200, 2):
            mlflow.log_metric("loss", 2.0 / (step + 1), step=step,
                              timestamp=1_700_000_500_000 + step)
        ids.append(run.info.run_id)
    print(" ".join(ids))
""")



@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("COMET_API_KEY", "dummy")
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def test_migrate_mlflow_server_to_wandb_comet_neptune(tmp_path, mlflow_server, offline):
    made = subprocess.run([sys.executable, "-c", CORPUS, mlflow_server.url], capture_output=True,
                          text=True, timeout=300, env={**os.environ})
    assert made.returncode == 0, made.stderr
    ids = made.stdout.strip().splitlines()[-1].split()  # mlflow prints run links first
    spool, out = tmp_path / "spool", tmp_path / "out"
    report = tmp_path / "report.json"
    result = CliRunner().invoke(app, [
        "migrate", mlflow_server.url, "--from", "mlflow", "--to", "wandb,comet,neptune",
        "--to-opt", "wandb.mode=offline", "--to-opt", f"wandb.dir={out / 'wandb'}",
        "--to-opt", "comet.mode=offline", "--to-opt", f"comet.offline_directory={out / 'comet'}",
        "--to-opt", "neptune.mode=offline", "--to-opt", f"neptune.data_dir={out / 'neptune'}",
        "--experiment", "vision", "--report", str(report), "--dir", str(spool),
    ], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["sync_complete"] is True
    by = {(r["run_id"], r["backend"]): r for r in data["runs"]}
    assert {rid for rid, _ in by} == set(ids)  # MLflow's 32-hex ids survive unchanged
    for (run_id, backend), r in by.items():
        f = r["fields"]
        assert r["found"], (run_id, backend)
        assert f["points"]["percent"] == 100.0 and f["steps"]["percent"] == 100.0, (backend, f)
        assert f["timestamps"]["percent"] == 100.0, (backend, f)  # all three accept them
        assert f["params"]["percent"] == 100.0, (backend, f)
    assert sum(r["fields"]["points"]["expected"] for (_, b), r in by.items() if b == "wandb") \
        == 300 * 2 + 100
    # bridge verify agrees, one destination at a time
    for backend in ("wandb", "comet", "neptune"):
        v = CliRunner().invoke(app, ["verify", ids[0], "--backend", backend, "--json",
                                     "--dir", str(spool)])
        assert v.exit_code == 0, v.output
        rep = json.loads(v.stdout)
        assert rep["fields"]["points"]["kept"] == 600 and rep["complete"]
    # running it again imports nothing twice and changes nothing
    again = CliRunner().invoke(app, [
        "migrate", mlflow_server.url, "--from", "mlflow", "--to", "wandb",
        "--to-opt", "wandb.mode=offline", "--to-opt", f"wandb.dir={out / 'wandb'}",
        "--experiment", "vision", "--dir", str(spool)], env={"COLUMNS": "200"})
    assert again.exit_code == 0 and "already imported" in again.output
