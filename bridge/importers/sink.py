"""Writing imported runs into the spool: one file per run, complete or absent.

Each run is written by the spool's :class:`~bridge.spool.imported.ImportedRunWriter` to
``spool/import-<source>-<run id>.db.partial`` and renamed to ``.db`` only when every event is
in, so readers and the agent never see half a run. An interrupted import leaves a
``.partial`` that the next import deletes and redoes; a run whose file exists is skipped.
Memory stays bounded: events are inserted in chunks as the importer streams them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from bridge.adapters.importing import (Importer, MetricColumns, MetricPoints, MetricRows,
                                       SourceRun, SqlPoints)
from bridge.spool.events import Kind
from bridge.spool.imported import ImportedRunWriter, SourceFiles

__all__ = ["ImportedRun", "import_file", "import_runs"]


ProgressFn = Callable[[SourceRun, int], None]
_POINTS = (MetricPoints, MetricColumns, MetricRows)  # an importer's points in bulk


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


def _finite(values: list[Any]) -> bool:
    """Whether every value is a finite number. Their sum, in C, is finite only if each is
    (a NaN or an infinity makes it NaN or infinite); a sum that overflows, or a value that is
    not a float, is settled a value at a time."""
    try:
        if math.isfinite(sum(values)):
            return True
    except (TypeError, OverflowError):
        pass
    return all(map(math.isfinite, values))


def import_file(spool_dir: Path, run: SourceRun) -> Path:
    return Path(spool_dir) / "spool" / f"import-{run.source}-{run.run_id}.db"


def _write(spool_dir: Path, importer: Importer, run: SourceRun, backends: list[dict],
           target: Path, progress: ProgressFn | None, chunk: int,
           sources: SourceFiles) -> ImportedRun:
    result = ImportedRun(run.run_id, run.source, run.source_id, run.project, run.name, target)
    meta = {"node": f"import:{run.source}", "import_source": run.source,
            "source_id": run.source_id}
    with ImportedRunWriter(spool_dir, target, meta, chunk) as out:
        out.run_row(run.run_id, run.project, run.name, run.notes, run.group,
                    json.dumps(backends), int(run.start_ms), run.end_ms, run.status)
        start = int(run.start_ms)
        provenance = dict(run.extra_tags)
        if run.run_id != run.source_id:
            provenance.setdefault("bridge.source_id", run.source_id)
        provenance.setdefault("bridge.source", run.source)
        if run.parent_id:
            from bridge.adapters.importing import bridge_run_id

            provenance.setdefault("bridge.parent_run_id", bridge_run_id(run.source, run.parent_id))
        for key, value in provenance.items():
            out.event(run.run_id, Kind.TAG, key, None, start, str(value))
        if run.notes:
            out.event(run.run_id, Kind.NOTE, "notes", None, start, run.notes)
        source = f"{run.source}:{run.source_id}"
        reported = 0
        # The hot loop: a finite metric point goes straight into the writer's buffer of
        # points (no call per point: a run may hold millions); anything else goes through the
        # writer's methods. The run id is derived (a uuid5) once per run, not per point.
        run_id, points, counts = run.run_id, result.points, result.counts
        rows, flush = out.rows, out.flush_rows
        keys, steps, times, values = out.points_of(run_id)
        get, isfinite = points.get, math.isfinite
        metric_kind = Kind.METRIC.value
        stream = getattr(importer, "stream", None)

        def count(key: str, n: int) -> None:
            """``n`` more points of ``key`` (a new key keeps its place, and the first metric
            its place among the kinds)."""
            seen = get(key)
            if seen is None:
                points[key] = n
                counts.setdefault(metric_kind, 0)
            else:
                points[key] = seen + n

        def columns(k: list[Any], s: list[Any], t: list[Any], v: list[Any]) -> None:
            """Points as four columns: extended in C when all are finite."""
            if not k:
                return
            if _finite(v):
                if rows or out.holds_points:
                    flush()
                keys.extend(k)
                steps.extend(s)
                times.extend(t)
                values.extend(v)
            else:
                for key, step, ts_ms, value in zip(k, s, t, v):
                    if isfinite(value):
                        if rows or out.holds_points:
                            flush()
                        keys.append(key)
                        steps.append(step)
                        times.append(ts_ms)
                        values.append(value)
                    else:
                        out.metric(run_id, key, step, ts_ms, value)
            for key, n in Counter(k).items():
                count(key, n)
            if len(keys) >= chunk:
                flush()

        for ev in stream(run) if callable(stream) else importer.events(run):
            if type(ev) in _POINTS:  # no call a point
                if type(ev) is MetricRows:
                    if ev.steps and _finite(ev.values):  # packed a step and a time a row
                        out.row_points(run_id, ev.names, ev.steps, ev.ts_ms, ev.values)
                        for key in ev.names:
                            count(key, len(ev.steps))
                    else:
                        columns(*ev.columns())
                elif type(ev) is MetricPoints:  # one flat list
                    flat = ev.flat
                    columns(flat[0::4], flat[1::4], flat[2::4], flat[3::4])
                else:
                    columns(ev.keys, ev.steps, ev.ts_ms, ev.values)
                if progress is not None and out.written > reported:
                    reported = out.written
                    progress(run, reported)
                continue
            if type(ev) is SqlPoints:  # a key's points in a SQLite file: read there
                n = out.copy_points(run_id, ev.key, ev.db, ev.select, ev.SCHEMA, ev.params,
                                    sources)
                if n:
                    count(ev.key, n)
                if progress is not None and out.written > reported:
                    reported = out.written
                    progress(run, reported)
                continue
            kind = ev.kind
            if kind == metric_kind:
                key = ev.key or ""
                value = ev.value
                value = float(value) if value is not None else math.nan
                if isfinite(value):
                    if rows or out.holds_points:
                        flush()  # the rows before it go in first
                    keys.append(key)
                    steps.append(ev.step)
                    times.append(int(ev.ts_ms))
                    values.append(value)
                    if len(keys) >= chunk:
                        flush()
                else:
                    out.metric(run_id, key, ev.step, int(ev.ts_ms), value)
                seen = get(key)
                if seen is None:  # a new key (and maybe the first metric: counts keep order)
                    points[key] = 1
                    counts.setdefault(kind, 0)
                else:
                    points[key] = seen + 1
                if progress is not None and out.written > reported:
                    reported = out.written
                    progress(run, reported)
                continue
            if kind == Kind.ARTIFACT:
                out.artifact(run_id, ev.key or "", ev.step, ev.ts_ms, ev.files,
                             ev.artifact_type, source)
            elif kind == Kind.MEDIA:
                out.media(run_id, ev.key or "", ev.step, ev.ts_ms, ev.payload, ev.files)
            else:
                out.event(run_id, kind, ev.key, ev.step, ev.ts_ms, ev.payload)
            counts[kind] = counts.get(kind, 0) + 1
            if progress is not None and out.written > reported:
                reported = out.written
                progress(run, reported)
        if points:  # every metric event counted once, in its key's count
            counts[metric_kind] += sum(points.values())
        out.commit()
    if progress is not None:
        progress(run, out.written)
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
    bind = getattr(importer, "bind_spool", None)
    if callable(bind):
        bind(spool_dir)  # an importer that merges into runs the spool already holds
    wanted = set(only) if only else None
    out: list[ImportedRun] = []
    with SourceFiles() as sources:  # attached once for all runs (SqlPoints)
        for run in importer.runs():
            if wanted is not None and run.source_id not in wanted and run.run_id not in wanted:
                continue
            target = import_file(spool_dir, run)
            if target.exists():
                out.append(ImportedRun(run.run_id, run.source, run.source_id, run.project,
                                       run.name, target, skipped=True))
                continue
            out.append(_write(spool_dir, importer, run, list(backends or []), target, progress,
                              chunk, sources))
    return out
