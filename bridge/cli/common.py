"""Helpers shared by the CLI commands: the spool directory option, run lookup, output."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from bridge.config import load
from bridge.query import select_runs
from bridge.spool.reader import RunRecord, list_runs

__all__ = ["DirArg", "DirOption", "console", "err_console", "find_one_run", "resolve_dir", "fmt_ms"]

console = Console()
err_console = Console(stderr=True)

DirOption = typer.Option(None, "--dir", "-d", help="Spool directory (default: BRIDGE_DIR or ~/.bridge).")
DirArg = typer.Argument(None, help="Spool directory (same as --dir).", show_default=False)


def resolve_dir(*candidates: Optional[Path]) -> Path:
    for c in candidates:
        if c is not None:
            return Path(c).expanduser()
    return load().dir


def find_one_run(spool_dir: Path, ref: str) -> RunRecord:
    """A run by id, id prefix (6+ chars), name, or per-project number."""
    records = list_runs(spool_dir)
    key: object = int(ref) if ref.isdigit() and len(ref) < 6 else ref
    if ref == "last":
        found = records[-1:]
    else:
        found = select_runs(records, None, key)
    if not found:
        err_console.print(f"[red]no run {ref!r} in {spool_dir}[/red]")
        raise typer.Exit(2)
    if len(found) > 1:
        err_console.print(f"[red]{ref!r} matches {len(found)} runs; use the run id:[/red]")
        for r in found:
            err_console.print(f"  {r.run_id}  {r.project}#{r.number}  {r.name or ''}")
        raise typer.Exit(2)
    return found[0]


def fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    import datetime as _dt

    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
