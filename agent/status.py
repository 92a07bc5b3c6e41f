"""What `bridge status` reports: per run and backend, delivered, pending, dead, last error."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from bridge.agent.state import StateStore
from bridge.agent.sync import backend_label
from bridge.spool.reader import FileInfo, RunRecord, list_runs, open_file

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


def _counts(files: list[FileInfo], run_id: str, cursors: dict[str, int]) -> tuple[int, int]:
    """(total, covered by the cursors) for the run's events."""
    total = covered = 0
    for f in files:
        conn = open_file(f.path)
        try:
            t, c = conn.execute(
                "SELECT count(*), coalesce(sum(seq <= ?), 0) FROM events WHERE run_id=?",
                (cursors.get(f.file_id, 0), run_id),
            ).fetchone()
        finally:
            conn.close()
        total += t
        covered += c
    return total, covered


def spool_status(spool_dir: Path, file_errors: list | None = None) -> list[RunStatus]:
    errors: list = []
    records: list[RunRecord] = list_runs(spool_dir, errors)
    if file_errors is not None:
        file_errors.extend(errors)
    store = StateStore(spool_dir)
    out: list[RunStatus] = []
    try:
        for rec in records:
            try:
                out.append(_run_status(store, rec))
            except sqlite3.DatabaseError as exc:
                out.append(RunStatus(rec.run_id, rec.project, rec.number, rec.name, rec.status,
                                     -1, rec.warnings, rec.dropped, [],
                                     error=f"damaged spool file: {exc}; run `bridge doctor "
                                           "--repair`"))
    finally:
        store.close()
    return out


def _run_status(store: StateStore, rec: RunRecord) -> RunStatus:
    total_all, _ = _counts(rec.files, rec.run_id, {})
    pairs = []
    labels = [backend_label(b) for b in rec.backends]
    for extra in store.conn.execute(
        "SELECT DISTINCT backend FROM cursors WHERE run_id=? UNION "
        "SELECT DISTINCT backend FROM dead_letters WHERE run_id=?",
        (rec.run_id, rec.run_id),
    ):
        if extra[0] not in labels:
            labels.append(extra[0])
    for label in labels:
        cursors = store.cursors(label, rec.run_id)
        total, covered = _counts(rec.files, rec.run_id, cursors) if cursors else (
            total_all, 0)
        dead = store.dead_count(label, rec.run_id)
        remote_id, url, closed = store.remote(label, rec.run_id)
        pairs.append(PairStatus(label, total, covered - dead, total - covered, dead,
                                store.last_error(label, rec.run_id), remote_id, url,
                                closed))
    return RunStatus(rec.run_id, rec.project, rec.number, rec.name, rec.status,
                     total_all, rec.warnings, rec.dropped, pairs)
