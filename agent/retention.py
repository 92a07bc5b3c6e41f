"""Which runs every backend holds, and pruning them: `bridge prune` and the agent's retention.

A run may be pruned only when it is finished, names at least one backend (a run no backend
holds has its only copy in the spool), and every backend it names — or that has delivery
state for it — has it closed with nothing pending and, unless ``include_dead``, no dead
letters. The removal itself, and its refusal to touch a live writer's file or a blob a kept
event names, is :mod:`bridge.spool.prune`'s. On a sharded spool the verdict reads every
shard's state file, each run's lease and leftovers are taken in the state file that owns it,
and a shard's agent prunes only its own runs.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bridge.agent.shards import DEFAULT_STATE, Shard, check_layout, current_count, is_sharded
from bridge.agent.shards import state_file_name, shard_of
from bridge.agent.state import StateStore, holder_id
from bridge.agent.status import RunStatus, spool_status
from bridge.errors import SpoolError
from bridge.spool.prune import RemovalReport, remove_runs, scan_files
from bridge.spool.sizes import run_sizes

__all__ = ["PruneOutcome", "RunVerdict", "apply_retention", "parse_age", "prune"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` or plain seconds, as seconds."""
    t = text.strip().lower()
    try:
        if t and t[-1] in _UNITS:
            return float(t[:-1]) * _UNITS[t[-1]]
        return float(t)
    except ValueError:
        raise ValueError(f"cannot read age {text!r}: use e.g. 30d, 12h, 90m") from None


@dataclass
class RunVerdict:
    """One selected run: pruned (or, in a dry run, prunable) or kept, and why."""

    run_id: str
    project: str
    name: str | None
    status: str
    events: int
    bytes: int
    prune: bool
    reason: str  # why it is kept ("" when pruned)


@dataclass
class PruneOutcome:
    dry_run: bool
    runs: list[RunVerdict] = field(default_factory=list)
    report: RemovalReport = field(default_factory=RemovalReport)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        r = self.report
        return {"dry_run": self.dry_run,
                "freed": {"runs": len(r.runs), "events": r.events, "bytes": r.bytes,
                          "event_bytes": r.event_bytes, "blobs": r.blobs,
                          "blob_bytes": r.blob_bytes, "files_deleted": r.files_deleted,
                          "files_rewritten": r.files_rewritten},
                "runs": [v.__dict__ for v in self.runs], "errors": self.errors}


def _matches(st: RunStatus, name: str | None, refs: set[str] | None) -> bool:
    if refs is None:
        return True
    return any(st.run_id == r or (len(r) >= 6 and st.run_id.startswith(r)) or name == r
               for r in refs)


def _why_kept(st: RunStatus, end_ms: int | None, older_than_s: float | None, now_ms: int,
              include_dead: bool) -> str:
    if st.error:
        return st.error
    if st.status == "RUNNING":
        return "still running"
    if older_than_s is not None and (end_ms is None or end_ms > now_ms - older_than_s * 1000):
        return "finished too recently for --older-than"
    if not st.backends:
        return "no backend holds it (the spool has its only copy)"
    for b in st.backends:
        if b.pending:
            return f"{b.backend}: {b.pending} events pending"
        if b.dead and not include_dead:
            return f"{b.backend}: {b.dead} dead letters (--include-dead removes them)"
        if not b.closed:
            return f"{b.backend}: the run is not closed there yet"
        if b.last_error:
            return f"{b.backend}: last delivery failed ({b.last_error[:80]})"
    return ""


def prune(spool_dir: Path, *, runs: Iterable[str] | None = None, project: str | None = None,
          older_than_s: float | None = None, backends: Iterable[str] | None = None,
          include_dead: bool = False, dry_run: bool = False,
          now_ms: int | None = None, shard: Shard | None = None) -> PruneOutcome:
    """Remove every selected run that all its backends hold; say why the others stay.

    ``shard``: only that shard's runs (a shard's agent never touches another's state file).
    """
    spool_dir = Path(spool_dir)
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    refs = set(runs) if runs else None
    wanted_backends = set(backends) if backends else None
    out = PruneOutcome(dry_run=dry_run)
    from bridge.spool.reader import list_runs

    try:  # which state file owns a run: one layout only, else nothing is pruned
        count = 1
        if shard is not None and shard.count > 1:
            check_layout(spool_dir, shard)
            count = shard.count
        elif is_sharded(spool_dir):
            count = current_count(spool_dir)
    except (SpoolError, sqlite3.Error, OSError) as exc:
        out.errors.append(f"prune stopped: {exc}")
        return out

    records = {r.run_id: r for r in list_runs(spool_dir)}
    file_errors: list = []
    statuses = spool_status(spool_dir, file_errors)
    out.errors = [f"{e.path}: {e.error}" for e in file_errors]
    files = scan_files(spool_dir)
    sizes = run_sizes(spool_dir, files)
    chosen: list[RunVerdict] = []
    for st in statuses:
        rec = records.get(st.run_id)
        if project is not None and st.project != project:
            continue
        if not _matches(st, st.name, refs):
            continue
        if wanted_backends is not None and not wanted_backends & {b.backend for b in st.backends}:
            continue
        if shard is not None and shard.count > 1 and not shard.owns(st.run_id):
            continue
        reason = _why_kept(st, rec.end_ms if rec else None, older_than_s, now, include_dead)
        size = sizes.get(st.run_id)
        chosen.append(RunVerdict(st.run_id, st.project, st.name, st.status, st.events,
                                 size.total if size else 0, not reason, reason))
    candidates = [v.run_id for v in chosen if v.prune]
    stores: dict[str, StateStore] = {}  # state file name -> store
    holder = holder_id()
    leased: list[tuple[StateStore, str]] = []

    def owner(run_id: str) -> StateStore:
        name = DEFAULT_STATE if count == 1 else state_file_name(count, shard_of(run_id, count))
        if name not in stores:
            stores[name] = StateStore(spool_dir, name)
        return stores[name]

    try:
        if candidates and not dry_run:
            for run_id in candidates:  # an agent delivering the run now keeps it
                store = owner(run_id)
                if store.acquire_lease(run_id, holder, 300.0):
                    leased.append((store, run_id))
        taken = {r for _, r in leased}
        refused_by_lease = {r: "being delivered by another agent" for r in candidates
                            if not dry_run and r not in taken}
        report = remove_runs(spool_dir, [r for r in candidates if r not in refused_by_lease],
                             dry_run=dry_run, scanned=files)
        report.refused.update(refused_by_lease)
        _staged_links(spool_dir, report, dry_run)
        if not dry_run:
            for run_id in report.runs:
                owner(run_id).forget_pruned([run_id])
    except (SpoolError, sqlite3.Error, OSError) as exc:
        out.errors.append(f"prune stopped: {exc}")
        report = RemovalReport()
    finally:
        for store, run_id in leased:
            try:
                store.release_lease(run_id, holder)
            except sqlite3.Error:
                pass
        for store in stores.values():
            store.close()
    for v in chosen:
        if v.run_id in report.refused:
            v.prune, v.reason = False, report.refused[v.run_id]
    out.runs = chosen
    out.report = report
    return out


def apply_retention(spool_dir: Path, retention_days: float,
                    shard: Shard | None = None) -> PruneOutcome | None:
    """The agent's retention: prune delivered runs finished more than ``retention_days``
    ago (off when 0). Dead letters are kept: someone has to look at them first."""
    if retention_days <= 0:
        return None
    return prune(spool_dir, older_than_s=retention_days * 86400, shard=shard)


def _staged_links(spool_dir: Path, report: RemovalReport, dry_run: bool) -> None:
    """Links ``log_artifact`` staged in ``blobs/`` for a process killed before its copy ran:
    nothing refers to them (the event commits only with its blob), so they go too."""
    from bridge.spool.artifacts import stale_staged

    for path, size in stale_staged(spool_dir):
        if not dry_run:
            try:
                path.unlink()
            except OSError:
                continue
        report.blobs += 1
        report.blob_bytes += size
