"""`bridge runs`, `bridge show`, `bridge export`: the spool, read locally."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from bridge.cli.common import DirOption, console, err_console, find_one_run, fmt_ms, resolve_dir
from bridge.redact import redact_argv, redact_json, redact_text
from bridge.spool.reader import list_runs, select_events

__all__ = ["register"]


def runs_cmd(
    project: Optional[str] = typer.Option(None, "--project", "-p", help="Only this project."),
    dir: Optional[Path] = DirOption,
) -> None:
    """List the runs in the spool, numbered per project in start order."""
    spool = resolve_dir(dir)
    errors: list = []
    records = list_runs(spool, errors)
    if project:
        records = [r for r in records if r.project == project]
    table = Table(title=f"runs in {spool}", box=box.SIMPLE_HEAD)
    from bridge.spool.sizes import human_bytes, run_sizes

    sizes = run_sizes(spool)
    for col in ("project", "#", "run id", "name", "status", "started (UTC)", "size"):
        table.add_column(col, no_wrap=True)
    table.add_column("nodes", overflow="fold", min_width=6)
    table.add_column("backends", overflow="fold", min_width=8)
    for r in records:
        table.add_row(r.project, str(r.number), r.run_id[:12], r.name or "", r.status,
                      fmt_ms(r.start_ms),
                      human_bytes(sizes[r.run_id].total) if r.run_id in sizes else "-",
                      ",".join(sorted({f.node for f in r.files})),
                      ",".join(b["name"] for b in r.backends))
    console.print(table)
    for r in records:
        if r.dropped:
            err_console.print(f"[yellow]run {r.run_id[:12]}: {r.dropped} events dropped (the "
                              "spool could not store them; see the run's warnings)[/yellow]")
    for e in errors:
        err_console.print(f"[red]unreadable spool file {e.path}: {e.error}[/red]")
    if errors:
        raise typer.Exit(1)  # the list above may be missing runs
    if not records:
        console.print("no runs yet: try `bridge demo`")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value)
        return text if len(text) < 80 else text[:77] + "..."
    return str(value)


def show_cmd(
    run: str = typer.Argument(..., help="Run id, id prefix, name, number, or 'last'."),
    dir: Optional[Path] = DirOption,
) -> None:
    """Show one run: params, tags, summary, metrics, artifacts, sync state."""
    spool = resolve_dir(dir)
    rec = find_one_run(spool, run)
    console.print(f"[bold]{rec.project}[/bold] #{rec.number}  {rec.run_id}  {rec.name or ''}")
    console.print(f"status {rec.status}   started {fmt_ms(rec.start_ms)}   ended "
                  f"{fmt_ms(rec.end_ms)}   files {len(rec.files)}   nodes "
                  f"{','.join(sorted({f.node for f in rec.files}))}")
    from bridge.spool.sizes import human_bytes, run_sizes

    size = run_sizes(spool).get(rec.run_id)
    if size is not None:
        console.print(f"on disk {human_bytes(size.total)}: events {human_bytes(size.events)}, "
                      f"blobs {human_bytes(size.blobs)}")
    if rec.warnings or rec.dropped:
        console.print(f"[yellow]{rec.warnings} inputs refused or normalized, "
                      f"{rec.dropped} events dropped[/yellow]")
    params: dict = {}
    tags: dict = {}
    summary: dict = {}
    artifacts: list = []
    metrics: dict[str, dict] = {}
    for f in rec.files:
        for ev in select_events(f, rec.run_id):
            if ev.kind == "metric":
                m = metrics.setdefault(ev.key or "", {"n": 0, "last": None, "step": None,
                                                      "min": math.inf, "max": -math.inf})
                m["n"] += 1
                m["last"], m["step"] = ev.value, ev.step
                if ev.value is not None and not math.isnan(ev.value):
                    m["min"] = min(m["min"], ev.value)
                    m["max"] = max(m["max"], ev.value)
            elif ev.kind == "param":
                params[ev.key] = ev.payload
            elif ev.kind == "tag":
                tags[ev.key] = ev.payload
            elif ev.kind == "summary":
                summary[ev.key] = ev.payload
            elif ev.kind == "artifact":
                artifacts.append(ev.payload)
    for title, values in (("params", params), ("tags", tags), ("summary", summary)):
        if values:
            t = Table(title=title, show_header=False)
            t.add_column("key")
            t.add_column("value")
            for k, v in values.items():
                t.add_row(k, _fmt(v))
            console.print(t)
    if metrics:
        t = Table(title="metrics")
        for col in ("key", "points", "last step", "last", "min", "max"):
            t.add_column(col)
        for k, m in metrics.items():
            t.add_row(k, str(m["n"]), "-" if m["step"] is None else str(m["step"]),
                      _fmt(m["last"]), _fmt(m["min"]), _fmt(m["max"]))
        console.print(t)
    if artifacts:
        t = Table(title="artifacts")
        for col in ("name", "type", "files", "bytes"):
            t.add_column(col)
        for a in artifacts:
            t.add_row(a["name"], a.get("type", "file"), str(len(a["files"])),
                      str(sum(x["size"] for x in a["files"])))
        console.print(t)
    from bridge.agent.status import spool_status

    for st in spool_status(spool):
        if st.run_id == rec.run_id and st.backends:
            t = Table(title="sync")
            for col in ("backend", "delivered", "pending", "dead", "remote id", "last error"):
                t.add_column(col)
            for b in st.backends:
                t.add_row(b.backend, str(b.delivered), str(b.pending), str(b.dead),
                          b.remote_id or "-", redact_text(b.last_error or "")[:60])
            console.print(t)


def _redact_system(facts: object) -> object:
    """System facts masked again on export: spools written by older versions of bridge
    recorded ``argv`` with only a few option names masked (see :mod:`bridge.redact`)."""
    if not isinstance(facts, dict):
        return redact_json(facts)
    return {k: redact_argv([str(a) for a in v]) if k == "argv" and isinstance(v, list)
            else redact_json(v) for k, v in facts.items()}


def export_cmd(
    run: str = typer.Argument(..., help="Run id, id prefix, name, number, or 'last'."),
    format: str = typer.Option("csv", "--format", "-f", help="csv, jsonl or parquet."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Output file (default: stdout for csv/jsonl)."),
    dir: Optional[Path] = DirOption,
) -> None:
    """Export a run's events (omega-ml's data() columns) as CSV, JSON lines or Parquet."""
    from bridge.query import data

    spool = resolve_dir(dir)
    rec = find_one_run(spool, run)
    df = data(run=rec.run_id, run_id=True, dir=spool)
    system = df["event"] == "system"
    df.loc[system, "value"] = df.loc[system, "value"].map(_redact_system)
    df["value"] = df["value"].map(
        lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    df["dt"] = df["dt"].map(lambda t: t.isoformat())
    if format == "csv":
        text = df.to_csv(index=False)
    elif format == "jsonl":
        # json.dumps keeps every float digit (pandas' writer rounds to 10); NaN/Infinity are
        # written as Python's json module does.
        import pandas as pd

        records = df.astype(object).to_dict(orient="records")
        text = "".join(
            json.dumps({k: (None if v is pd.NA else v) for k, v in r.items()}, default=str) + "\n"
            for r in records)
    elif format == "parquet":
        if output is None:
            raise typer.BadParameter("parquet needs --output FILE")
        df["value"] = df["value"].map(lambda v: None if v is None else str(v))
        df.to_parquet(output, index=False)
        console.print(f"wrote {len(df)} rows to {output}")
        return
    else:
        raise typer.BadParameter(f"unknown format {format!r}: csv, jsonl or parquet")
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"wrote {len(df)} rows to {output}")


def register(app: typer.Typer) -> None:
    app.command("runs")(runs_cmd)
    app.command("show")(show_cmd)
    app.command("export")(export_cmd)
