"""`bridge sync`, `bridge status`, `bridge agent`: deliver the spool and tell the truth about it."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich import box
from rich.table import Table

from bridge.cli.common import DirArg, DirOption, console, err_console, resolve_dir
from bridge.config import load
from bridge.redact import redact_json, redact_text
from bridge.errors import SpoolError

__all__ = ["register", "run_sync"]


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


_SHARD_HELP = ("Deliver only the runs of shard K of N (K is 0-based: 0..N-1), keeping that "
               "shard's own state file; `auto` reads a Slurm job array or a Kubernetes "
               "indexed Job (see docs/sharding.md).")


def _shard(text: Optional[str]) -> Any:
    """``--shard`` as a Shard (None when not given)."""
    if text is None:
        return None
    from bridge.agent.shards import parse_shard
    from bridge.errors import ConfigError

    try:
        return parse_shard(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard") from None


def _layout_refused(exc: Exception) -> None:
    err_console.print(f"[red]{redact_text(str(exc))}[/red]")
    raise typer.Exit(2)


def run_sync(spool: Path, backends: list[str] | None = None, runs: list[str] | None = None,
             dry_run: bool = False, retry_dead: bool = False, quiet: bool = False,
             stop: threading.Event | None = None, shard: Any = None):
    """One full sync pass with a progress bar; returns the SyncSummary."""
    from bridge.agent.sync import Syncer

    stop = stop or threading.Event()
    config = load()
    settings = config.agent
    tasks: dict[tuple[str, str], Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, disable=quiet,
                  transient=False) as progress:

        def on_progress(backend: str, run_id: str, done: int, total: int) -> None:
            key = (backend, run_id)
            if key not in tasks:
                tasks[key] = progress.add_task(f"{backend:>8} {run_id[:12]}", total=total)
            progress.update(tasks[key], completed=done)

        syncer = Syncer(spool, settings=settings, backends=backends, runs=runs, stop=stop,
                        progress=on_progress, retry_dead=retry_dead, dry_run=dry_run,
                        backend_options=config.backend_options, shard=shard)
        try:
            return syncer.run_once()
        finally:
            syncer.shutdown()


def _summary_table(summary: Any, dry_run: bool) -> Table:
    table = Table(title="dry run: what would be delivered" if dry_run else "sync",
                  box=box.SIMPLE_HEAD)
    for col in ("run", "backend", "delivered", "dead", "pending"):
        table.add_column(col, no_wrap=True)
    table.add_column("remote id", max_width=34, no_wrap=True, overflow="ellipsis")
    table.add_column("note", overflow="fold")
    for r in summary.results:
        note = redact_text(r.error or r.skipped or ("closed" if r.closed else ""))
        table.add_row(r.run_id[:12], r.backend, str(r.delivered), str(r.dead), str(r.pending),
                      r.remote_id or "-", note[:70])
    return table


def sync_cmd(
    path: Optional[Path] = DirArg,
    dir: Optional[Path] = DirOption,
    backend: Optional[List[str]] = typer.Option(None, "--backend", "-b",
                                                help="Only this backend (repeatable); a run "
                                                     "without it is delivered there with "
                                                     "default options."),
    run: Optional[List[str]] = typer.Option(None, "--run", "-r", help="Only this run (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be delivered."),
    retry_dead: bool = typer.Option(False, "--retry-dead",
                                    help="Deliver dead letters again (after fixing the cause)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N", help=_SHARD_HELP),
    reshard: Optional[int] = typer.Option(None, "--reshard", metavar="N",
                                          help="Fold every state file into the layout of N "
                                               "shards (1 = unsharded), then exit; run once "
                                               "with no agent running, before the shards."),
) -> None:
    """Deliver every pending event; exit 0 only when everything is delivered."""
    from bridge.agent.shards import ShardLayoutError

    spool = resolve_dir(path, dir)
    if reshard is not None:
        _reshard(spool, reshard, json_out)
        return
    which = _shard(shard)
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        summary = run_sync(spool, backend, run, dry_run, retry_dead, quiet=json_out, stop=stop,
                           shard=which)
    except ShardLayoutError as exc:
        _layout_refused(exc)
    if json_out:
        print(json.dumps({"complete": summary.complete, "file_errors": summary.file_errors,
                          "results": redact_json([r.__dict__ for r in summary.results])},
                         indent=2))
    else:
        if summary.results:
            console.print(_summary_table(summary, dry_run))
        else:
            console.print(f"nothing to sync in {spool} (no run names a backend; "
                          "use --backend NAME to choose one)")
        for e in summary.file_errors:
            err_console.print(f"[red]unreadable spool file: {redact_text(str(e))}[/red]")
    if dry_run:
        raise typer.Exit(0)
    if not summary.complete:
        left = sum(max(r.pending, 0) for r in summary.results)
        dead = sum(r.dead for r in summary.results)
        err_console.print(f"[red]not everything was delivered: {left} events pending"
                          f"{', ' + str(len(summary.file_errors)) + ' unreadable files' if summary.file_errors else ''}"
                          f"; see `bridge status`[/red]")
        raise typer.Exit(1)
    dead = sum(r.dead for r in summary.results)
    if dead:
        err_console.print(f"[yellow]{dead} events refused by a backend (dead letters); "
                          "see `bridge status`[/yellow]")


def _reshard(spool: Path, count: int, json_out: bool) -> None:
    from bridge.agent.shards import reshard

    try:
        report = reshard(spool, count)
    except (SpoolError, sqlite3.Error, OSError, ValueError) as exc:
        err_console.print(f"[red]reshard stopped: {redact_text(str(exc))}; every run's state "
                          "is still in the old files: fix the cause and run it again[/red]")
        raise typer.Exit(1)
    if json_out:
        print(json.dumps(report.__dict__, indent=2))
    else:
        console.print(f"resharded {spool} into {count} shard(s): {report.runs} (backend, run) "
                      f"states moved from {', '.join(report.sources) or 'nothing'} to "
                      f"{', '.join(report.targets)}")


def status_cmd(
    path: Optional[Path] = DirArg,
    dir: Optional[Path] = DirOption,
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
    dead: bool = typer.Option(False, "--dead", help="List every dead letter with its reason."),
) -> None:
    """Per run and backend: delivered, pending, dead, last error, remote id."""
    from bridge.agent.state import StateStore
    from bridge.agent.status import spool_status

    spool = resolve_dir(path, dir)
    errors: list = []
    statuses = spool_status(spool, errors)
    if json_out:
        from bridge.spool.sizes import run_sizes

        sizes = run_sizes(spool)
        runs = []
        for s in statuses:
            size = sizes.get(s.run_id)
            runs.append({**s.as_dict(), "bytes": {"events": size.events if size else 0,
                                                   "blobs": size.blobs if size else 0}})
        print(json.dumps({"dir": str(spool), "runs": redact_json(runs),
                          "file_errors": [{"path": str(e.path), "error": e.error} for e in errors]},
                         indent=2))
        return
    table = Table(title=f"sync status of {spool}", box=box.SIMPLE_HEAD)
    for col in ("run", "status", "events", "backend", "delivered", "pending", "dead"):
        table.add_column(col, no_wrap=True)
    table.add_column("remote id", max_width=12, no_wrap=True, overflow="ellipsis")
    table.add_column("error", overflow="fold", min_width=8)
    for s in statuses:
        label = s.run_id[:12]
        if s.error and not s.backends:
            table.add_row(label, s.status, str(s.events), "-", "-", "-", "-", "-",
                          redact_text(s.error)[:160])
        elif not s.backends:
            table.add_row(label, s.status, str(s.events), "-", "-", "-", "-", "-", "no backend")
        for b in s.backends:
            table.add_row(label, s.status, str(s.events), b.backend, str(b.delivered),
                          str(b.pending), str(b.dead), redact_text(b.url or b.remote_id or "-"),
                          redact_text(b.last_error or "")[:80])
        if s.warnings or s.dropped:
            table.add_row("", "", "", "", "", "", "", "",
                          f"{s.warnings} bad inputs, {s.dropped} dropped")
    console.print(table)
    for e in errors:
        err_console.print(f"[red]unreadable spool file {e.path}: {e.error}[/red]")
    if dead:
        from bridge.agent.shards import StateView, is_sharded

        try:
            store = StateView(spool) if is_sharded(spool) else StateStore(spool)
            try:
                for d in store.dead_letters():
                    console.print(f"{d.backend} {d.run_id[:12]} {d.file_id}#{d.seq}: "
                                  f"{redact_text(d.reason)}")
            finally:
                store.close()
        except (SpoolError, sqlite3.Error, OSError) as exc:
            err_console.print(f"[red]cannot read the dead letters: {exc}[/red]")
            raise typer.Exit(1)


def agent_cmd(
    path: Optional[Path] = DirArg,
    dir: Optional[Path] = DirOption,
    interval: Optional[float] = typer.Option(None, "--interval", "-i",
                                             help="Seconds between passes (default 5)."),
    once: bool = typer.Option(False, "--once", help="One pass, then exit."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N", help=_SHARD_HELP),
) -> None:
    """Watch a spool directory and sync continuously (e.g. on a login node)."""
    from bridge.agent.sync import Syncer

    from bridge.agent.shards import ShardLayoutError

    spool = resolve_dir(path, dir)
    which = _shard(shard)
    settings = load().agent
    wait = interval if interval is not None else settings.interval
    stop = threading.Event()
    _stop_on_signals(stop)
    syncer = Syncer(spool, settings=settings, stop=stop, shard=which)
    part = f" as shard {which}" if which is not None else ""
    console.print(f"bridge agent watching {spool}{part} every {wait}s (Ctrl-C to stop)")
    try:
        while not stop.is_set():
            try:
                summary = syncer.run_once()
            except ShardLayoutError as exc:
                _layout_refused(exc)
            moved = sum(r.delivered + r.dead for r in summary.results)
            if moved:
                console.print(f"delivered {moved} events "
                              f"({sum(r.pending for r in summary.results)} pending)")
            for r in summary.results:
                if r.error and r.error != "stopped":
                    err_console.print(f"[yellow]{r.backend} {r.run_id[:12]}: "
                                      f"{redact_text(r.error)[:200]}"
                                      "[/yellow]")
            _retain(spool, settings.retention_days, which)
            if once:
                break
            stop.wait(wait)
    finally:
        syncer.shutdown()
    console.print("bridge agent stopped; cursors saved")


def _retain(spool: Path, days: float, shard: Any = None) -> None:
    """The retention setting, applied after each pass (off when 0)."""
    from bridge.agent.retention import apply_retention
    from bridge.spool.sizes import human_bytes

    outcome = apply_retention(spool, days, shard)
    if outcome is None:
        return
    r = outcome.report
    if r.runs:
        console.print(f"retention ({days:g} days): pruned {len(r.runs)} runs, {r.events} "
                      f"events, {human_bytes(r.bytes)}")
    for e in outcome.errors:
        err_console.print(f"[yellow]retention: {redact_text(e)}[/yellow]")


def register(app: typer.Typer) -> None:
    app.command("sync")(sync_cmd)
    app.command("status")(status_cmd)
    app.command("agent")(agent_cmd)
