"""Import neptune-scale (Neptune 3.x client) operations files that never reached a server.

Each ``run_operations.sqlite3`` (:mod:`.scale_names`, read by :mod:`.scale_offline`) is the
part of one run the server never acknowledged: the whole run in offline mode, the tail in
async mode. Several files of one run (a resumed run) are read as one, oldest first.

* run: bridge run id as the Parquet import of the same run derives it (``bridge_run_id(
  "neptune", run_id)``), so a run exported before the shutdown and its unsynced tail are one
  bridge run; experiment name -> the run's name and tag ``neptune.experiment``; fork point
  -> tags (parent run, its project, the decimal step); creation time -> start.
* assigns -> params under ``parameters/`` (nested, as the Parquet and 1.x importers read
  them), summaries under their full path otherwise (``sys/name``/``sys/description`` ->
  name/notes);
  file assigns -> artifacts; tag sets -> tags (group tags as ``group:<label>``).
* appends -> metric points, text points, histogram and file media, each with its own step
  and time. Steps are decimals: names.py's step rule (the same as the Parquet import).
* what cannot be imported is a counted warning: preview points, files no longer on disk,
  the client's ``operation_errors``.

With ``spool_dir``, points the spool already holds for the run (a Parquet import of it) are
not imported again, and its step multiplier is kept.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Iterator

from bridge.adapters.importing import (
    POINTS_BATCH,
    ImportError_,
    ImportEvent,
    MetricPoints,
    MetricRows,
    RowGatherer,
    SourceRun,
    artifact_event,
    bridge_run_id,
    expand,
    resolve_source,
    take_points,
)
from bridge.adapters.neptune import names as N
from bridge.adapters.neptune import scale_names as S
from bridge.adapters.neptune.media_in import histogram_event, parquet_file_event, text_event
from bridge.adapters.neptune.scale_offline import (
    Append,
    AppendFacts,
    AppendRows,
    Assign,
    OpsFile,
    RunInfo,
    TagChange,
    describe_operations,
    find_ops_files,
    one_at_a_time,
    operation_errors,
    read_appends,
    read_ops_file,
    upload_requests,
)

__all__ = ["NeptuneScaleImporter", "ScaleSourceRun"]


log = logging.getLogger("bridge.importers.neptune_scale")

_OPTIONS = {"trusted_roots", "spool_dir"}
_EXACT = 2 ** 53  # a whole step a float holds exactly


@dataclass
class ScaleSourceRun(SourceRun):
    """A neptune-scale run: its bridge id is the one the Parquet import gives the same run."""

    @property
    def run_id(self) -> str:
        return bridge_run_id(S.RUN_ID_SOURCE, self.source_id)


@dataclass
class _Desc:
    """What a run's files say besides their series (one pass, small)."""

    files: list[OpsFile]
    info: RunInfo | None = None
    assigns: dict[str, Assign] = field(default_factory=dict)
    tags: dict[tuple[str, str], bool] = field(default_factory=dict)  # (key, label) -> present
    places: int = 0
    first_ms: int = 0
    last_ms: int = 0
    previews: int = 0
    problems: dict[str, None] = field(default_factory=dict)  # in order, each said once


@dataclass
class _Seen:
    """What the spool already holds of a run: (kind, key, step) of points, its multiplier."""

    points: set[tuple[str, str, int | None]] = field(default_factory=set)
    multiplier: int | None = None


class NeptuneScaleImporter:
    """neptune-scale operations files as bridge runs; see the module docstring."""

    name: ClassVar[str] = S.SOURCE

    def __init__(self, location: str | Path | None, project: str | None = None,
                 step_multiplier: int | None = None, **opts: Any) -> None:
        unknown = set(opts) - _OPTIONS
        if unknown:
            raise ImportError_(f"{S.SOURCE}: unknown option(s) {', '.join(sorted(unknown))}")
        if location is None:
            raise ImportError_(f"{S.SOURCE}: a location is needed (a {S.OPS_FILE} file or a "
                               "directory holding some, e.g. .neptune)")
        self.location = Path(location)
        if not self.location.exists():
            raise ImportError_(f"{S.SOURCE}: {self.location} does not exist")
        if step_multiplier is not None and int(step_multiplier) < 1:
            raise ImportError_(f"{S.SOURCE}: step_multiplier must be a positive integer")
        self.project = project
        self.step_multiplier = int(step_multiplier) if step_multiplier is not None else None
        # Files to upload are named by absolute paths: read only inside these (resolve_source).
        base = self.location if self.location.is_dir() else self.location.parent
        self.roots: list[Path] = [base] + [Path(r) for r in opts.get("trusted_roots") or ()]
        self.spool_dir = Path(opts["spool_dir"]) if opts.get("spool_dir") else None
        self.warnings: list[str] = []

    def bind_spool(self, spool_dir: Path) -> None:
        """Where the import goes: points already there are not imported twice."""
        self.spool_dir = Path(spool_dir)

    # -- listing ------------------------------------------------------------------

    def runs(self) -> Iterator[SourceRun]:
        groups: dict[tuple[str, str], list[OpsFile]] = {}
        for path in find_ops_files(self.location):
            try:
                resolve_source(path, self.roots)
                f = read_ops_file(path)
            except ImportError_ as exc:
                self._warn(f"{exc}; not read")
                continue
            if f.version not in S.KNOWN_VERSIONS:
                self._warn(f"{path}: format {f.version!r}, read as {S.KNOWN_VERSIONS[-1]}")
            groups.setdefault((f.project, f.run_id), []).append(f)
        for (project, run_id), files in sorted(groups.items()):
            files.sort(key=lambda f: (f.first_ms, f.path.name))
            yield self._source_run(project, run_id, self._describe(files))

    def _describe(self, files: list[OpsFile]) -> _Desc:
        """One pass over the operations, series values left undecoded (the events pass
        reads them): what the run row and the step multiplier need."""
        desc = _Desc(files)
        facts = AppendFacts()
        for f in files:
            for item in describe_operations(f.path, facts):
                if isinstance(item, str):
                    desc.problems.setdefault(f"{f.path.parent.name}: {item}")
                elif isinstance(item, RunInfo):
                    desc.info = item
                elif isinstance(item, Assign):
                    desc.assigns[item.key] = item
                    self._span(desc, item.ts_ms)
                elif isinstance(item, TagChange):
                    desc.tags[(item.key, item.tag)] = item.add
                    self._span(desc, item.ts_ms)
        desc.places, desc.previews = facts.places, facts.previews
        if facts.first_ms:
            self._span(desc, facts.first_ms)
            self._span(desc, facts.last_ms)
        return desc

    @staticmethod
    def _span(desc: _Desc, ts: int) -> None:
        desc.first_ms = min(desc.first_ms, ts) if desc.first_ms else ts
        desc.last_ms = max(desc.last_ms, ts)

    def _source_run(self, project: str, run_id: str, desc: _Desc) -> SourceRun:
        info = desc.info
        extra: dict[str, str] = {}
        if info is not None and info.experiment:
            extra[S.EXPERIMENT_TAG] = info.experiment
        if info is not None and info.fork_parent:
            extra[S.FORK_PARENT_TAG] = info.fork_parent
            extra["bridge.parent_run_id"] = bridge_run_id(S.RUN_ID_SOURCE, info.fork_parent)
            if info.fork_project:
                extra[S.FORK_PROJECT_TAG] = info.fork_project
            if info.fork_step is not None:
                extra[S.FORK_STEP_TAG] = _decimal_text(info.fork_step)
        name = desc.assigns.get(N.SYS_NAME)
        notes = desc.assigns.get(N.SYS_DESCRIPTION)
        start = (info.creation_ms if info is not None else None) or desc.first_ms \
            or min((f.first_ms for f in desc.files), default=0)
        run = ScaleSourceRun(
            source=S.SOURCE, source_id=run_id, project=self.project or project or "neptune",
            name=(str(name.value) if name else None) or (info.experiment if info else None),
            notes=str(notes.value) if notes else None, start_ms=start,
            end_ms=desc.last_ms or None, status="FINISHED",
            parent_id=info.fork_parent if info is not None else None, extra_tags=extra)
        seen = self._seen(run.run_id)
        mult = self.step_multiplier or seen.multiplier or N.step_multiplier(desc.places)
        if mult != 1:
            extra[N.STEP_MULTIPLIER_TAG] = str(mult)
        if N.step_multiplier(desc.places) > mult:
            self._warn(f"run {run_id}: steps of {desc.places} decimal places rounded to the "
                       f"step multiplier {mult} the run already has")
        run.handle = (desc, mult, seen)
        return run

    def _seen(self, run_id: str) -> _Seen:
        """The points an earlier import of the same run (another source) put in the spool."""
        seen = _Seen()
        if self.spool_dir is None or not (self.spool_dir / "spool").is_dir():
            return seen
        from bridge.spool.events import Kind
        from bridge.spool.reader import find_run, select_events

        rec = find_run(self.spool_dir, run_id)
        for f in rec.files if rec is not None else []:
            for ev in select_events(f, run_id, kinds=[Kind.METRIC, Kind.MEDIA, Kind.TAG]):
                if ev.kind == Kind.TAG:
                    if ev.key == N.STEP_MULTIPLIER_TAG and str(ev.payload).isdigit():
                        seen.multiplier = int(ev.payload)
                else:
                    seen.points.add((str(ev.kind), ev.key or "", ev.step))
        return seen

    # -- events -------------------------------------------------------------------

    def events(self, run: SourceRun) -> Iterator[ImportEvent]:
        return expand(self.stream(run))

    def stream(self, run: SourceRun) -> Iterator[ImportEvent | MetricPoints | MetricRows]:
        """The run's events, its metric points gathered as :class:`MetricRows` (an
        operation of float values only: a step's points come in one) or :class:`MetricPoints`
        (the sink writes them without a call a point)."""
        desc, mult, seen = run.handle
        yield from self._assign_events(run, desc)
        for (key, label), present in desc.tags.items():
            if present:
                tag = label if key == S.SYS_TAGS else f"group:{label}"
                yield ImportEvent("tag", tag, run.start_ms, payload="")
        skipped = 0
        check = bool(seen.points)
        decode_step = N.decode_step
        flat: list[Any] = []  # points since the last event, handed over as a copy
        point = flat.extend
        rows = RowGatherer()  # operations of float values only, the bulk of a run
        problems = dict(desc.problems)  # and what reading the values finds, each once
        for f in desc.files:
            uploads = upload_requests(f.path)
            where = f.path.parent.name
            ops: Iterator[Any] = read_appends(
                f.path, problem=lambda m, where=where: problems.setdefault(f"{where}: {m}"))
            if check:  # each point looked up among the spool's: an operation at a time
                ops = one_at_a_time(ops)
            for op in ops:
                if op.__class__ is AppendRows:  # a chunk of rows of floats, read as columns
                    if flat:  # the points before it go first: the order is kept
                        yield take_points(flat)
                    if op.names != rows.names:
                        yield from rows.switch(op.names)
                    rows.steps += _steps(op, mult)
                    rows.ts_ms += op.ts_ms
                    rows.values += op.values
                    if len(rows.values) >= rows.BATCH:
                        yield from rows.take()
                    continue
                at, ts_ms, names, items = op
                if at is None:
                    step = None
                elif at.__class__ is int and mult == 1 and -_EXACT <= at <= _EXACT:
                    step = at  # decode_step's answer (a float holds it exactly), no call
                else:
                    step = decode_step(float(at), mult)
                if names is not None and not check:  # floats only: a row of points
                    if flat:  # the points before it go first: the order is kept
                        yield take_points(flat)
                    if names != rows.names:
                        yield from rows.switch(names)
                    rows.steps.append(step)
                    rows.ts_ms.append(ts_ms)
                    rows.values += items
                    if len(rows.values) >= rows.BATCH:
                        yield from rows.take()
                    continue
                yield from rows.take()
                if names is not None:
                    items = [(key, "float", value) for key, value in zip(names, items)]
                for key, kind, value in items:
                    if kind == "float":  # a metric point: the bulk of a run
                        if check and ("metric", key, step) in seen.points:
                            skipped += 1
                        else:
                            point((key, step, ts_ms, value))
                        continue
                    ev = self._append_event(
                        Append(key, kind, value, None if at is None else Decimal(at), ts_ms,
                               False), step, uploads)
                    if ev is None:
                        continue
                    if check and (str(ev.kind), ev.key or "", ev.step) in seen.points:
                        skipped += 1
                        continue
                    if flat:  # the points before it go first: the order is kept
                        yield take_points(flat)
                    yield ev
                if len(flat) >= POINTS_BATCH:
                    yield take_points(flat)
            yield from rows.take()
            for err in operation_errors(f.path):
                where = f" (operation {err.sequence_id})" if err.sequence_id is not None else ""
                self._warn(f"run {run.source_id}: the client recorded {err.type}{where}: "
                           f"{err.details}")
        if flat:
            yield take_points(flat)
        for problem in problems:
            self._warn(f"run {run.source_id}: {problem}")
        if desc.previews:
            self._warn(f"run {run.source_id}: {desc.previews} preview points (values a later "
                       "point replaces) not imported")
        if skipped:
            log.info("%s: %d points of run %s already in the spool", S.SOURCE, skipped,
                     run.source_id)

    def _assign_events(self, run: SourceRun, desc: _Desc) -> Iterator[ImportEvent]:
        uploads: dict[str, Any] = {}
        for f in desc.files:
            uploads.update(upload_requests(f.path))
        params: dict[str, Any] = {}  # as the Parquet and 1.x importers read the same fields
        summary: dict[str, Any] = {}
        ts = {"param": None, "summary": None}
        for key, a in desc.assigns.items():
            if key in (N.SYS_NAME, N.SYS_DESCRIPTION):
                continue
            if a.kind == "file":
                local = self._local(key, None, a.value, uploads)
                if local is not None:
                    try:
                        yield artifact_event(key, [(_file_name(key, a.value[0]), local)],
                                             a.ts_ms)
                    except ImportError_ as exc:
                        self._warn(f"file {key!r} refused: {exc}")
                continue
            value = N.time_value(a.value).isoformat() if a.kind == "datetime" else a.value
            parts = key.split("/")
            if parts[0] == N.PARAMETERS and len(parts) > 1:
                N.nest(params, parts[1:], value)  # parameters/a/b -> param a = {"b": ...}
                ts["param"] = ts["param"] or a.ts_ms
            else:
                summary[key] = value  # another field: a summary under its full path
                ts["summary"] = ts["summary"] or a.ts_ms
        for key, value in params.items():
            yield ImportEvent("param", key, ts["param"], payload=value)
        for key, value in summary.items():
            yield ImportEvent("summary", key, ts["summary"], payload=value)

    def _append_event(self, item: Append, step: int | None,
                      uploads: dict[str, Any]) -> ImportEvent | None:
        if item.kind == "float":
            return ImportEvent("metric", item.key, item.ts_ms, step=step, value=item.value)
        if item.kind == "string":
            return text_event(item.key, step, item.ts_ms, item.value)
        if item.kind == "histogram":
            return histogram_event(item.key, step, item.ts_ms, item.value, self._warn)
        local = self._local(item.key, step, item.value, uploads)
        if local is None:
            return None
        return parquet_file_event(item.key, step, item.ts_ms, item.value[0], local)

    def _local(self, key: str, step: int | None, ref: tuple[str, str, int],
               uploads: dict[str, Any]) -> Path | None:
        """The local file a ``FileRef`` names, through the file's upload requests; None with
        a counted warning when it is gone, refused or no longer the size Neptune recorded."""
        at = f" at step {step}" if step is not None else ""
        up = uploads.get(ref[0])
        if up is None:
            self._warn(f"file {key!r}{at}: no upload request names {ref[0]!r} (uploaded "
                       "before the server went away); not imported")
            return None
        if not os.path.lexists(up.source_path):
            self._warn(f"file {key!r}{at}: {up.source_path} no longer exists; not imported")
            return None
        try:
            local = resolve_source(up.source_path, self.roots)
        except ImportError_ as exc:
            self._warn(f"file {key!r}{at} refused: {exc} (pass trusted_roots)")
            return None
        if not local.is_file() or local.stat().st_size != up.size:
            self._warn(f"file {key!r}{at}: {up.source_path} changed since it was logged "
                       f"({up.size} bytes then); not imported")
            return None
        return local

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s import: %s", S.SOURCE, message)


def _steps(rows: AppendRows, mult: int) -> list[int | None]:
    """Each row's step in the spool, as the stream decodes an operation's: whole steps a
    float holds exactly are kept as they are when the multiplier is 1."""
    steps = rows.steps()
    if mult == 1 and steps is rows.wholes and (
            not steps or (min(steps) >= -_EXACT and max(steps) <= _EXACT)):
        return steps
    decode_step = N.decode_step
    return [decode_step(float(at), mult) for at in steps]


def _file_name(key: str, destination: str) -> str:
    """The attribute's last part, with the uploaded file's extension when it has none."""
    name = Path(key).name
    suffix = Path(destination).suffix
    return name if Path(name).suffix or not suffix else name + suffix


def _decimal_text(step: Decimal) -> str:
    """A decimal step as Neptune shows it (``1.5``, ``10``)."""
    return format(step.normalize(), "f")
