"""`bridge doctor`: what bridge sees on this machine — never a credential's value."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from bridge.cli.common import DirOption, console, resolve_dir
from bridge.spool.reader import spool_files
from bridge.spool.repair import check_file, salvage
from bridge.spool.schema import filesystem_type, is_network_fs

__all__ = ["CREDENTIAL_VARIABLES", "register"]

CREDENTIAL_VARIABLES = (
    "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    "DATABRICKS_TOKEN", "WANDB_API_KEY", "NEPTUNE_API_TOKEN", "COMET_API_KEY",
)
_SDKS = (("mlflow", "mlflow"), ("wandb", "wandb"), ("neptune", "neptune"),
         ("comet_ml", "comet-ml"), ("pandas", "pandas"), ("pyarrow", "pyarrow"))


def doctor_cmd(
    dir: Optional[Path] = DirOption,
    repair: bool = typer.Option(False, "--repair",
                                help="Salvage damaged spool files into new ones (the originals "
                                     "move to <dir>/quarantine)."),
) -> None:
    """Spool directory, filesystem, SQLite, installed vendor SDKs, credential variables set."""
    spool = resolve_dir(dir)
    t = Table(title="bridge doctor", show_header=False)
    t.add_column("check")
    t.add_column("result")
    from bridge import __version__

    t.add_row("bridge", __version__)
    t.add_row("python", sys.version.split()[0] + f" ({sys.executable})")
    t.add_row("sqlite", sqlite3.sqlite_version)
    exists = spool.exists()
    writable = os.access(spool if exists else spool.parent, os.W_OK)
    t.add_row("spool dir", f"{spool} ({'exists' if exists else 'not created yet'}, "
                           f"{'writable' if writable else 'NOT writable'})")
    fs = filesystem_type(spool if exists else spool.parent) or "unknown"
    journal = "rollback journal (network filesystem)" if is_network_fs(
        spool if exists else spool.parent) else "WAL"
    t.add_row("filesystem", f"{fs}; journal: {journal}")
    files = spool_files(spool) if exists else []
    checks = [check_file(f) for f in files]
    bad = [c for c in checks if not c.ok]
    t.add_row("spool files", f"{len(files)} ({len(bad)} damaged or unreadable)")
    for name, dist in _SDKS:
        if importlib.util.find_spec(name) is None:
            t.add_row(f"sdk {dist}", "not installed")
        else:
            try:
                t.add_row(f"sdk {dist}", metadata.version(dist))
            except metadata.PackageNotFoundError:
                t.add_row(f"sdk {dist}", "installed")
    space = _space_rows(t, spool) if exists else []
    set_vars = [v for v in CREDENTIAL_VARIABLES if os.environ.get(v)]
    t.add_row("credential variables set", ", ".join(set_vars) or "none")
    console.print(t)
    for warning in space:
        console.print(f"[yellow]warning: {warning}[/yellow]")
    for c in bad:
        console.print(f"[red]{c.path.name}: {c.problem}[/red]")
    if bad and not repair:
        console.print("run `bridge doctor --repair` to salvage what these files still hold")
    if repair:
        failed = 0
        for c in bad:
            rep = salvage(c.path, spool)
            if rep.target is None:
                failed += 1
                console.print(f"[red]{c.path.name}: not repaired: {rep.error}[/red]")
                continue
            console.print(f"{c.path.name}: salvaged {rep.runs} runs and {rep.events} events into "
                          f"{rep.target.name}; {rep.unreadable_rows} unreadable rows; original "
                          f"moved to {rep.quarantined}")
        if failed:
            raise typer.Exit(1)
    elif bad:
        raise typer.Exit(1)


def _space_rows(t: Table, spool: Path) -> list[str]:
    """Disk rows of the table; the warnings to print, with what `bridge prune` would free."""
    from bridge.agent.retention import prune
    from bridge.config import load
    from bridge.spool.sizes import disk_usage, human_bytes, space_warnings

    usage = disk_usage(spool)
    t.add_row("spool size", f"{human_bytes(usage.spool_bytes)} (blobs "
                            f"{human_bytes(usage.blob_bytes)}, other files such as vendor "
                            f"offline output {human_bytes(usage.other_bytes)})")
    t.add_row("vendor files", _vendor_row(spool))
    t.add_row("disk free", f"{human_bytes(usage.fs_free)} of {human_bytes(usage.fs_total)}")
    quota = int(load().quota_gb * 1e9)
    if quota:
        t.add_row("quota", f"{human_bytes(quota)} (quota_gb)")
    warnings = space_warnings(usage, quota)
    if warnings:
        freed = prune(spool, dry_run=True).report
        warnings.append(f"`bridge prune` would free {len(freed.runs)} delivered runs, "
                        f"{human_bytes(freed.bytes)} (`bridge prune --dry-run` lists them; "
                        "`--include-dead` or syncing pending runs frees more)")
    return warnings


def _vendor_row(spool: Path) -> str:
    """The vendor offline files bridge wrote: how many, their upload state and size."""
    from bridge.spool.sizes import human_bytes
    from bridge.spool.vendor_files import SYNCED, list_vendor_files

    try:
        files = list_vendor_files(spool)
    except Exception as exc:  # doctor reports, never fails on this
        return f"not listed: {exc}"
    if not files:
        return "none"
    synced = [f for f in files if f.state == SYNCED]
    return (f"{len(files)} ({human_bytes(sum(f.bytes for f in files))}); {len(synced)} synced "
            f"({human_bytes(sum(f.bytes for f in synced))}), {len(files) - len(synced)} not "
            "known to be uploaded; `bridge prune --vendor-files --dry-run` lists them")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_cmd)
