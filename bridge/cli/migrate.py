"""`bridge import`, `bridge migrate`, `bridge verify`: move history between trackers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich import box
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge.cli.common import DirOption, console, err_console, resolve_dir
from bridge.redact import redact_text, redact_url

__all__ = ["register"]

SOURCE_HELP = "mlflow, wandb, neptune, neptune-scale, comet, tensorboard, trackio or clearml."


def _importer(source: str, location: str, experiment: list[str] | None, filter: str | None,
              project: str | None) -> Any:
    from bridge.importers import make_importer
    from bridge.adapters.importing import ImportError_

    opts: dict[str, Any] = {}
    if experiment:
        opts["experiments"] = experiment
    if filter:
        opts["filter"] = filter
    if project:
        opts["project"] = project
    try:
        return make_importer(source, location, **opts)
    except TypeError as exc:
        raise typer.BadParameter(f"{source}: {exc}") from exc
    except ImportError_ as exc:
        err_console.print(f"[red]cannot import: {redact_text(str(exc))}[/red]")
        raise typer.Exit(2) from exc


def _do_import(source: str, location: str, spool: Path, backends: list[dict],
               experiment: list[str] | None, filter: str | None, project: str | None,
               runs: list[str] | None) -> list:
    from bridge.adapters.importing import ImportError_
    from bridge.importers.sink import import_runs

    importer = _importer(source, location, experiment, filter, project)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(run: Any, n: int) -> None:
            if run.run_id not in tasks:
                tasks[run.run_id] = progress.add_task("")
            progress.update(tasks[run.run_id],
                            description=f"import {source} {run.source_id}: {n} events")

        try:
            imported = import_runs(importer, spool, backends=backends, only=runs,
                                   progress=on_progress)
        except ImportError_ as exc:
            err_console.print(f"[red]import failed: {redact_text(str(exc))}[/red]")
            raise typer.Exit(2) from exc
    for warning in getattr(importer, "warnings", []) or []:
        err_console.print(f"[yellow]skipped: {redact_text(str(warning))}[/yellow]")
    if not imported and not runs:
        from bridge.importers import recognise

        seen = recognise(location) if Path(location).exists() else []
        err_console.print(f"[red]no {source} run found in {redact_text(location)}"
                          + (f"; it holds: {', '.join(seen)}" if seen else "") + "[/red]")
        raise typer.Exit(1)
    return imported


def _import_table(imported: list) -> Table:
    table = Table(title="imported", box=box.SIMPLE_HEAD)
    for col in ("source id", "bridge run", "project", "name", "events", "metric points", "note"):
        table.add_column(col, overflow="fold")
    for r in imported:
        table.add_row(r.source_id, r.run_id[:12], r.project, r.name or "",
                      str(sum(r.counts.values())), str(sum(r.points.values())),
                      "already imported" if r.skipped else "")
    return table


def import_cmd(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    location: str = typer.Argument(..., help="Tracking URI, directory or file of the source."),
    experiment: Optional[List[str]] = typer.Option(None, "--experiment", "-e",
                                                   help="MLflow experiment name or id (repeatable)."),
    filter: Optional[str] = typer.Option(None, "--filter", help="MLflow search filter."),
    project: Optional[str] = typer.Option(None, "--project", "-p",
                                          help="Project for sources without one."),
    run: Optional[List[str]] = typer.Option(None, "--run", "-r",
                                            help="Only this source run id (repeatable)."),
    dir: Optional[Path] = DirOption,
) -> None:
    """Import a tracker's history into the spool (resumable; never duplicates)."""
    spool = resolve_dir(dir)
    imported = _do_import(source, location, spool, [], experiment, filter, project, run)
    console.print(_import_table(imported))
    console.print(f"{len(imported)} runs in {spool}; deliver them with "
                  "`bridge sync --backend NAME`")


def _parse_opts(to: list[str], opts: list[str]) -> list[dict]:
    specs = {name: {"name": name} for name in to}
    for item in opts:
        target, _, rest = item.partition(".")
        key, eq, value = rest.partition("=")
        if target not in specs or not key or not eq:
            raise typer.BadParameter(f"--to-opt must be BACKEND.key=value for a --to backend, "
                                     f"got {item!r}")
        specs[target][key] = value
    return list(specs.values())


def _report_table(reports: list) -> Table:
    table = Table(title="fidelity", box=box.SIMPLE_HEAD)
    for col in ("run", "backend", "points", "steps", "timestamps", "params", "tags", "summary",
                "artifacts", "media", "media files", "start", "note"):
        table.add_column(col, overflow="fold")

    def cell(rep: Any, name: str) -> str:
        c = rep.fields.get(name)
        return "-" if c is None else f"{c.kept}/{c.expected}"

    for rep in reports:
        table.add_row(rep.run_id[:12], rep.backend, cell(rep, "points"), cell(rep, "steps"),
                      cell(rep, "timestamps"), cell(rep, "params"), cell(rep, "tags"),
                      cell(rep, "summary"), cell(rep, "artifact_files"), cell(rep, "media"),
                      cell(rep, "media_files"), cell(rep, "start_time"),
                      "; ".join(rep.notes) or ("" if rep.found else "not found"))
    return table


def migrate_cmd(
    location: str = typer.Argument(..., help="Tracking URI, directory or file of the source."),
    source: str = typer.Option(..., "--from", help=SOURCE_HELP),
    to: str = typer.Option(..., "--to", help="Destination backends, comma separated."),
    to_opt: Optional[List[str]] = typer.Option(None, "--to-opt",
                                               help="BACKEND.key=value option (repeatable), "
                                                    "e.g. wandb.mode=offline."),
    experiment: Optional[List[str]] = typer.Option(None, "--experiment", "-e",
                                                   help="MLflow experiment name or id (repeatable)."),
    filter: Optional[str] = typer.Option(None, "--filter", help="MLflow search filter."),
    project: Optional[str] = typer.Option(None, "--project", "-p",
                                          help="Project for sources without one."),
    run: Optional[List[str]] = typer.Option(None, "--run", "-r",
                                            help="Only this source run id (repeatable)."),
    report: Optional[Path] = typer.Option(None, "--report",
                                          help="Fidelity report JSON (default: in the spool)."),
    dir: Optional[Path] = DirOption,
) -> None:
    """Import from a source and deliver to backends, then verify and report fidelity."""
    from bridge.cli.sync import run_sync
    from bridge.verify import verify_run

    spool = resolve_dir(dir)
    names = [t.strip() for t in to.split(",") if t.strip()]
    from bridge.run import normalize_backends

    specs = normalize_backends(_parse_opts(names, to_opt or []))
    imported = _do_import(source, location, spool, specs, experiment, filter, project, run)
    console.print(_import_table(imported))
    ids = [r.run_id for r in imported]
    if not ids:
        err_console.print("[yellow]nothing to migrate[/yellow]")
        raise typer.Exit(1)
    summary = run_sync(spool, backends=[s.get("id") or s["name"] for s in specs], runs=ids)
    reports = []
    for run_id in ids:
        for spec in specs:
            try:
                reports.append(verify_run(spool, run_id, spec.get("id") or spec["name"]))
            except Exception as exc:  # a reader that cannot read this backend
                from bridge.verify import FidelityReport

                reports.append(FidelityReport(run_id, spec["name"], False,
                                              notes=[f"cannot verify: {redact_text(str(exc))}"]))
    console.print(_report_table(reports))
    path = report or spool / "reports" / f"migrate-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"source": source, "location": redact_url(location), "to": specs,
                                "sync_complete": summary.complete,
                                "runs": [r.as_dict() for r in reports]}, indent=2))
    console.print(f"fidelity report: {path}")
    if not summary.complete or not all(r.found for r in reports):
        raise typer.Exit(1)


def verify_cmd(
    run: str = typer.Argument(..., help="Run id (or a 6+ character prefix)."),
    backend: str = typer.Option(..., "--backend", "-b", help="Backend name or id."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    dir: Optional[Path] = DirOption,
) -> None:
    """Read a run back from a backend and diff it with the spool."""
    from bridge.cli.common import find_one_run
    from bridge.verify import verify_run

    spool = resolve_dir(dir)
    rec = find_one_run(spool, run)
    rep = verify_run(spool, rec.run_id, backend)
    if json_out:
        print(json.dumps(rep.as_dict(), indent=2))
    else:
        console.print(_report_table([rep]))
        if rep.per_key:
            t = Table(title="metric points per key", box=box.SIMPLE_HEAD)
            for col in ("key", "expected", "found", "kept", "steps kept", "timestamps kept"):
                t.add_column(col)
            for key, c in rep.per_key.items():
                t.add_row(key, str(c["expected"]), str(c["found"]), str(c["kept"]),
                          str(c["steps_kept"]), str(c["timestamps_kept"]))
            console.print(t)
        if rep.media_per_key:
            t = Table(title="media per key", box=box.SIMPLE_HEAD)
            for col in ("key", "events", "found", "kept", "files", "files kept", "data kept"):
                t.add_column(col)
            for key, c in rep.media_per_key.items():
                t.add_row(key, str(c["expected"]), str(c["found"]), str(c["kept"]),
                          str(c["files"]), str(c["files_kept"]), str(c["data_kept"]))
            console.print(t)
    if not rep.complete:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("import")(import_cmd)
    app.command("migrate")(migrate_cmd)
    app.command("verify")(verify_cmd)
