"""Writing imported runs into the spool: one file per run, complete or absent.

Each run is written to ``spool/import-<source>-<run id>.db.partial`` and renamed to ``.db``
only when every event is in, so readers and the agent never see half a run. An interrupted
import leaves a ``.partial`` that the next import deletes and redoes; a run whose file exists
is skipped. Memory stays bounded: events are inserted in chunks as the importer streams them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from bridge.importers.base import ImportEvent, Importer, SourceRun
from bridge.spool import blobs
from bridge.spool.schema import create_schema
from bridge.values import encode_float

__all__ = ["ImportedRun", "import_file", "import_runs"]

_INSERT = ("INSERT INTO events (run_id, kind, key, step, ts_ms, value, payload) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
_STATUSES = {"RUNNING", "FINISHED", "FAILED", "KILLED"}

ProgressFn = Callable[[SourceRun, int], None]


@dataclass
class ImportedRun:
    run_id: str
    source: str
    source_id: str
    project: str
    name: str | None
    path: Path
    skipped: bool = False  # imported by an earlier call
    counts: dict[str, int] = field(default_factory=dict)  # events per kind
    points: dict[str, int] = field(default_factory=dict)  # metric points per key


def import_file(spool_dir: Path, run: SourceRun) -> Path:
    return Path(spool_dir) / "spool" / f"import-{run.source}-{run.run_id}.db"


def _row(run_id: str, ev: ImportEvent, spool_dir: Path, source: str) -> tuple:
    if ev.kind == "metric":
        value = float(ev.value) if ev.value is not None else float("nan")
        v, marker = encode_float(value)
        return (run_id, "metric", ev.key, ev.step, int(ev.ts_ms), v, marker)
    if ev.kind == "artifact":
        files = []
        for rel, local in ev.files:
            sha, size = blobs.store_file(spool_dir, local)
            files.append({"path": rel, "sha256": sha, "size": size})
        payload = {"name": ev.key, "type": ev.artifact_type, "is_dir": len(files) > 1,
                   "source": source, "files": files}
        return (run_id, "artifact", ev.key, ev.step, int(ev.ts_ms), None, json.dumps(payload))
    return (run_id, ev.kind, ev.key, ev.step, int(ev.ts_ms), None,
            json.dumps(ev.payload, ensure_ascii=False, default=str))


def _write(spool_dir: Path, importer: Importer, run: SourceRun, backends: list[dict],
           target: Path, progress: ProgressFn | None, chunk: int) -> ImportedRun:
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    old = os.umask(0o077)
    try:
        conn = sqlite3.connect(partial, isolation_level=None)
    finally:
        os.umask(old)
    result = ImportedRun(run.run_id, run.source, run.source_id, run.project, run.name, target)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=OFF")  # the rename below is the commit point
        create_schema(conn, {"file_id": target.stem, "node": f"import:{run.source}",
                             "host": os.uname().nodename, "pid": str(os.getpid()),
                             "created_ms": str(int(time.time() * 1000)), "journal": "delete",
                             "import_source": run.source, "source_id": run.source_id})
        status = run.status if run.status in _STATUSES else "FINISHED"
        conn.execute(
            "INSERT INTO runs (run_id, project, name, notes, group_name, backends, start_ms, "
            "end_ms, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.run_id, run.project, run.name, run.notes, run.group, json.dumps(backends),
             int(run.start_ms), run.end_ms, status),
        )
        rows: list[tuple] = []
        start = int(run.start_ms)
        provenance = dict(run.extra_tags)
        if run.run_id != run.source_id:
            provenance.setdefault("bridge.source_id", run.source_id)
        provenance.setdefault("bridge.source", run.source)
        if run.parent_id:
            from bridge.importers.base import bridge_run_id

            provenance.setdefault("bridge.parent_run_id", bridge_run_id(run.source, run.parent_id))
        for key, value in provenance.items():
            rows.append((run.run_id, "tag", key, None, start, None, json.dumps(str(value))))
        if run.notes:
            rows.append((run.run_id, "note", "notes", None, start, None, json.dumps(run.notes)))
        conn.execute("BEGIN")
        n = 0
        for ev in importer.events(run):
            rows.append(_row(run.run_id, ev, spool_dir, f"{run.source}:{run.source_id}"))
            result.counts[ev.kind] = result.counts.get(ev.kind, 0) + 1
            if ev.kind == "metric":
                result.points[ev.key or ""] = result.points.get(ev.key or "", 0) + 1
            if len(rows) >= chunk:
                conn.executemany(_INSERT, rows)
                n += len(rows)
                rows.clear()
                if progress is not None:
                    progress(run, n)
        if rows:
            conn.executemany(_INSERT, rows)
            n += len(rows)
        conn.execute("COMMIT")
        if progress is not None:
            progress(run, n)
    except BaseException:
        conn.close()
        partial.unlink(missing_ok=True)
        raise
    conn.close()
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    os.chmod(partial, 0o600)
    os.replace(partial, target)
    return result


def import_runs(
    importer: Importer,
    spool_dir: Path,
    *,
    backends: list[dict] | None = None,
    only: Iterable[str] | None = None,
    progress: ProgressFn | None = None,
    chunk: int = 5000,
) -> list[ImportedRun]:
    """Import every run of ``importer`` (or those whose source or bridge id is in ``only``)."""
    spool_dir = Path(spool_dir)
    (spool_dir / "spool").mkdir(parents=True, exist_ok=True, mode=0o700)
    wanted = set(only) if only else None
    out: list[ImportedRun] = []
    for run in importer.runs():
        if wanted is not None and run.source_id not in wanted and run.run_id not in wanted:
            continue
        target = import_file(spool_dir, run)
        if target.exists():
            out.append(ImportedRun(run.run_id, run.source, run.source_id, run.project, run.name,
                                   target, skipped=True))
            continue
        out.append(_write(spool_dir, importer, run, list(backends or []), target, progress, chunk))
    return out
