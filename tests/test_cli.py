"""The CLI: every command has help, and the outputs say what is in the spool."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import bridge
from bridge.adapters import memory
from bridge.cli.main import app

runner = CliRunner()

COMMANDS = ["runs", "show", "export", "sync", "status", "agent", "doctor", "demo", "ui", "import",
            "migrate", "verify"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_a_dir_option(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--dir" in result.output
    cmd = next(c for c in app.registered_commands if c.name == command)
    assert (cmd.callback.__doc__ or "").strip(), f"{command} has no help text"


def _logged(spool):
    with bridge.init(project="cli", name="named-run", dir=spool, sync="offline",
                     backends=[{"name": "memory", "store": "cli"}]) as run:
        run.log_param("lr", 0.01)
        for i in range(5):
            run.log({"loss": 1.0 / (i + 1)}, step=i)
        run.summary["best"] = 0.2
    return run


def test_runs_show_export(tmp_path):
    run = _logged(tmp_path)
    out = runner.invoke(app, ["runs", "--dir", str(tmp_path)])
    assert out.exit_code == 0 and run.id[:12] in out.output and "FINISHED" in out.output
    out = runner.invoke(app, ["show", run.id[:8], "--dir", str(tmp_path)])
    assert out.exit_code == 0
    assert "lr" in out.output and "loss" in out.output and "best" in out.output
    out = runner.invoke(app, ["show", "named-run", "--dir", str(tmp_path)])
    assert out.exit_code == 0 and run.id in out.output
    out = runner.invoke(app, ["show", "nope", "--dir", str(tmp_path)])
    assert out.exit_code == 2
    out = runner.invoke(app, ["export", run.id, "--format", "jsonl", "--dir", str(tmp_path)])
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    metrics = [r for r in rows if r["event"] == "metric"]
    assert [r["value"] for r in metrics] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    csv_path = tmp_path / "out.csv"
    out = runner.invoke(app, ["export", "1", "-f", "csv", "-o", str(csv_path), "--dir", str(tmp_path)])
    assert out.exit_code == 0 and csv_path.read_text().startswith("experiment,run,event,dt")
    pq = tmp_path / "out.parquet"
    out = runner.invoke(app, ["export", "last", "-f", "parquet", "-o", str(pq), "--dir", str(tmp_path)])
    assert out.exit_code == 0
    import pandas as pd

    assert len(pd.read_parquet(pq)) == len(rows)


def test_sync_and_status_exit_codes(tmp_path):
    memory.STORE.clear()
    run = _logged(tmp_path)
    out = runner.invoke(app, ["sync", "--dry-run", "--dir", str(tmp_path)])
    assert out.exit_code == 0 and "would be delivered" in out.output
    memory.STORE["cli"]["faults"] = [memory.ExportResult.retry("503")] * 50
    out = runner.invoke(app, ["sync", str(tmp_path)], env={"BRIDGE_AGENT_RETRY_ATTEMPTS": "2",
                                                           "BRIDGE_AGENT_RETRY_INITIAL": "0.001"})
    assert out.exit_code == 1 and "pending" in out.output
    memory.STORE["cli"]["faults"] = []
    out = runner.invoke(app, ["sync", str(tmp_path)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["status", "--json", "--dir", str(tmp_path)])
    data = json.loads(out.stdout)
    [b] = data["runs"][0]["backends"]
    assert b["pending"] == 0 and b["dead"] == 0 and b["delivered"] == data["runs"][0]["events"]
    out = runner.invoke(app, ["status", "--dir", str(tmp_path)])
    assert out.exit_code == 0 and run.id[:12] in out.output


def test_agent_once(tmp_path):
    memory.STORE.clear()
    _logged(tmp_path)
    out = runner.invoke(app, ["agent", str(tmp_path), "--once"])
    assert out.exit_code == 0 and "delivered" in out.output


def test_doctor_names_credentials_never_values(tmp_path):
    out = runner.invoke(app, ["doctor", "--dir", str(tmp_path)],
                        env={"WANDB_API_KEY": "very-secret-987", "COLUMNS": "200"})
    assert out.exit_code == 0
    assert "WANDB_API_KEY" in out.output and "very-secret-987" not in out.output
    assert "sqlite" in out.output


def test_demo_without_sync(tmp_path):
    out = runner.invoke(app, ["demo", "--no-sync", "--dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    df = bridge.data(project="bridge-demo", dir=tmp_path, event="metric", key="val/accuracy")
    assert len(df) == 20 and df["value"].iloc[-1] > 0.8
