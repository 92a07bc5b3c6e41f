"""No credential ever reaches a file bridge writes; files are private; listeners bind
loopback; SQL takes parameters."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SECRET = "s3cr3t-VALUE-0123456789"
SCRIPT = textwrap.dedent("""
    import sys, bridge
    spool, out = sys.argv[1], sys.argv[2]
    run = bridge.init(project="sec", dir=spool, sync="offline",
                      backends=["mlflow",
                                {"name": "wandb", "mode": "offline", "dir": out + "/wandb"},
                                {"name": "comet", "mode": "offline",
                                 "offline_directory": out + "/comet"},
                                {"name": "neptune", "mode": "offline",
                                 "data_dir": out + "/neptune"}],
                      config={"lr": 0.1})
    for i in range(50):
        run.log({"loss": 1.0 / (i + 1)}, step=i)
    run.log_text("hello", "a.txt")
    run.finish()
""")


def test_no_credential_in_any_file_bridge_writes(tmp_path):
    pytest.importorskip("mlflow")
    spool, out = tmp_path / "spool", tmp_path / "out"
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"),
        "WANDB_API_KEY": SECRET, "NEPTUNE_API_TOKEN": SECRET, "MLFLOW_TRACKING_PASSWORD": SECRET,
        "MY_SERVICE_SECRET": SECRET, "DB_PASSWORD": SECRET, "COMET_ERROR_TRACKING_ENABLE": "false",
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "COMET_API_KEY": SECRET,
    }
    logged = subprocess.run([sys.executable, "-c", SCRIPT, str(spool), str(out),
                             "--api-key", SECRET, f"--password={SECRET}"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert logged.returncode == 0, logged.stderr
    synced = subprocess.run([sys.executable, "-m", "bridge.cli.main", "sync", str(spool)],
                            env=env, capture_output=True, text=True, timeout=600)
    exported = subprocess.run([sys.executable, "-m", "bridge.cli.main", "export", "last",
                               "--format", "jsonl", "--dir", str(spool)],
                              env=env, capture_output=True, text=True, timeout=300)
    status = subprocess.run([sys.executable, "-m", "bridge.cli.main", "status", "--json", "--dir",
                             str(spool)], env=env, capture_output=True, text=True, timeout=300)
    doctor = subprocess.run([sys.executable, "-m", "bridge.cli.main", "doctor", "--dir",
                             str(spool)], env=env, capture_output=True, text=True, timeout=300)
    for proc in (synced, exported, status, doctor):
        assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert "WANDB_API_KEY" in doctor.stdout  # named, never shown
    scanned = 0
    for root in (spool, out):
        for f in root.rglob("*"):
            if f.is_file():
                scanned += 1
                assert SECRET.encode() not in f.read_bytes(), f"credential found in {f}"
    assert scanned > 10


def test_private_permissions_after_sync(tmp_path):
    import bridge
    from bridge.agent.sync import Syncer

    a = tmp_path / "model.bin"
    a.write_bytes(b"weights")
    spool = tmp_path / "spool"
    with bridge.init(project="perm", dir=spool, sync="offline", backends=["memory"]) as run:
        run.log_artifact(a)
    Syncer(spool).run_once()
    for p in [spool, *spool.rglob("*")]:
        if p.name.startswith("mlflow") or "mlartifacts" in p.parts:
            continue  # the embedded MLflow store is MLflow's own
        mode = p.stat().st_mode & 0o777
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


def test_ui_binds_loopback_only():
    from bridge.cli.ui import ui_command

    cmd = ui_command(Path("/tmp/x"), 5000)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_sql_is_parameterized():
    """Every execute() with values passes them as parameters, never formatted into SQL."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*root.glob("bridge/**/*.py"), *root.glob("agent/*.py")]:
        text = path.read_text()
        for m in re.finditer(r"execute(?:many)?\(\s*f[\"']", text):
            line = text[: m.start()].count("\n") + 1
            snippet = text[m.start(): m.start() + 300]
            # f-strings may only splice fixed column lists / placeholders, not values
            allowed = r"_COLUMNS|it\[2\]|marks|col|','\.join|', '\.join|cols|sql|'WAL'|synchronous"
            if re.search(r"\{(?!" + allowed + ")", snippet.split(")")[0]):
                offenders.append(f"{path.relative_to(root)}:{line}")
    assert not offenders, offenders
