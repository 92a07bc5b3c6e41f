"""`bridge ui` serves the embedded MLflow store on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

import bridge
from bridge.agent.sync import Syncer

pytest.importorskip("mlflow")
from mlflow_server import free_port, wait_until  # noqa: E402


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_ui_serves_the_embedded_store_on_loopback(tmp_path):
    spool = tmp_path / "spool"
    with bridge.init(project="ui", dir=spool, sync="offline", backends=["mlflow"]) as run:
        run.log({"x": 1.0}, step=0)
    assert Syncer(spool).run_once().complete
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli.main", "ui", "--port", str(port),
                             "--dir", str(spool)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health"), 90)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert b'"name": "ui"' in resp.read().replace(b'"name":"ui"', b'"name": "ui"')
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            assert all("127.0.0.1:" in line for line in out.stdout.strip().splitlines())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ui_serves_the_spool_itself_through_the_plugin(tmp_path):
    """``bridge ui --spool``: runs never synced anywhere, answered from the spool."""
    spool = tmp_path / "spool"
    with bridge.init(project="straight", name="unsynced", dir=spool, sync="offline") as run:
        run.log({"x": 0.5}, step=3)
        run.log_params({"lr": 0.01})
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli.main", "ui", "--spool",
                             "--port", str(port), "--dir", str(spool)], start_new_session=True,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        assert wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health"), 90)
        with urllib.request.urlopen(
                f"{base}/experiments/get-by-name?experiment_name=straight", timeout=10) as resp:
            experiment = json.loads(resp.read())["experiment"]
        body = json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode()
        req = urllib.request.Request(f"{base}/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            (found,) = json.loads(resp.read())["runs"]
        assert found["info"]["run_id"] == run.id and found["info"]["run_name"] == "unsynced"
        assert {p["key"]: p["value"] for p in found["data"]["params"]} == {"lr": "0.01"}
        assert [(m["key"], m["value"], m["step"]) for m in found["data"]["metrics"]] == \
            [("x", 0.5, 3)]
        assert not (spool / "mlflow.db").exists()  # nothing copied into an MLflow store
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ui_without_a_store_says_so_and_creates_none(tmp_path, monkeypatch):
    """No store, or an empty file where it goes: `bridge ui` says how to make one instead of
    letting `mlflow ui` create it outside bridge's whole-or-nothing creation."""
    from typer.testing import CliRunner

    from bridge.adapters.mlflow.names import embedded_db
    from bridge.cli import ui
    from bridge.cli.main import app

    def no_server(cmd, **kw):
        raise AssertionError(f"mlflow ui started on a missing store: {cmd}")

    monkeypatch.setattr(ui.subprocess, "call", no_server)

    spool = tmp_path / "spool"
    db = embedded_db(spool)
    for make in (lambda: None, lambda: (db.parent.mkdir(parents=True), db.touch())):
        make()
        out = CliRunner().invoke(app, ["ui", "--dir", str(spool), "--port", str(free_port())])
        assert out.exit_code == 2, out.output
        assert "no embedded MLflow store" in out.output
        assert not db.exists() or db.stat().st_size == 0
