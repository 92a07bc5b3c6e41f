"""Import Neptune runs: neptune-exporter Parquet files, or Neptune 1.x offline directories.

* **Parquet** (neptune-exporter's ``model.SCHEMA``): one file per run part,
  ``<run_id>_part_<n>.parquet``, columns ``project_id, run_id, attribute_path,
  attribute_type, step decimal(18,6), timestamp(ms, UTC)`` and typed value columns
  (``int_value, float_value, string_value, bool_value, datetime_value, string_set_value,
  file_value{path}, histogram_value``). Files live under the exporter's files root
  (``--files-path``), in ``<sanitized project>/<file_value.path>``. Read with pyarrow in
  record batches, twice per run (description, then events), so memory stays bounded.
* **Offline**: ``.neptune/offline/run__*`` operation logs (:mod:`.offline`).

Media (:mod:`.media_in`): Parquet ``histogram_series`` and ``file_series`` rows and offline
``LogImages`` values (``FileSeries``) become media events with their steps and times; the
media bridge's adapter wrote (names.py, "media events") read back as the events they were.

Both are mapped the same way; bridge's own Neptune layout (:mod:`.names`: the run's
``bridge`` fields and the namespaces of params, summaries, files, artifacts, events and
system facts) is recognised so a run bridge wrote reads back as the events it came from.

Neptune steps are decimals: see the step convention in :mod:`.names` (the
``step_multiplier`` option overrides the multiplier it picks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, ClassVar, Collection, Iterator

from bridge.adapters.neptune import names as N
from bridge.adapters.neptune.media_in import (
    bridge_media_files,
    histogram_event,
    image_point_events,
    parquet_file_event,
    text_event,
)
from bridge.adapters.neptune.offline import (
    OfflineRun,
    bridge_run_id_of,
    find_run_dirs,
    image_points,
    scan,
    series_points,
)
from bridge.adapters.importing import (
    ImportError_,
    ImportEvent,
    SourceRun,
    artifact_event,
    blob_digest,
    resolve_source,
)

__all__ = ["NeptuneImporter", "sanitize_path_part"]

log = logging.getLogger("bridge.importers.neptune")  # the logger name users may filter on

_OPTIONS = {"files_path", "batch_rows", "trusted_roots"}
_ATOM_TYPES = {"float", "int", "string", "bool", "datetime", "string_set"}
_FILE_TYPES = {"file", "file_set", "file_series", "artifact"}
_READ_COLUMNS = ["project_id", "run_id", "attribute_path", "attribute_type", "step",
                 "timestamp", "int_value", "float_value", "string_value", "bool_value",
                 "datetime_value", "string_set_value", "file_value", "histogram_value"]


def sanitize_path_part(part: str) -> str:
    """neptune-exporter's directory name for a project or run id (``utils.py``)."""
    digest = hashlib.blake2b(part.encode("utf-8"), digest_size=8).hexdigest()
    return "".join(c if c.isalnum() or c in ("_", "-") else "_" for c in part) + "-" + digest


@dataclass
class _Desc:
    """What a run's non-series attributes say, from either source."""

    source_id: str
    project: str
    atoms: dict[str, tuple[str, Any]] = field(default_factory=dict)  # path -> (type, value)
    tags: list[str] = field(default_factory=list)
    files: list[tuple[str, str, Any, float | None]] = field(default_factory=list)  # (path, type, local|bytes, step)
    places: int = 0
    created_ms: int = 0
    last_ts_ms: int = 0
    long_text: Callable[[str, int | None], str | None] = lambda key, step: None

    @property
    def bridge_written(self) -> bool:
        return N.RUN_ID in self.atoms

    def value(self, path: str, default: Any = None) -> Any:
        item = self.atoms.get(path)
        return default if item is None else item[1]


class NeptuneImporter:
    """Neptune runs as bridge runs; see the module docstring."""

    name: ClassVar[str] = "neptune"

    def __init__(self, location: str | Path | None, project: str | None = None,
                 step_multiplier: int | None = None, **opts: Any) -> None:
        unknown = set(opts) - _OPTIONS
        if unknown:
            raise ImportError_(f"neptune: unknown option(s) {', '.join(sorted(unknown))}")
        if location is None:
            raise ImportError_("neptune: a location is needed (Parquet files or a .neptune dir)")
        self.location = Path(location)
        if not self.location.exists():
            raise ImportError_(f"neptune: {self.location} does not exist")
        self.project = project
        if step_multiplier is not None and int(step_multiplier) < 1:
            raise ImportError_("neptune: step_multiplier must be a positive integer")
        self.step_multiplier = int(step_multiplier) if step_multiplier is not None else None
        self.files_path = Path(opts["files_path"]) if opts.get("files_path") else None
        # rows decoded into Python at a time: 16,384 keeps a 1M-point import under 150 MB
        self.batch_rows = int(opts.get("batch_rows", 16384))
        # Offline runs are read only inside the location or these directories (an upload's
        # ``file_path`` is absolute: see resolve_source); Parquet files inside a files root.
        self.roots: list[Path] = [self.location]
        self.roots += [Path(r) for r in opts.get("trusted_roots") or ()]
        self.warnings: list[str] = []

    # -- listing ------------------------------------------------------------------

    def runs(self) -> Iterator[SourceRun]:
        parts = _parquet_runs(self.location)
        if parts:
            for files in parts:
                yield self._source_run(self._describe_parquet(files), ("parquet", files))
            return
        groups: dict[str, list[Path]] = {}
        for d in find_run_dirs(self.location):
            if not self._run_dir_inside(d):
                continue
            rid = bridge_run_id_of(d) or (d.name.split("__")[1] if "__" in d.name else d.name)
            groups.setdefault(rid, []).append(d)
        for rid, dirs in groups.items():
            yield self._source_run(self._describe_offline(rid, scan(dirs)), ("offline", dirs))

    def _source_run(self, desc: _Desc, where: tuple[str, Any]) -> SourceRun:
        mult = self.step_multiplier or N.step_multiplier(desc.places)
        extra = {N.STEP_MULTIPLIER_TAG: str(mult)} if mult != 1 else {}
        status = desc.value(N.STATUS)
        if status not in N.STATUSES:
            status = "FAILED" if desc.value(N.SYS_FAILED) is True else "FINISHED"
        start = N.ms_of(desc.value(N.START_TIME)) or N.ms_of(desc.value(N.SYS_CREATION_TIME)) \
            or desc.created_ms
        end = N.ms_of(desc.value(N.END_TIME)) or N.ms_of(desc.value(N.SYS_MODIFICATION_TIME)) \
            or (desc.last_ts_ms or None)
        if start and end is not None and end < start:
            end = start  # points stamped before the run was created: it cannot end before it began
        sid = desc.value(N.RUN_ID) or desc.source_id
        parent = desc.value(N.SYS_FORKING_PARENT)
        return SourceRun(
            source="neptune", source_id=str(sid),
            project=self.project or desc.value(N.PROJECT) or desc.project or "neptune",
            name=desc.value(N.SYS_NAME) or None, notes=desc.value(N.SYS_DESCRIPTION) or None,
            group=desc.value(N.GROUP), start_ms=start or 0, end_ms=end, status=status,
            parent_id=str(parent) if parent else None, handle=(where, desc, mult),
            extra_tags=extra,
        )

    def _run_dir_inside(self, run_dir: Path) -> bool:
        """An offline run dir and its operation logs must really be inside the roots: a
        symlinked one would import another run's history from anywhere on the disk."""
        try:
            for path in (run_dir, *run_dir.glob(N.OP_LOG_GLOB)):
                resolve_source(path, self.roots)
        except ImportError_ as exc:
            self._warn(f"run directory {run_dir.name} refused: {exc}")
            return False
        return True

    # -- describing ---------------------------------------------------------------

    def _describe_offline(self, rid: str, run: OfflineRun) -> _Desc:
        desc = _Desc(source_id=rid, project="", created_ms=run.created_ms,
                     last_ts_ms=run.last_ts_ms, places=run.step_places, tags=list(run.tags))
        for path, (kind, value) in run.fields.items():
            if kind == "datetime" and isinstance(value, (int, float)):
                value = N.time_value(value)
            desc.atoms[path] = (kind, value)
        custom = desc.value(N.SYS_CUSTOM_RUN_ID)
        if custom and not desc.bridge_written:
            desc.source_id = str(custom)
        for path, up in run.uploads.items():
            desc.files.append((path, "file", up.content if up.content is not None else up.local, None))
        return desc

    def _describe_parquet(self, files: list[Path]) -> _Desc:
        import numpy as np
        import pyarrow.compute as pc

        desc = _Desc(source_id="", project="")
        for batch in _batches(files, self.batch_rows):
            cols = batch.schema.names
            if not desc.source_id and batch.num_rows:
                desc.source_id = str(batch.column(cols.index("run_id"))[0].as_py())
                desc.project = str(batch.column(cols.index("project_id"))[0].as_py())
            types = batch.column(cols.index("attribute_type"))
            series = pc.is_in(types, value_set=_pa().array(["float_series", "string_series",
                                                           "histogram_series", "file_series"]))
            steps = pc.filter(batch.column(cols.index("step")), series)
            if len(steps):
                f = np.asarray(pc.cast(steps, _pa().float64()).to_numpy(zero_copy_only=False),
                               dtype=float)
                f = f[~np.isnan(f)]
                desc.places = max(desc.places, _places_needed(f))
                ts = pc.filter(batch.column(cols.index("timestamp")), series)
                top = pc.max(pc.cast(ts, _pa().int64())).as_py()
                desc.last_ts_ms = max(desc.last_ts_ms, top or 0)
            others = pc.filter(batch, pc.invert(series))
            for row in others.to_pylist():
                kind, path = row["attribute_type"], row["attribute_path"]
                if kind in _ATOM_TYPES:
                    value = row.get(f"{kind}_value")
                    if path == N.SYS_TAGS and kind == "string_set":
                        desc.tags = list(value or [])
                    else:
                        desc.atoms[path] = (kind, value)
                elif kind in _FILE_TYPES:
                    rel = (row.get("file_value") or {}).get("path")
                    if rel:
                        desc.files.append((path, kind, rel, None))
        custom = desc.value(N.SYS_CUSTOM_RUN_ID)
        if custom:
            desc.source_id = str(custom)
        return desc

    # -- events -------------------------------------------------------------------

    def events(self, run: SourceRun) -> Iterator[ImportEvent]:
        (kind, where), desc, mult = run.handle
        t0 = run.start_ms
        parquet = kind == "parquet"
        yield from _atom_events(desc, t0)
        yield from _tag_events(desc, t0)
        with tempfile.TemporaryDirectory(prefix="bridge-neptune-") as tmp:
            real_tmp = Path(os.path.realpath(tmp))  # artifact files are named by real paths
            # Media a bridge run holds as files per step (media_in.py); the rest stay files.
            used: set[int] = set()
            histograms: set[tuple[str, int]] = set()
            if desc.bridge_written:
                media = bridge_media_files(
                    desc.files, lambda ref, n: self._local(ref, desc, real_tmp, n, parquet),
                    self._warn)
                used, histograms = media.used, media.histograms
                desc.long_text = self._long_text(media.long_texts, desc, real_tmp, parquet)
                yield from media.events
            if parquet:
                yield from self._parquet_series(where, desc, mult, histograms, real_tmp)
            else:
                for p in series_points(where):
                    yield from _point_events(desc, p.path, p.kind, p.step, p.value, p.ts_ms, mult)
                yield from image_point_events(image_points(where), mult, desc.bridge_written,
                                              histograms, self._warn)
            yield from self._file_events(desc, t0, real_tmp, parquet, used)

    def _parquet_series(self, files: list[Path], desc: _Desc, mult: int,
                        histograms: set[tuple[str, int]], tmp: Path) -> Iterator[ImportEvent]:
        import pyarrow.compute as pc

        pa = _pa()
        for batch in _batches(files, self.batch_rows):
            cols = batch.schema.names
            types = batch.column(cols.index("attribute_type"))
            yield from self._parquet_media(batch, desc, mult, histograms, tmp)
            keep = pc.is_in(types, value_set=pa.array(["float_series", "string_series"]))
            batch = pc.filter(batch, keep)
            if not batch.num_rows:
                continue
            paths = batch.column(cols.index("attribute_path")).to_pylist()
            kinds = batch.column(cols.index("attribute_type")).to_pylist()
            steps = pc.cast(batch.column(cols.index("step")), pa.float64()).to_pylist()
            ts = pc.cast(batch.column(cols.index("timestamp")), pa.int64()).to_pylist()
            floats = batch.column(cols.index("float_value")).to_pylist()
            strings = batch.column(cols.index("string_value")).to_pylist()
            for i in range(batch.num_rows):
                which = "float" if kinds[i] == "float_series" else "string"
                value = floats[i] if which == "float" else strings[i]
                yield from _point_events(desc, paths[i], which, steps[i], value,
                                         ts[i] or 0, mult)

    def _long_text(self, where: dict[tuple[str, int], tuple[Any, int]], desc: _Desc, tmp: Path,
                   parquet: bool) -> Callable[[str, int | None], str | None]:
        """The whole text of a text point Neptune's StringSeries holds only the start of."""

        def whole(key: str, step: int | None) -> str | None:
            if step is None or (key, step) not in where:
                return None
            ref, n = where[(key, step)]
            try:
                local = self._local(ref, desc, tmp, n, parquet)
                if local is not None:
                    return local.read_text(encoding="utf-8")
                problem = "its file is missing"
            except (ImportError_, OSError, ValueError) as exc:
                problem = str(exc)
            self._warn(f"text {key!r} at step {step}: {problem}; imported as the first "
                       f"{N.MAX_SERIES_STRING} characters Neptune's series holds")
            return None

        return whole

    def _parquet_media(self, batch: Any, desc: _Desc, mult: int,
                       histograms: set[tuple[str, int]], tmp: Path) -> Iterator[ImportEvent]:
        """``histogram_series`` and ``file_series`` rows as media events (media_in.py)."""
        import pyarrow.compute as pc

        pa = _pa()
        cols = batch.schema.names
        types = batch.column(cols.index("attribute_type"))
        batch = pc.filter(batch, pc.is_in(types, value_set=pa.array(["histogram_series",
                                                                     "file_series"])))
        if not batch.num_rows:
            return
        steps = pc.cast(batch.column(cols.index("step")), pa.float64()).to_pylist()
        ts = pc.cast(batch.column(cols.index("timestamp")), pa.int64()).to_pylist()
        for i, row in enumerate(batch.select([c for c in cols if c in (
                "attribute_path", "attribute_type", "file_value", "histogram_value")]).to_pylist()):
            path, step = row["attribute_path"], N.decode_step(steps[i], mult)
            if row["attribute_type"] == "histogram_series":
                event = histogram_event(path, step, ts[i] or 0, row.get("histogram_value"),
                                        self._warn)
                if event is not None:
                    yield event
                continue
            if desc.bridge_written and step is not None and (path, step) in histograms:
                continue  # bridge's rendering of a histogram whose JSON was imported
            rel = (row.get("file_value") or {}).get("path")
            try:
                local = self._local(rel, desc, tmp, i, True) if rel else None
            except ImportError_ as exc:
                self._warn(f"file series {path!r} at step {step} refused: {exc}")
                continue
            if local is None or not local.is_file():
                self._warn(f"file series {path!r} at step {step}: {rel!r} is missing; not imported")
                continue
            yield parquet_file_event(path, step, ts[i] or 0, rel, local)

    def _file_events(self, desc: _Desc, ts: int, tmp: Path, parquet: bool,
                     skip: Collection[int] = ()) -> Iterator[ImportEvent]:
        manifests = {name: v for p, (_, v) in desc.atoms.items()
                     if (name := N.relative(N.MANIFESTS, p)) is not None}
        grouped: dict[str, list[tuple[str, Path]]] = {}
        for n, (path, kind, ref, step) in enumerate(desc.files):
            if n in skip:
                continue  # held by a media event
            try:
                local = self._local(ref, desc, tmp, n, parquet)
            except ImportError_ as exc:
                self._warn(f"file {path!r} refused: {exc}")
                continue
            if local is None:
                self._warn(f"file {path!r}: {ref!r} is missing")
                continue
            try:
                in_files, in_artifacts = N.relative(N.FILES, path), N.relative(N.ARTIFACTS, path)
                if desc.bridge_written and in_files is not None:
                    yield _text_or_dict(in_files, local, ts)
                elif desc.bridge_written and in_artifacts is not None:
                    name, rel = _artifact_member(in_artifacts, manifests)
                    grouped.setdefault(name, []).append((rel, local))
                elif local.is_dir():  # a file set / artifact directory: members stay in it
                    members = [(str(p.relative_to(local)), resolve_source(p, [local]))
                               for p in sorted(local.rglob("*")) if p.is_file()]
                    yield artifact_event(path, members, ts)
                else:
                    yield artifact_event(path, [(_file_name(path, local), local)], ts)
            except ImportError_ as exc:
                self._warn(f"file {path!r} refused: {exc}")
        for name, members in grouped.items():
            manifest = N.decode_manifest(manifests.get(name))
            try:
                yield artifact_event(name, members, ts, manifest.get("type") or "file")
            except ImportError_ as exc:
                self._warn(f"artifact {name!r} refused: {exc}")

    def _local(self, ref: Any, desc: _Desc, tmp: Path, n: int, parquet: bool) -> Path | None:
        """The real path of a file field's bytes; None when missing, ImportError_ when the
        reference leaves its root (see :func:`resolve_source`)."""
        if isinstance(ref, bytes):
            out = tmp / f"content-{n}"
            out.write_bytes(ref)
            return out
        if not parquet:
            if ref is None or not os.path.lexists(ref):
                return None
            # A bridge-written run uploads spool blobs by absolute path: proven by content.
            return resolve_source(ref, self.roots, digest=blob_digest(ref))
        roots = [self.files_path] if self.files_path else []
        base = self.location if self.location.is_dir() else self.location.parent
        for up in (base, *base.parents[:2]):
            roots.append(up / N.EXPORTER_FILES_DIR)
        for root in roots:
            for r in (root / sanitize_path_part(desc.project), root):
                candidate = r / str(ref)
                if os.path.lexists(candidate):
                    return resolve_source(candidate, [r])
        return None

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("neptune import: %s", message)


# -- mapping -------------------------------------------------------------------------


def _pa() -> Any:
    import pyarrow

    return pyarrow


def _parquet_runs(location: Path) -> list[list[Path]]:
    """Part files per run, part 0 first; ``.tmp`` parts (an unfinished export) ignored."""
    files = [location] if location.is_file() and location.suffix == ".parquet" else \
        sorted(location.rglob("*.parquet")) if location.is_dir() else []
    runs: dict[tuple[Path, str], list[tuple[int, Path]]] = {}
    for f in files:
        prefix, sep, num = f.stem.rpartition("_part_")
        key = (f.parent, prefix if sep else f.stem)
        runs.setdefault(key, []).append((int(num) if sep and num.isdigit() else 0, f))
    return [[f for _, f in sorted(parts)] for _, parts in sorted(runs.items())]


def _batches(files: list[Path], rows: int) -> Iterator[Any]:
    import pyarrow.parquet as pq

    for f in files:
        pf = pq.ParquetFile(f)
        cols = [c for c in _READ_COLUMNS if c in pf.schema_arrow.names]
        yield from pf.iter_batches(batch_size=rows, columns=cols)


def _places_needed(steps: Any) -> int:
    """:func:`names.decimal_places` of a whole array of steps at once."""
    import numpy as np

    for k in range(N.MAX_STEP_PLACES + 1):
        scaled = steps * 10 ** k
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6):
            return k
    return N.MAX_STEP_PLACES


def _plain(kind: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if kind == "string_set" and value is not None:
        return sorted(value)
    return value


def _atom_events(desc: _Desc, ts: int) -> Iterator[ImportEvent]:
    """``parameters/a/b`` -> param ``a`` = ``{"b": ...}``; ``summary/...`` likewise;
    ``environment/...`` of a bridge run -> one system event; other non-``sys`` atoms ->
    summaries under their full path."""
    params: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    system: dict[str, Any] = {}
    for path, (kind, value) in desc.atoms.items():
        value = _plain(kind, value)
        parts = path.split("/")
        if parts[0] == N.SYS or path in N.HEAD_FIELDS or N.relative(N.TAGS, path) is not None \
                or N.relative(N.MANIFESTS, path) is not None:
            continue
        if parts[0] == N.PARAMETERS and len(parts) > 1:
            N.nest(params, parts[1:], value)
        elif parts[0] == N.SUMMARY and len(parts) > 1 and desc.bridge_written:
            N.nest(summary, parts[1:], value)
        elif parts[0] == N.ENVIRONMENT and len(parts) > 1 and desc.bridge_written:
            N.nest(system, parts[1:], value)
        else:
            summary[path] = value
    for key, value in params.items():
        yield ImportEvent("param", key, ts, payload=value)
    for key, value in summary.items():
        yield ImportEvent("summary", key, ts, payload=value)
    if system:
        yield ImportEvent("system", "system", ts, payload=system)


def _tag_events(desc: _Desc, ts: int) -> Iterator[ImportEvent]:
    valued = {key: str(v) for p, (_, v) in desc.atoms.items()
              if (key := N.relative(N.TAGS, p)) is not None}
    labels_of = {N.tag_label(k, v) for k, v in valued.items()}
    for key, value in valued.items():
        yield ImportEvent("tag", key, ts, payload=value)
    for label in desc.tags:
        if label not in labels_of:
            yield ImportEvent("tag", label, ts, payload="")


def _point_events(desc: _Desc, path: str, kind: str, step: float | None, value: Any,
                  ts_ms: int, mult: int) -> Iterator[ImportEvent]:
    istep = N.decode_step(step, mult)
    in_events = N.relative(N.EVENTS, path)
    if kind == "float":
        yield ImportEvent("metric", path, ts_ms, step=istep,
                          value=float("nan") if value is None else float(value))
    elif desc.bridge_written and in_events is not None:
        yield ImportEvent("event", in_events, ts_ms, step=istep, payload=N.decode_event(value))
    elif isinstance(value, str):  # a StringSeries is a text series (names.py, "media events")
        yield text_event(path, istep, ts_ms, desc.long_text(path, istep) or value)
    else:
        yield ImportEvent("event", path, ts_ms, step=istep, payload=value)


def _artifact_member(rest: str, manifests: dict[str, Any]) -> tuple[str, str]:
    """Which artifact an ``artifacts/...`` file belongs to, and its path inside it."""
    for name in sorted(manifests, key=len, reverse=True):
        manifest = N.decode_manifest(manifests[name])
        files = manifest.get("files") or []
        if rest == name and len(files) == 1 and not manifest.get("is_dir"):
            return name, files[0]["path"]
        if rest.startswith(name + "/"):
            return name, rest[len(name) + 1:]
    return rest, Path(rest).name


def _file_name(path: str, local: Path) -> str:
    """The attribute's last part, with the stored file's extension when it has none."""
    name = Path(path).name
    return name if Path(name).suffix or not local.suffix else name + local.suffix


def _text_or_dict(name: str, local: Path, ts: int) -> ImportEvent:
    text = local.read_text(encoding="utf-8")
    if name.endswith(".json"):
        try:
            return ImportEvent("dict", name, ts, payload=json.loads(text))
        except ValueError:
            pass
    return ImportEvent("text", name, ts, payload=text)
