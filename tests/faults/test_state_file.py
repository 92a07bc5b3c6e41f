"""A delivery state (``state.db``) that cannot be written or read: `bridge sync` never exits 0
over pending events and `bridge status` reports instead of printing a traceback."""

from __future__ import annotations

import ctypes
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bridge
from bridge.adapters import memory
from bridge.agent.state import StateStore
from bridge.agent.sync import Syncer
from bridge.cli.main import app
from bridge.spool.reader import iter_events, list_runs

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_memory():
    memory.STORE.clear()
    yield
    memory.STORE.clear()


def _log(spool: Path, n: int, run_id: str | None = None) -> str:
    run = bridge.init(project="s", dir=spool, sync="offline", run_id=run_id,
                      resume="allow" if run_id else None,
                      backends=[{"name": "memory", "store": "s"}])
    for i in range(n):
        run.log({"x": float(i)})
    run.finish()
    bridge.writer_pool.close_all()
    return run.id


def _delivered_then_more(spool: Path) -> str:
    """A run delivered once (so state.db exists), then 101 more events, pending."""
    run_id = _log(spool, 10)
    assert runner.invoke(app, ["sync", "--dir", str(spool)]).exit_code == 0
    _log(spool, 100, run_id)  # 100 metrics and the run's stop: 101 pending
    return run_id


def _without_permission_override() -> None:
    """In the child before exec: drop root's power to ignore file permissions.

    Removing CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set makes the
    exec'd program a root that file modes bind, as they bind any other user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _cli_bound_by_modes(*args: str) -> subprocess.CompletedProcess:
    """`bridge ARGS` in a process that file permissions apply to (as root, too)."""
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-c", "from bridge.cli.main import main; main()",
                           *args], capture_output=True, text=True, env=env, timeout=120,
                          preexec_fn=_without_permission_override if os.geteuid() == 0
                          else None)


def test_sync_with_a_read_only_state_file_is_not_a_success(tmp_path):
    spool = tmp_path / "spool"
    _delivered_then_more(spool)
    for path in spool.glob("state.db*"):
        os.chmod(path, 0o444)
    os.chmod(spool, 0o555)  # nor can a new state file or journal be made beside it
    try:
        probe = _cli_bound_by_modes("sync", "--dir", str(spool))
        status = _cli_bound_by_modes("status", "--dir", str(spool))
    finally:
        os.chmod(spool, 0o700)
    out = probe.stdout + probe.stderr
    assert probe.returncode != 0, out
    assert "nothing to sync" not in out
    assert "state.db" in out
    # The cursors cannot be read either (a WAL file in a read-only directory): nothing can be
    # shown as confirmed, so every event of the run counts as pending, never fewer than 101.
    pending = int(re.search(r"delivered: (\d+) events pending", out).group(1))
    assert pending >= 101, out
    assert "Traceback" not in status.stderr, status.stderr
    assert status.returncode == 0


def test_a_state_error_after_the_lease_keeps_the_run_in_the_summary(tmp_path, monkeypatch):
    """Any state.db write error once a run is off the work queue is reported, not lost."""
    spool = tmp_path / "spool"
    run_id = _log(spool, 50)

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(StateStore, "acquire_lease", full)
    summary = Syncer(spool).run_once()
    [res] = summary.results
    assert res.run_id == run_id and "disk is full" in res.error
    assert res.pending == 51  # 50 metrics and the run's stop: nothing is confirmed
    assert not summary.complete


def test_a_full_disk_at_lease_release_is_reported(tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    _log(spool, 5)

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(StateStore, "release_lease", full)
    summary = Syncer(spool).run_once()
    assert [r.pending for r in summary.results] == [0]
    assert any("leases" in e and "disk is full" in e for e in summary.file_errors)
    out = runner.invoke(app, ["sync", "--dir", str(spool)])
    assert out.exit_code != 0 and "Traceback" not in out.output


@pytest.mark.parametrize("damage", ["garbage", "half", "empty-header"])
def test_status_with_a_damaged_state_file(tmp_path, damage):
    spool = tmp_path / "spool"
    _delivered_then_more(spool)
    state = spool / "state.db"
    for extra in spool.glob("state.db-*"):
        extra.unlink()
    data = state.read_bytes()
    if damage == "garbage":
        state.write_bytes(os.urandom(len(data)))
    elif damage == "half":
        state.write_bytes(data[: len(data) // 2])
    else:
        state.write_bytes(b"\0" * 100)
    out = runner.invoke(app, ["status", "--dir", str(spool)])
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    assert out.exit_code == 0, out.output
    assert "state.db" in out.output
    js = runner.invoke(app, ["status", "--json", "--dir", str(spool)])
    data = json.loads(js.stdout)
    [run] = data["runs"]
    [rec] = list_runs(spool)
    events = len(list(iter_events(rec.files, rec.run_id)))
    assert run["events"] == events > 110
    assert [b["pending"] for b in run["backends"]] == [events]  # nothing shown as delivered
    assert any("state.db" in e["path"] for e in data["file_errors"])
    assert runner.invoke(app, ["status", "--dead", "--dir", str(spool)]).exit_code in (0, 1)


def test_runs_with_an_unreadable_spool_file_names_it(tmp_path):
    spool = tmp_path / "spool"
    _log(spool, 5)
    _log(spool, 5)  # writers are closed after each: two writer files
    files = sorted((spool / "spool").glob("*.db"))
    assert len(files) == 2
    os.chmod(files[0], 0)
    try:
        res = _cli_bound_by_modes("runs", "--dir", str(spool))
    finally:
        os.chmod(files[0], 0o600)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "no runs yet" not in res.stdout
    assert files[0].name in res.stderr.replace("\n", "")
