"""Damaged spool files: detected and reported by `bridge status` and `bridge sync`, never
skipped silently; `bridge doctor --repair` salvages what is readable into a new file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

import bridge
from bridge.adapters import memory
from bridge.cli.main import app
from bridge.spool.reader import iter_events, list_runs, spool_files

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_memory():
    memory.STORE.clear()
    yield
    memory.STORE.clear()


def _spool(tmp_path, n=20_000):
    spool = tmp_path / "spool"
    run = bridge.init(project="c", dir=spool, sync="offline",
                      backends=[{"name": "memory", "store": "c"}])
    for i in range(n):
        run.log({"x": float(i), "y": float(i) * 2}, step=i)
    run.finish()
    bridge.writer_pool.close_all()  # checkpoint the WAL into the main file
    [path] = spool_files(spool)
    return spool, run.id, path


def _status(spool):
    out = runner.invoke(app, ["status", "--json", "--dir", str(spool)])
    return out.exit_code, json.loads(out.stdout)


def test_garbage_in_a_page_is_reported_and_repaired(tmp_path):
    spool, run_id, path = _spool(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # overwrite a page in the middle of the events table
        fh.seek((size // 4096 // 2) * 4096)
        fh.write(os.urandom(4096))
    code, status = _status(spool)
    assert code == 0
    problems = [r.get("error") for r in status["runs"]] + [e["error"] for e in status["file_errors"]]
    assert any(p and ("malformed" in p or "damaged" in p or "not a database" in p)
               for p in problems), status
    sync = runner.invoke(app, ["sync", "--dir", str(spool)])
    assert sync.exit_code == 1  # never reports success over a damaged file
    doctor = runner.invoke(app, ["doctor", "--dir", str(spool)], env={"COLUMNS": "200"})
    assert doctor.exit_code == 1 and "--repair" in doctor.output
    repaired = runner.invoke(app, ["doctor", "--repair", "--dir", str(spool)], env={"COLUMNS": "200"})
    assert repaired.exit_code == 0, repaired.output
    assert "salvaged" in repaired.output
    assert (spool / "quarantine" / path.name).exists()
    [new] = spool_files(spool)
    rec = list_runs(spool)[0]
    kept = [e.step for e in iter_events(rec.files, run_id) if e.kind == "metric" and e.key == "x"]
    # every row outside the damaged page is back (an index page costs nothing), in order
    assert 0 < len(kept) <= 20_000 and kept == sorted(kept)
    from bridge.spool.repair import check_file

    assert check_file(new).ok
    assert runner.invoke(app, ["sync", "--dir", str(spool)]).exit_code == 0


def test_truncated_file_is_reported(tmp_path):
    spool, run_id, path = _spool(tmp_path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 3)
    code, status = _status(spool)
    problems = [r.get("error") for r in status["runs"]] + [e["error"] for e in status["file_errors"]]
    assert any(problems), status
    assert runner.invoke(app, ["sync", "--dir", str(spool)]).exit_code == 1
    repaired = runner.invoke(app, ["doctor", "--repair", "--dir", str(spool)], env={"COLUMNS": "200"})
    assert "salvaged" in repaired.output or "not repaired" in repaired.output


def test_newer_schema_is_a_clear_error(tmp_path):
    spool, run_id, path = _spool(tmp_path, n=10)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    code, status = _status(spool)
    assert any("newer than this bridge supports" in e["error"] for e in status["file_errors"])
    sync = runner.invoke(app, ["sync", "--dir", str(spool)], env={"COLUMNS": "200"})
    assert sync.exit_code == 1 and "unreadable spool file" in sync.output
    out = runner.invoke(app, ["doctor", "--repair", "--dir", str(spool)], env={"COLUMNS": "200"})
    assert "upgrade bridge" in out.output


def test_wal_left_by_a_killed_writer_is_read(tmp_path):
    code = textwrap.dedent("""
        import os, signal, sys, bridge
        run = bridge.init(project="w", dir=sys.argv[1], sync="offline",
                          backends=[{"name": "memory", "store": "w"}])
        for i in range(5000):
            run.log({"x": float(i)}, step=i)
        run.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    spool = tmp_path / "spool"
    proc = subprocess.run([sys.executable, "-c", code, str(spool)])
    assert proc.returncode == -signal.SIGKILL
    [path] = (spool / "spool").glob("*.db")  # before any reader opens it
    assert os.path.exists(str(path) + "-wal")
    _, status = _status(spool)
    [run] = status["runs"]
    assert run["status"] == "RUNNING" and run["events"] >= 5000
    assert runner.invoke(app, ["sync", "--dir", str(spool)]).exit_code == 0
    [b] = _status(spool)[1]["runs"][0]["backends"]
    assert b["pending"] == 0 and b["delivered"] == run["events"]
