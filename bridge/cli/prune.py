"""`bridge prune`: give back the space of runs every backend holds, never what one still needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich import box
from rich.table import Table

from bridge.cli.common import DirArg, DirOption, console, err_console, resolve_dir
from bridge.redact import redact_json, redact_text

__all__ = ["register"]


def prune_cmd(
    path: Optional[Path] = DirArg,
    dir: Optional[Path] = DirOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed."),
    run: Optional[List[str]] = typer.Option(None, "--run", "-r",
                                            help="Only this run: id, id prefix or name "
                                                 "(repeatable)."),
    project: Optional[str] = typer.Option(None, "--project", "-p", help="Only this project."),
    older_than: Optional[str] = typer.Option(None, "--older-than",
                                             help="Only runs finished longer ago than this "
                                                  "(30d, 12h, 90m)."),
    backend: Optional[List[str]] = typer.Option(None, "--backend", "-b",
                                                help="Only runs that name this backend "
                                                     "(repeatable); every backend of the run "
                                                     "must still hold it."),
    include_dead: bool = typer.Option(False, "--include-dead",
                                      help="Also remove runs whose only leftovers are dead "
                                           "letters (events a backend refused for good)."),
    vendor_files: bool = typer.Option(False, "--vendor-files",
                                      help="Instead of runs: list the W&B, Comet and Neptune "
                                           "offline files bridge wrote with their upload "
                                           "state, and remove those the vendor marks synced."),
    confirm_uploaded: bool = typer.Option(False, "--confirm-uploaded",
                                          help="With --vendor-files: you confirm the listed "
                                               "files (narrow with --backend/--run) were "
                                               "uploaded; remove them too."),
    json_out: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Remove finished runs that every backend confirmed: events, files, unreferenced blobs."""
    from bridge.agent.retention import parse_age, prune
    from bridge.spool.sizes import human_bytes

    spool = resolve_dir(path, dir)
    if confirm_uploaded and not vendor_files:
        raise typer.BadParameter("only with --vendor-files", param_hint="--confirm-uploaded")
    if vendor_files:
        _vendor_files(spool, confirm_uploaded, backend, run, dry_run, json_out)
        return
    try:
        age = parse_age(older_than) if older_than is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from None
    outcome = prune(spool, runs=run, project=project, older_than_s=age, backends=backend,
                    include_dead=include_dead, dry_run=dry_run)
    if json_out:
        print(json.dumps(redact_json(outcome.as_dict()), indent=2))
    else:
        title = "dry run: what prune would remove" if dry_run else f"prune {spool}"
        table = Table(title=title, box=box.SIMPLE_HEAD)
        for col in ("run", "project", "name", "status", "events", "bytes", "action"):
            table.add_column(col, no_wrap=col != "action", overflow="fold")
        for v in outcome.runs:
            action = ("would remove" if dry_run else "removed") if v.prune else (
                "kept: " + redact_text(v.reason))
            table.add_row(v.run_id[:12], v.project, v.name or "", v.status, str(v.events),
                          human_bytes(v.bytes), action)
        if outcome.runs:
            console.print(table)
        r = outcome.report
        verb = "would free" if dry_run else "freed"
        console.print(f"{verb} {len(r.runs)} runs, {r.events} events, {human_bytes(r.bytes)} "
                      f"({human_bytes(r.event_bytes)} spool files, {r.blobs} blobs "
                      f"{human_bytes(r.blob_bytes)})")
    for e in outcome.errors:
        err_console.print(f"[red]{redact_text(e)}[/red]")
    if any(e.startswith("prune stopped") for e in outcome.errors):
        raise typer.Exit(1)


def _vendor_files(spool: Path, confirm_uploaded: bool, backend: Optional[List[str]],
                  run: Optional[List[str]], dry_run: bool, json_out: bool) -> None:
    from bridge.spool.sizes import human_bytes
    from bridge.spool.vendor_files import prune_vendor_files

    files, errors = prune_vendor_files(spool, confirm_uploaded=confirm_uploaded,
                                       backends=backend, runs=run, dry_run=dry_run)
    gone = [f for f in files if f.action in ("removed", "would remove")]
    if json_out:
        print(json.dumps(redact_json({"dry_run": dry_run,
                                      "freed": {"files": len(gone),
                                                "bytes": sum(f.bytes for f in gone)},
                                      "files": [f.as_dict() for f in files],
                                      "errors": errors}), indent=2))
    else:
        title = "dry run: vendor files" if dry_run else "vendor files"
        table = Table(title=title, box=box.SIMPLE_HEAD)
        for col in ("backend", "run", "state", "bytes", "path", "action"):
            table.add_column(col, no_wrap=col not in ("path", "action"), overflow="fold")
        for f in files:
            table.add_row(f.backend, (f.run_id or "?")[:12], f.state, human_bytes(f.bytes),
                          redact_text(str(f.path)), redact_text(f.action))
        if files:
            console.print(table)
        verb = "would free" if dry_run else "freed"
        console.print(f"{verb} {len(gone)} vendor files, "
                      f"{human_bytes(sum(f.bytes for f in gone))}")
    for e in errors:
        err_console.print(f"[red]{redact_text(e)}[/red]")
    if errors:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_cmd)
