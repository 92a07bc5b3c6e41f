"""`bridge prune --vendor-files`: the W&B, Comet and Neptune offline output bridge's adapters
really wrote is listed with its upload state; W&B fragments ``wandb sync`` marked synced go,
Comet archives and Neptune dirs only when the user confirms, and never a fragment of a run
with events still pending for that backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bridge
from bridge import writer_pool
from bridge.agent.status import spool_status

pytest.importorskip("wandb")
pytest.importorskip("comet_ml")
pytest.importorskip("neptune")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(BRIDGE_AGENT_RETRY_ATTEMPTS="2", BRIDGE_AGENT_RETRY_INITIAL="0.05",
               BRIDGE_AGENT_RETRY_MAX="0.1", WANDB_MODE="offline", NEPTUNE_MODE="offline")
    return env


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge.cli.main", *args],
                          capture_output=True, text=True, timeout=600, env=_env())


def _mark_synced(fragment: Path) -> None:
    """What `wandb sync` leaves once it uploaded a session: ``run-<id>.wandb.synced``."""
    [log] = fragment.glob("run-*.wandb")
    Path(f"{log}.synced").write_text("")


def test_vendor_files_listed_and_pruned(tmp_path):
    spool, out = tmp_path / "spool", tmp_path / "out"
    backends = [{"name": "wandb", "mode": "offline", "dir": str(out / "wandb")},
                {"name": "comet", "mode": "offline", "offline_directory": str(out / "comet")},
                {"name": "neptune", "mode": "offline", "data_dir": str(out / "neptune")}]
    done = bridge.init(project="vf", name="done", dir=spool, sync="offline", backends=backends)
    for s in range(20):
        done.log({"loss": 1.0 / (s + 1)}, step=s)
    done.finish()
    # A second run, W&B only: its first batch delivered, then more logged and not synced.
    half = bridge.init(project="vf", name="half", dir=spool, sync="offline",
                       backends=backends[:1])
    half.log({"loss": 1.0}, step=0)
    half.flush()
    res = _cli("sync", str(spool))
    assert res.returncode == 0, res.stdout + res.stderr
    half.log({"loss": 0.5}, step=1)
    half.flush()
    st = {s.run_id: {b.backend: b.pending for b in s.backends} for s in spool_status(spool)}
    assert st[done.id] == {"wandb": 0, "comet": 0, "neptune": 0}
    assert st[half.id]["wandb"] > 0

    res = _cli("prune", str(spool), "--vendor-files", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    by = {(f["backend"], f["run_id"]): f for f in doc["files"]}
    assert set(by) == {("wandb", done.id), ("comet", done.id), ("neptune", done.id),
                       ("wandb", half.id)}
    assert all(f["state"] == "not uploaded" and f["action"].startswith("kept")
               and f["bytes"] > 0 and Path(f["path"]).exists() for f in doc["files"])
    assert "pending" in by[("wandb", half.id)]["action"]
    assert doc["freed"] == {"files": 0, "bytes": 0}

    # `wandb sync` marks both W&B fragments synced: only the delivered run's goes.
    for key in (("wandb", done.id), ("wandb", half.id)):
        _mark_synced(Path(by[key]["path"]))
    dry = json.loads(_cli("prune", str(spool), "--vendor-files", "--dry-run", "--json").stdout)
    actions = {(f["backend"], f["run_id"]): f["action"] for f in dry["files"]}
    assert actions[("wandb", done.id)] == "would remove"
    assert "pending" in actions[("wandb", half.id)]
    assert Path(by[("wandb", done.id)]["path"]).exists()
    res = _cli("prune", str(spool), "--vendor-files")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "freed 1 vendor files" in res.stdout
    assert not Path(by[("wandb", done.id)]["path"]).exists()
    assert Path(by[("wandb", half.id)]["path"]).exists()
    assert Path(by[("comet", done.id)]["path"]).exists()
    assert Path(by[("neptune", done.id)]["path"]).exists()

    doctor = _cli("doctor", "--dir", str(spool))
    assert "vendor files" in doctor.stdout and "3 (" in doctor.stdout

    # The user confirms Comet and Neptune uploaded: both go; the pending fragment still stays.
    res = _cli("prune", str(spool), "--vendor-files", "--confirm-uploaded", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["freed"]["files"] == 2
    assert not Path(by[("comet", done.id)]["path"]).exists()
    assert not Path(by[("neptune", done.id)]["path"]).exists()
    assert Path(by[("wandb", half.id)]["path"]).exists()
    half.finish()
    writer_pool.close_all()


def test_confirm_uploaded_needs_vendor_files(tmp_path):
    res = _cli("prune", str(tmp_path), "--confirm-uploaded")
    assert res.returncode != 0
