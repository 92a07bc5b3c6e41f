"""`bridge import` tells what went wrong instead of a traceback or a silent "0 runs"."""

from __future__ import annotations

import sqlite3

from typer.testing import CliRunner

from bridge.cli.main import app

runner = CliRunner()


def test_unknown_source_is_a_clear_error(tmp_path):
    out = runner.invoke(app, ["import", "clearml-typo", str(tmp_path), "--dir",
                              str(tmp_path / "spool")])
    assert out.exit_code == 2
    assert out.exception is None or isinstance(out.exception, SystemExit)  # no traceback
    assert "unknown source 'clearml-typo'" in out.output and "mlflow" in out.output


def test_a_source_with_no_run_says_what_it_found(tmp_path):
    """neptune-scale files given to the Neptune 1.x importer: say so, exit non-zero."""
    run_dir = tmp_path / ".neptune" / "proj_abc_123"
    run_dir.mkdir(parents=True)
    conn = sqlite3.connect(run_dir / "run_operations.sqlite3")
    conn.execute("CREATE TABLE run_operations (sequence_id INTEGER PRIMARY KEY, operation BLOB)")
    conn.commit()
    conn.close()
    out = runner.invoke(app, ["import", "neptune", str(tmp_path), "--dir", str(tmp_path / "sp")])
    assert out.exit_code == 1, out.output
    assert "no neptune run found" in out.output
    assert "neptune-scale" in out.output


def test_an_empty_directory_is_not_a_success(tmp_path):
    (tmp_path / "logs").mkdir()
    out = runner.invoke(app, ["import", "tensorboard", str(tmp_path / "logs"), "--dir",
                              str(tmp_path / "sp")])
    assert out.exit_code == 1, out.output
    assert "no tensorboard run found" in out.output
