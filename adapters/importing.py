"""The importer contract: every source (MLflow, W&B, Neptune, Comet, TensorBoard) becomes
spool events.

An importer lists the source's runs (:class:`SourceRun`) and streams each run's events
(:class:`ImportEvent`) with their original steps and timestamps. :mod:`bridge.importers.sink`
writes them into the spool, one file per imported run, atomically, so an interrupted import
continues where it stopped and never duplicates. The agent then delivers them anywhere.

The same readers serve ``bridge verify``: reading a destination back is importing it.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, runtime_checkable

from bridge.errors import ImportSourceError

__all__ = [
    "ImportEvent",
    "Importer",
    "MetricColumns",
    "MetricPoints",
    "MetricRows",
    "RowGatherer",
    "POINTS_BATCH",
    "SqlPoints",
    "ImportError_",
    "SourceRun",
    "artifact_event",
    "media_event",
    "MediaFile",
    "blob_digest",
    "bridge_run_id",
    "expand",
    "take_points",
    "resolve_source",
    "safe_relative_path",
]

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAMESPACE = uuid.UUID("6f1c2a8e-5b7d-4e3a-9c1f-0b2d4e6a8c10")


# The import error of bridge's tree; the historical name stays for existing code.
ImportError_ = ImportSourceError


@dataclass
class SourceRun:
    """One run of a source system, before import."""

    source: str  # "mlflow", "wandb", "neptune", "comet", "tensorboard"
    source_id: str  # the run's id in the source
    project: str
    name: str | None = None
    notes: str | None = None
    group: str | None = None
    start_ms: int = 0
    end_ms: int | None = None
    status: str = "FINISHED"  # RUNNING | FINISHED | FAILED | KILLED
    parent_id: str | None = None  # the source id of a parent run (MLflow nested runs)
    handle: Any = None  # the importer's own reference, passed back to events()
    extra_tags: dict[str, str] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return bridge_run_id(self.source, self.source_id)


@dataclass(frozen=True)
class ImportEvent:
    """One event with its original time. ``files`` lists local files of an artifact."""

    kind: str  # metric, param, tag, summary, artifact, text, dict, event, system, note
    key: str | None
    ts_ms: int
    step: int | None = None
    value: float | None = None  # metrics
    payload: Any = None  # everything else (JSON value)
    # artifacts: (relative path, local file); media: (reference, local file or bytes), each
    # reference named by one item of the payload as {"file": reference}
    files: tuple[tuple[str, Path | bytes], ...] = ()
    artifact_type: str = "file"

    def __init__(self, kind: str, key: str | None, ts_ms: int, step: int | None = None,
                 value: float | None = None, payload: Any = None,
                 files: tuple[tuple[str, Path | bytes], ...] = (),
                 artifact_type: str = "file") -> None:
        # The fields above, as the generated __init__ sets them, in half its time (that one
        # goes through object.__setattr__ per field): an import creates one per metric point.
        self.__dict__.update(kind=kind, key=key, ts_ms=ts_ms, step=step, value=value,
                             payload=payload, files=files, artifact_type=artifact_type)


# An importer hands its points over at the latest once it holds this many flat values
# (5,000 points): the sink's memory stays bounded as with one event a point.
POINTS_BATCH = 4 * 5000


class MetricPoints:
    """Metric points of one run in one flat list, ``key, step, ts_ms, value`` repeated: what
    an importer with many points per source row hands the sink (through its optional
    ``stream(run)``) in place of one :class:`ImportEvent` a point, so that the sink writes
    them without Python work per point. Each key a str, each step an int or None, each time
    an int (ms), each value a float (a non-finite one is written as the sink writes any)."""

    __slots__ = ("flat",)

    def __init__(self, flat: list[Any] | None = None) -> None:
        self.flat: list[Any] = [] if flat is None else flat

    def events(self) -> Iterator[ImportEvent]:
        """The points as metric events, in order."""
        it = iter(self.flat)
        for key, step, ts_ms, value in zip(it, it, it, it):
            yield ImportEvent("metric", key, ts_ms, step, value)


class MetricColumns:
    """Metric points of one run as four equal-length lists, ``keys``, ``steps``, ``ts_ms``,
    ``values``, each as in :class:`MetricPoints`: what an importer whose source holds a row of
    several keys at one step and time (trackio's ``metrics`` rows) hands the sink, since it
    extends these lists a row at a time (``keys.extend(row)``, ``steps += [step] * n``)
    instead of a point at a time. The sink takes them as it takes :class:`MetricPoints`."""

    __slots__ = ("keys", "steps", "ts_ms", "values")

    def __init__(self, keys: list[str], steps: list[int | None], ts_ms: list[int],
                 values: list[float]) -> None:
        self.keys, self.steps, self.ts_ms, self.values = keys, steps, ts_ms, values

    def events(self) -> Iterator[ImportEvent]:
        """The points as metric events, in order."""
        for key, step, ts_ms, value in zip(self.keys, self.steps, self.ts_ms, self.values):
            yield ImportEvent("metric", key, ts_ms, step, float(value))


class MetricRows:
    """Metric points of one run as rows, each a value of every key of ``names``, in that
    order, at one step and time: ``steps`` and ``ts_ms`` one a row, ``values`` ``len(names)``
    a row, row after row. The shape of a source that logs the same keys at every step
    (trackio's ``metrics`` rows, neptune-scale's appends): the importer appends a row's step,
    time and values, and the spool keeps a step and a time a row rather than a point. Each
    item as in :class:`MetricPoints`."""

    __slots__ = ("names", "steps", "ts_ms", "values")

    def __init__(self, names: tuple[str, ...], steps: list[int | None], ts_ms: list[int],
                 values: list[float]) -> None:
        self.names, self.steps, self.ts_ms, self.values = names, steps, ts_ms, values

    def columns(self) -> tuple[list[str], list[int | None], list[int], list[float]]:
        """The points as :class:`MetricColumns`' four lists."""
        from bridge.spool.points import rows_as_points

        return (*rows_as_points(self.names, self.steps, self.ts_ms), list(self.values))

    def events(self) -> Iterator[ImportEvent]:
        """The points as metric events, in order."""
        for key, step, ts_ms, value in zip(*self.columns()):
            yield ImportEvent("metric", key, ts_ms, step, float(value))


class RowGatherer:
    """Gathers an importer's metric rows (:class:`MetricRows`) and hands them over in
    batches, in order. The importer appends a row to :attr:`steps`, :attr:`ts_ms` and
    :attr:`values` itself when its keys are :attr:`names` (the common case, no call a row),
    calls :meth:`switch` first when they are not, and :meth:`take` once :attr:`values` holds
    :attr:`BATCH` values and before anything else of the run. A short run of rows of the same keys (fewer than
    :data:`MIN_ROWS`, as when each step alternates two sets of keys) goes over as points
    (:class:`MetricColumns`) instead: a row shape a row would cost more than it saves."""

    MIN_ROWS = 32
    BATCH = POINTS_BATCH // 4  # points handed over at a time

    __slots__ = ("names", "steps", "ts_ms", "values", "_cols")

    def __init__(self) -> None:
        self.names: tuple[str, ...] | None = None
        self.steps: list[int | None] = []
        self.ts_ms: list[int] = []
        self.values: list[float] = []
        self._cols: tuple[list[Any], list[Any], list[Any], list[Any]] = ([], [], [], [])

    def switch(self, names: tuple[str, ...]) -> Iterator[MetricRows | MetricColumns]:
        """Rows of ``names`` follow: what the rows so far make up, handed over as far as
        it must be."""
        if len(self.steps) >= self.MIN_ROWS:
            yield from self.take()
        elif self.steps:
            cols = MetricRows(self.names or (), self.steps, self.ts_ms, self.values).columns()
            for mine, more in zip(self._cols, cols):
                mine += more
            self._clear()
            if len(self._cols[0]) >= self.BATCH:
                yield self._take_cols()
        self.names = names

    def take(self) -> Iterator[MetricRows | MetricColumns]:
        """Everything gathered, in the order it came."""
        if self._cols[0]:
            yield self._take_cols()
        if self.steps:
            yield MetricRows(self.names or (), self.steps[:], self.ts_ms[:], self.values[:])
            self._clear()

    def _clear(self) -> None:
        self.steps.clear()
        self.ts_ms.clear()
        self.values.clear()

    def _take_cols(self) -> MetricColumns:
        out = MetricColumns(*(c[:] for c in self._cols))
        for c in self._cols:
            c.clear()
        return out


class SqlPoints:
    """One key's metric points of one run as the rows of a query on a SQLite file (an MLflow
    sqlite store's ``metrics`` table): what an importer of such a file hands the sink through
    its ``stream(run)``, so that the writer reads them from the file attached read-only, a
    block's rows at a time, and packs them: a tuple a point, made in C, and no other Python
    object.

    ``select`` reads the file under the schema name :attr:`SCHEMA` (``source.metrics``) and
    gives the columns ``step`` (an integer or NULL), ``ts_ms`` (an integer, ms) and ``value``
    (a REAL; NULL for NaN, infinities as they are), in its ORDER BY's order: the writer
    selects from it as the one subquery of a ``SELECT`` with no ORDER BY of its own, where
    SQLite keeps the subquery's (an outer ORDER BY costs a sort, ~10 % of an MLflow import;
    ``tests/importers/test_sink_points.py`` checks the order); ``params`` are its
    parameters. The spool holds what :class:`MetricPoints` of the same values would write
    (:meth:`events` reads the same rows in Python: the sink's other way in)."""

    SCHEMA = "source"
    __slots__ = ("db", "key", "select", "params")

    def __init__(self, db: Path, key: str, select: str, params: tuple = ()) -> None:
        self.db, self.key, self.select, self.params = Path(db), key, select, tuple(params)

    def events(self) -> Iterator[ImportEvent]:
        """The points as metric events, in order."""
        from bridge.spool.imported import SourceFiles

        with SourceFiles() as sources:  # the file attached as the writer attaches it
            cur = sources.query(self.db, self.SCHEMA,
                                f"SELECT step, ts_ms, value FROM ({self.select})", self.params)
            key, nan = self.key, math.nan
            while rows := cur.fetchmany(1000):
                for step, ts_ms, value in rows:
                    yield ImportEvent("metric", key, ts_ms, step, nan if value is None else value)


def take_points(flat: list[Any]) -> MetricPoints:
    """The points gathered in ``flat`` as :class:`MetricPoints`; ``flat`` is emptied for the
    next ones (a producer keeps appending to the same list)."""
    out = MetricPoints(flat[:])
    flat.clear()
    return out


_BULK = (MetricPoints, MetricColumns, MetricRows, SqlPoints)  # what a stream may hand over


def expand(stream: Iterable[ImportEvent | MetricPoints | MetricColumns | MetricRows | SqlPoints]
           ) -> Iterator[ImportEvent]:
    """An importer's ``stream(run)`` as plain events: its ``events(run)``."""
    for item in stream:
        if type(item) in _BULK:
            yield from item.events()
        else:
            yield item


def bridge_run_id(source: str, source_id: str) -> str:
    """Keep a source id that is already 32 lowercase hex (an MLflow id, a bridge id);
    otherwise derive a deterministic one, so a re-import finds the same run."""
    compact = source_id.replace("-", "")
    if _HEX32.match(compact):
        return compact
    return uuid.uuid5(_NAMESPACE, f"{source}:{source_id}").hex


def safe_relative_path(path: str) -> str:
    """Refuse artifact paths that would escape the target directory (a hostile source)."""
    p = path.replace("\\", "/")
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if p.startswith("/") or not parts or any(x == ".." for x in parts):
        raise ImportError_(f"unsafe artifact path {path!r}")
    return "/".join(parts)


Digest = tuple[str, bytes]  # (hashlib algorithm name, raw digest)


def resolve_source(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]],
                   *, digest: Digest | None = None) -> Path:
    """The real path of a source file or directory an importer may read, or ImportError_.

    Why: whatever an importer reads lands in the spool and is uploaded by the next sync, and
    a hostile source names files through symlinked directories (``files/sub`` -> ``~/.ssh``),
    ``..`` or absolute references (a W&B manifest ``local_path``, a Neptune ``file_path``).
    ``os.path.realpath`` resolves every component, not only the last, so the check sees
    where the bytes really are; callers read only the path returned. This is the one rule
    of every importer: the real path must lie inside one of ``roots`` (the import location,
    a directory the user trusted, a temporary directory the importer made).

    A file outside every root is still accepted when its bytes match ``digest``, the
    digest the source itself recorded for it (the MD5 of a W&B manifest entry, the SHA-256
    name of a bridge blob): that is how W&B's staging copies and bridge's spool blobs are
    referenced, and a hostile source cannot name the digest of a file it does not know.
    """
    real = os.path.realpath(path)
    if not os.path.exists(real):
        raise ImportError_(f"{os.fspath(path)!r} does not exist")
    for root in roots:
        top = os.path.realpath(root)
        if os.path.commonpath([real, top]) == top:
            return Path(real)
    if digest is not None and os.path.isfile(real) and _file_digest(real, digest[0]) == digest[1]:
        return Path(real)
    raise ImportError_(f"{os.fspath(path)!r} resolves to {real!r}, outside the import root; "
                       "refused")


def blob_digest(path: str | os.PathLike[str]) -> Digest | None:
    """The SHA-256 a bridge blob path (``.../<sha[:2]>/<sha>``) claims for its bytes; None
    for any other path. :func:`resolve_source` checks the claim against the content."""
    p = Path(path)
    if _HEX64.match(p.name) and p.parent.name == p.name[:2]:
        return ("sha256", bytes.fromhex(p.name))
    return None


def _file_digest(path: str, algorithm: str) -> bytes | None:
    try:
        h = hashlib.new(algorithm)
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except (OSError, ValueError):
        return None
    return h.digest()


def artifact_event(name: str, files: list[tuple[str, Path]], ts_ms: int,
                   artifact_type: str = "file", step: int | None = None) -> ImportEvent:
    """An artifact of local files (checked for path escapes and symlinks).

    Every local file must be a regular file named by its real path, as
    :func:`resolve_source` (or the importer's own temporary directory) gives it: a path
    reached through a symlink, anywhere along it, has not been checked and is refused.
    """
    checked = []
    for rel, local in files:
        absolute = Path(local).absolute()
        if os.path.realpath(absolute) != str(absolute):
            raise ImportError_(f"artifact file {local} is reached through a symlink; refused")
        if not absolute.is_file():
            raise ImportError_(f"artifact file {local} is not a regular file; refused")
        checked.append((safe_relative_path(rel), absolute))
    return ImportEvent("artifact", name, ts_ms, step=step, files=tuple(checked),
                       artifact_type=artifact_type)


@dataclass(frozen=True)
class MediaFile:
    """One file of an imported media event: a checked local file or bytes read from the
    source (a TensorBoard summary's encoded PNG), with its facts (see
    :func:`bridge.spool.media.media_item`: ``caption``, ``width``, ``height``,
    ``sample_rate``, ``fps``...)."""

    content: Path | bytes
    mime: str
    name: str
    facts: dict[str, Any] = field(default_factory=dict)


def media_event(key: str, step: int | None, ts_ms: int, type: str,
                items: Iterable[MediaFile] = (), data: Any = None,
                source: dict[str, Any] | None = None,
                cells: dict[str, MediaFile] | None = None) -> ImportEvent:
    """A media event (``bridge.spool.media``) whose files the sink copies into the blob store.

    ``items`` become the payload's items in order. A table's media cells are written in
    ``data["rows"]`` as ``{"media": {"type": ..., "items": [{"file": ref}]}}`` with each ``ref``
    a key of ``cells``. Local files must be regular files named by their real path (as
    :func:`resolve_source` returns them); a path through a symlink is refused.
    """
    from bridge.spool.media import media_payload

    files: list[tuple[str, Path | bytes]] = []
    entries = []

    def add(ref: str, f: MediaFile) -> None:
        content = f.content
        if not isinstance(content, (bytes, bytearray)):
            absolute = Path(content).absolute()
            if os.path.realpath(absolute) != str(absolute) or not absolute.is_file():
                raise ImportError_(f"media file {content} is not a regular file named by its "
                                   "real path; refused")
            content = absolute
        files.append((ref, bytes(content) if isinstance(content, bytearray) else content))

    for n, f in enumerate(items):
        ref = f"item{n}"
        add(ref, f)
        entries.append({"file": ref, "mime": f.mime, "name": f.name,
                        **{k: v for k, v in f.facts.items() if v is not None}})
    for ref, f in (cells or {}).items():
        add(ref, f)
    payload = media_payload(type, [], data, source)
    payload["items"] = entries
    return ImportEvent("media", key, ts_ms, step=step, payload=payload, files=tuple(files))


@runtime_checkable
class Importer(Protocol):
    """A source of runs. ``runs()`` lists them; ``events(run)`` streams one run's events
    in any order (the sink keeps each event's own step and time)."""

    name: str

    def runs(self) -> Iterator[SourceRun]: ...

    def events(self, run: SourceRun) -> Iterator[ImportEvent]: ...

    # Optional, for a source that gives many points at once (trackio, neptune-scale, W&B,
    # an MLflow sqlite store): ``stream(run)`` yields the same events in the same order, runs
    # of metric points among them as :class:`MetricPoints`; ``events(run)`` is then
    # ``expand(self.stream(run))``. The sink reads ``stream`` when there is one, so a
    # subclass that changes what ``events`` yields changes ``stream``.
