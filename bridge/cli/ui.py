"""`bridge ui`: MLflow's UI on the embedded store, or straight from the spool through the
``bridge:`` tracking-store plugin (``--spool``), bound to 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from bridge.adapters.mlflow.embedded import store_exists
from bridge.adapters.mlflow.names import embedded_artifacts, embedded_db, sqlite_uri
from bridge.cli.common import DirOption, err_console, resolve_dir

__all__ = ["register", "ui_command"]


def ui_command(spool: Path, port: int, from_spool: bool = False) -> list[str]:
    """The command line that serves the embedded store, or the spool itself through the
    plugin (listening on loopback only)."""
    if from_spool:
        from bridge.adapters.mlflow.plugin.session import SCHEME

        store = ["--backend-store-uri", f"{SCHEME}://{spool.resolve().as_posix()}"]
    else:
        store = ["--backend-store-uri", sqlite_uri(embedded_db(spool)),
                 "--default-artifact-root", str(embedded_artifacts(spool))]
    return [sys.executable, "-m", "mlflow", "ui", *store,
            "--host", "127.0.0.1", "--port", str(port)]


def ui_cmd(
    port: int = typer.Option(5000, "--port", "-p", help="Port on 127.0.0.1."),
    from_spool: bool = typer.Option(
        False, "--spool", help="Serve the spool itself (every run, synced or not) through "
        "the bridge: tracking-store plugin instead of the embedded store; read-only use."),
    dir: Optional[Path] = DirOption,
) -> None:
    """Open MLflow's UI on the embedded store (synced runs) at http://127.0.0.1:PORT."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        err_console.print("bridge ui needs MLflow: pip install 'tracking-bridge[mlflow]'")
        raise typer.Exit(2)
    spool = resolve_dir(dir)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if from_spool:
        err_console.print(f"serving the spool {spool} at http://127.0.0.1:{port} "
                          "(Ctrl-C stops)")
        raise typer.Exit(subprocess.call(ui_command(spool, port, True), env=env))
    if not store_exists(embedded_db(spool)):  # else `mlflow ui` would create it, unguarded
        err_console.print(f"no embedded MLflow store in {spool} yet: run `bridge demo` or "
                          "`bridge sync --backend mlflow` first")
        raise typer.Exit(2)
    err_console.print(f"serving {embedded_db(spool)} at http://127.0.0.1:{port} (Ctrl-C stops)")
    raise typer.Exit(subprocess.call(ui_command(spool, port), env=env))


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_cmd)
