"""What `bridge status` reports: per run and backend, delivered, pending, dead, last error."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from bridge.agent.shards import StateView, is_sharded
from bridge.agent.state import StateStore
from bridge.errors import SpoolError
from bridge.agent.sync import backend_label
from bridge.spool.reader import FileInfo, RunRecord, file_counts, list_runs

__all__ = ["PairStatus", "RunStatus", "spool_status"]


@dataclass
class PairStatus:
    backend: str
    total: int
    delivered: int
    pending: int
    dead: int
    last_error: str | None
    remote_id: str | None
    url: str | None
    closed: bool


@dataclass
class RunStatus:
    run_id: str
    project: str
    number: int
    name: str | None
    status: str
    events: int
    warnings: int
    dropped: int
    backends: list[PairStatus]
    error: str | None = None  # a damaged spool file of this run

    def as_dict(self) -> dict:
        return asdict(self)


def spool_status(spool_dir: Path, file_errors: list | None = None) -> list[RunStatus]:
    errors: list = []
    records: list[RunRecord] = list_runs(spool_dir, errors)
    if file_errors is not None:
        file_errors.extend(errors)
    try:  # sharded: every shard's state file, read-only
        store = StateView(spool_dir) if is_sharded(spool_dir) else StateStore(spool_dir)
    except (SpoolError, sqlite3.Error, OSError) as exc:  # garbage, truncated, unreadable
        problem = (f"cannot read the delivery state {Path(spool_dir) / 'state.db'}: {exc}; "
                   "nothing can be shown as delivered (`bridge sync` re-sends from the spool)")
        if file_errors is not None:
            file_errors.append(FileInfo(path=Path(spool_dir) / "state.db", file_id="state",
                                        node="", host="", error=problem))
        return [_unknown_status(rec, problem) for rec in records]
    out: list[RunStatus] = []
    try:
        for rec in records:
            try:
                out.append(_run_status(store, rec))
            except SpoolError as exc:  # state.db readable at open, not further on
                out.append(_unknown_status(rec, f"cannot read the delivery state: {exc}"))
            except sqlite3.DatabaseError as exc:
                out.append(RunStatus(rec.run_id, rec.project, rec.number, rec.name, rec.status,
                                     -1, rec.warnings, rec.dropped, [],
                                     error=f"damaged spool file: {exc}; run `bridge doctor "
                                           "--repair`"))
    finally:
        store.close()
    return out


def _unknown_status(rec: RunRecord, problem: str) -> RunStatus:
    """A run whose delivery state cannot be read: every event counted as pending."""
    try:
        total = sum(file_counts(f, rec.run_id, [])[0] for f in rec.files)
    except sqlite3.DatabaseError:
        total = -1
    pairs = [PairStatus(backend_label(b), total, 0, total, 0, problem, None, None, False)
             for b in rec.backends]
    return RunStatus(rec.run_id, rec.project, rec.number, rec.name, rec.status, total,
                     rec.warnings, rec.dropped, pairs, error=problem)


def _run_status(store: StateStore | StateView, rec: RunRecord) -> RunStatus:
    try:  # the delivery state first: its errors are named as such, not as the spool's
        labels = [backend_label(b) for b in rec.backends]
        for extra in store.backends_for(rec.run_id):
            if extra not in labels:
                labels.append(extra)
        cursors = {label: store.cursors(label, rec.run_id) for label in labels}
        known = {label: (store.dead_count(label, rec.run_id), store.remote(label, rec.run_id),
                         store.last_error(label, rec.run_id)) for label in labels}
    except sqlite3.DatabaseError as exc:
        raise SpoolError(f"{store.path}: {exc}") from exc
    # Each file is opened and counted once for every backend.
    total_all = 0
    pending = dict.fromkeys(labels, 0)
    for f in rec.files:
        total, after = file_counts(f, rec.run_id,
                                    [cursors[label].get(f.file_id, 0) for label in labels])
        total_all += total
        for label, n in zip(labels, after):
            pending[label] += n
    pairs = []
    for label in labels:
        covered = total_all - pending[label]
        dead, (remote_id, url, closed), last_error = known[label]
        pairs.append(PairStatus(label, total_all, covered - dead, pending[label], dead,
                                last_error, remote_id, url, closed))
    return RunStatus(rec.run_id, rec.project, rec.number, rec.name, rec.status,
                     total_all, rec.warnings, rec.dropped, pairs)
