"""No credential ever reaches a file bridge writes; files are private; listeners bind
loopback; SQL takes parameters."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

SECRET = "s3cr3t-VALUE-0123456789"
# Every command-line form that carries a credential: each must be masked in the system event.
SECRET_ARGV = [
    "--api-key", SECRET, f"--password={SECRET}",
    f"wandb.api_key={SECRET}",                     # Hydra override
    f"HF_TOKEN={SECRET}",                          # environment-style assignment
    "--auth", SECRET, "-p", SECRET, "--pw", SECRET, "--pass", SECRET, "--hf_token", SECRET,
    "--db", f"postgresql://u:{SECRET}@db/x",       # password in a URL in a value
    f"--uri=https://alice:{SECRET}@host/api?token={SECRET}&page=1",
    "--lr", "0.1", "--tokenizer", "bert",           # kept as they are
]
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
    logged = subprocess.run([sys.executable, "-c", SCRIPT, str(spool), str(out), *SECRET_ARGV],
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
    shown = [subprocess.run([sys.executable, "-m", "bridge.cli.main", *cmd, "--dir", str(spool)],
                            env=env, capture_output=True, text=True, timeout=300)
             for cmd in (["show", "last"], ["status"], ["status", "--dead"], ["runs"],
                         ["export", "last", "--format", "csv"])]
    for proc in (synced, exported, status, doctor, *shown):
        assert proc.returncode == 0, proc.stderr
        assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert "WANDB_API_KEY" in doctor.stdout  # named, never shown
    # masked, not dropped: the user sees that something was there, and what was not secret
    system = next(json.loads(line) for line in exported.stdout.splitlines()
                  if json.loads(line)["event"] == "system")
    argv = json.loads(system["value"])["argv"]
    assert argv[argv.index("--auth") + 1] == "***" and argv[argv.index("-p") + 1] == "***"
    assert "wandb.api_key=***" in argv and "HF_TOKEN=***" in argv
    assert "postgresql://u:***@db/x" in argv
    assert "--uri=https://alice:***@host/api?token=***&page=1" in argv
    assert argv[-4:] == ["--lr", "0.1", "--tokenizer", "bert"]
    scanned = 0
    masked_in: set[str] = set()  # where the (masked) command line landed
    for root in (spool, out):
        for f in root.rglob("*"):
            if f.is_file():
                scanned += 1
                for name, data in _contents(f):
                    assert SECRET.encode() not in data, f"credential found in {f} {name}"
                    if b"wandb.api_key=***" in data:
                        masked_in.add(f.relative_to(tmp_path).parts[1])
    assert scanned > 10
    # the system facts reached every backend, so the scan above did look at them
    assert {"spool", "mlartifacts", "wandb", "comet", "neptune"} <= masked_in, masked_in


def _contents(f: Path) -> list[tuple[str, bytes]]:
    """The file's bytes, and each member of a zip archive (Comet's offline experiments are
    compressed, so a secret in them would not show in the raw bytes)."""
    data = f.read_bytes()
    if not zipfile.is_zipfile(f):
        return [("", data)]
    with zipfile.ZipFile(f) as z:
        return [("", data)] + [(n, z.read(n)) for n in z.namelist()]


def test_password_in_a_backend_uri_is_refused_at_init(tmp_path):
    """Same policy as credential-named options: refused, masked in the message, never stored;
    the credential belongs in MLFLOW_TRACKING_USERNAME/PASSWORD (read at sync)."""
    import bridge
    from bridge.errors import ConfigError

    uri = f"http://alice:{SECRET}@127.0.0.1:5000"
    for spec in ({"name": "mlflow", "tracking_uri": uri},
                 {"name": "mlflow", "tracking_uri": f"http://127.0.0.1:5000/?token={SECRET}"}):
        with pytest.raises(ConfigError, match="MLFLOW_TRACKING_PASSWORD") as err:
            bridge.init(project="p", dir=tmp_path, sync="offline", backends=[spec])
        assert SECRET not in str(err.value) and "***" in str(err.value)
    with pytest.raises(ConfigError) as err:
        bridge.init(project="p", dir=tmp_path, sync="offline", backends=[{"uri": uri}])
    assert SECRET not in str(err.value)
    with pytest.raises(ConfigError, match="credential"):
        bridge.init(project="p", dir=tmp_path, sync="offline",
                    backends=[{"name": "mlflow", "pw": "x"}])
    # without the password the URI is accepted and stored as given
    with bridge.init(project="p", dir=tmp_path, sync="offline",
                     backends=[{"name": "mlflow", "tracking_uri": "http://alice@127.0.0.1:5000"}]):
        pass
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f"credential found in {f}"


def test_cli_masks_urls_in_sync_state(tmp_path):
    """Errors, dead-letter reasons and remote URLs that quote a credential are printed masked
    (whatever wrote them: a backend's message, an older bridge)."""
    from typer.testing import CliRunner

    import bridge
    from bridge.agent.state import StateStore
    from bridge.cli.main import app
    from bridge.spool.reader import find_run

    with bridge.init(project="p", dir=tmp_path, sync="offline", backends=["memory"]) as run:
        run.log({"x": 1.0}, step=0)
    file_id = find_run(tmp_path, run.id).files[0].file_id
    leak = f"http://alice:{SECRET}@127.0.0.1:5000/api?api_key={SECRET}"
    store = StateStore(tmp_path)
    try:
        store.save_remote("memory", run.id, "r1", leak)
        store.commit_batch("memory", run.id, {}, {}, {(file_id, 1): f"refused by {leak}"})
        store.record_error("memory", run.id, f"POST {leak}: 401 {{'password': '{SECRET}'}}")
    finally:
        store.close()
    runner = CliRunner()
    outputs = []
    for cmd in (["status"], ["status", "--json"], ["status", "--dead"], ["show", "last"]):
        result = runner.invoke(app, [*cmd, "--dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output, (cmd, result.output)
        outputs.append(result.output)
    assert "alice:***@127.0.0.1" in outputs[2]  # the dead-letter reason, masked, not dropped


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


def test_vendor_offline_output_is_private(tmp_path):
    """What the vendors' SDKs write through bridge outside the spool (W&B fragments, Comet
    archives, Neptune offline runs) is made owner-only, as the spool is, whatever the umask."""
    pytest.importorskip("wandb")
    pytest.importorskip("comet_ml")
    pytest.importorskip("neptune")
    import bridge
    from bridge.agent.sync import Syncer

    out = tmp_path / "vendors"
    backends = [{"name": "wandb", "mode": "offline", "dir": str(out / "wandb")},
                {"name": "comet", "mode": "offline", "offline_directory": str(out / "comet")},
                {"name": "neptune", "mode": "offline", "data_dir": str(out / "neptune")}]
    spool = tmp_path / "spool"
    old = os.umask(0o022)  # a common default: the SDKs would leave 0644 files behind
    try:
        with bridge.init(project="perm", dir=spool, sync="offline", backends=backends) as run:
            for i in range(5):
                run.log({"loss": 1.0 / (i + 1)}, step=i)
            run.log_text("notes", "notes.txt")
        summary = Syncer(spool).run_once()
    finally:
        os.umask(old)
    assert summary.complete, summary
    written = {"wandb": list((out / "wandb").rglob("*.wandb")),
               "comet": list((out / "comet").glob("*.zip")),
               "neptune": list((out / "neptune").rglob("data-*.log"))}
    assert all(written.values()), written
    for vendor, files in written.items():
        for f in files:
            assert f.stat().st_mode & 0o777 == 0o600, (f, oct(f.stat().st_mode))
            if vendor != "comet":  # an archive's directory is the user's offline_directory
                assert f.parent.stat().st_mode & 0o777 == 0o700, f.parent
