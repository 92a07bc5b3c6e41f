"""Reading neptune-scale's ``run_operations.sqlite3`` files (:mod:`.scale_names`).

Read with :mod:`sqlite3` (read-only) and decoded with neptune_api's protobuf classes: no
token, no server and no neptune-scale import. Operations are streamed in sequence order, so
memory stays bounded whatever the file's size. Only plain values are decoded here; what
they become in bridge is :mod:`.scale_importer`'s job.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from bridge.adapters.base import require
from bridge.adapters.neptune import names as N
from bridge.adapters.neptune import scale_names as S
from bridge.adapters.neptune.scale_columns import AppendRows, read_chunk
from bridge.errors import ImportSourceError
from bridge.spool.schema import read_only_uri

__all__ = ["Assign", "Append", "AppendFacts", "AppendRows", "OpsFile", "OperationError",
           "RunInfo", "TagChange", "Upload", "describe_operations", "find_ops_files",
           "one_at_a_time", "operation_errors", "read_appends", "read_operations", "read_ops_file",
           "upload_requests"]


@dataclass(frozen=True)
class OpsFile:
    """One ``run_operations.sqlite3``: which run it belongs to."""

    path: Path
    project: str
    run_id: str
    version: str
    first_ms: int  # the queue time of its first operation (0: no operation left)


@dataclass(frozen=True)
class RunInfo:
    """The run-creating operation (present only while the server had not acknowledged it)."""

    experiment: str | None
    creation_ms: int | None
    fork_parent: str | None
    fork_project: str | None
    fork_step: Decimal | None


@dataclass(frozen=True)
class Assign:
    key: str
    kind: str  # float, int, bool, string, datetime, string_set, file
    value: Any  # file: (path, mime, size)
    ts_ms: int


@dataclass(frozen=True)
class Append:
    key: str
    kind: str  # float, string, histogram, file
    value: Any  # histogram: {"type", "edges", "values"}; file: (path, mime, size)
    step: Decimal | None
    ts_ms: int
    preview: bool


@dataclass(slots=True)
class AppendFacts:
    """What the appends of a run's operations amount to, all a run's description needs of
    them (:func:`describe_operations` adds each operation's): the decimal places its steps
    need, the span of their times, and how many points are previews."""

    places: int = 0
    first_ms: int = 0  # 0: no append yet
    last_ms: int = 0
    previews: int = 0

    def add(self, rows: AppendRows) -> None:
        """A chunk's rows, as their operations one at a time would add (no preview among
        them)."""
        self.places = max(self.places, rows.places())
        times = rows.ts_ms
        if 0 in times:  # 0 stands for "no append yet": added in order, as one at a time
            for ts in times:
                self.add_time(ts)
            return
        self.add_time(min(times))
        self.add_time(max(times))

    def add_time(self, ts: int) -> None:
        """An append's time, in the span."""
        if not self.first_ms or ts < self.first_ms:
            self.first_ms = ts
        if ts > self.last_ms:
            self.last_ms = ts


@dataclass(frozen=True)
class TagChange:
    key: str  # sys/tags or sys/group_tags
    tag: str
    add: bool
    ts_ms: int


@dataclass(frozen=True)
class Upload:
    source_path: str
    mime: str
    size: int
    temporary: bool


@dataclass(frozen=True)
class OperationError:
    ts_ms: int
    type: str
    details: str
    sequence_id: int | None


def _proto() -> Any:
    return require(S.PROTO_MODULE, S.EXTRA)


def _connect(path: Path) -> sqlite3.Connection:
    """Read-only: the file may be a WAL database whose writer died; never change it."""
    try:
        return sqlite3.connect(read_only_uri(path), uri=True)
    except sqlite3.Error as exc:
        raise ImportSourceError(f"cannot open {path}: {exc}") from exc


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def find_ops_files(location: Path) -> list[Path]:
    """Every operations file at ``location`` (the file itself, a run dir, a log dir, a tree)."""
    if location.is_file():
        return [location] if location.name == S.OPS_FILE else []
    return sorted(p for p in location.rglob(S.OPS_FILE) if p.is_file())


def read_ops_file(path: Path) -> OpsFile:
    """The run an operations file belongs to; ImportSourceError when it is not one."""
    try:
        with closing(_connect(path)) as conn:
            if not {S.T_OPERATIONS, S.T_METADATA} <= _tables(conn):
                raise ImportSourceError(f"{path} is not a neptune-scale operations file")
            row = conn.execute(f"SELECT version, project, run_id FROM {S.T_METADATA} "
                               "ORDER BY id LIMIT 1").fetchone()
            first = conn.execute(f"SELECT MIN({S.COL_OP_TS}) FROM {S.T_OPERATIONS}").fetchone()
    except sqlite3.Error as exc:
        raise ImportSourceError(f"cannot read {path}: {exc}") from exc
    if row is None:
        raise ImportSourceError(f"{path} names no run (its {S.T_METADATA} table is empty)")
    return OpsFile(path, str(row[1]), str(row[2]), str(row[0]), int(first[0] or 0))


def step_of(step: Any) -> Decimal:
    """A protobuf ``Step{whole, micro}`` as the exact decimal it stands for."""
    return Decimal(int(step.whole)) + Decimal(int(step.micro)) / S.MICRO


def ms_of(ts: Any) -> int:
    """A protobuf ``Timestamp`` as epoch ms (rounded: the client stores float seconds)."""
    return round(ts.seconds * 1000 + ts.nanos / 1_000_000)  # round(float): an int


def _value(v: Any) -> tuple[str, Any] | None:
    which = v.WhichOneof("value")
    if which == "float64":
        return "float", float(v.float64)
    if which == "int64":
        return "int", int(v.int64)
    if which == "bool":
        return "bool", bool(v.bool)
    if which == "string":
        return "string", str(v.string)
    if which == "timestamp":
        return "datetime", ms_of(v.timestamp)
    if which == "string_set":
        return "string_set", sorted(v.string_set.values)
    if which == "file_ref":
        return "file", (v.file_ref.path, v.file_ref.mime_type, int(v.file_ref.size_bytes))
    if which == "histogram":
        h = v.histogram
        kind = h.WhichOneof("values")
        values = list(h.counts.values) if kind == "counts" else list(h.densities.values)
        return "histogram", {"type": S.HISTOGRAM_DENSITIES if kind == "densities"
                             else S.HISTOGRAM_COUNTS, "edges": list(h.bin_edges),
                             "values": values}
    return None


Decoded = RunInfo | Assign | Append | TagChange


def _decode_update(op: Any, queued_ms: int) -> Iterator[Decoded | str]:
    ts = ms_of(op.timestamp) if op.HasField("timestamp") else queued_ms
    step = step_of(op.step) if op.HasField("step") else None
    preview = op.HasField("preview") and bool(op.preview.is_preview)
    yield from _assigns_and_tags(op, ts)
    for key, value in op.append.items():
        decoded = _value(value)
        if decoded is None or decoded[0] not in ("float", "int", "string", "histogram", "file"):
            yield f"series {key!r}: a value of an unsupported type; not imported"
            continue
        kind, v = decoded
        if kind == "int":
            kind, v = "float", float(v)
        yield Append(key, kind, v, step, ts, preview)


def _assigns_and_tags(op: Any, ts: int) -> Iterator[Assign | TagChange | str]:
    """An update's assigned values and tag changes (a ``str``: what cannot be imported)."""
    if op.assign:
        for key, value in op.assign.items():
            decoded = _value(value)
            if decoded is None:
                yield f"assign {key!r}: a value of an unknown type; not imported"
                continue
            yield Assign(key, decoded[0], decoded[1], ts)
    if op.modify_sets:
        for key, modify in op.modify_sets.items():
            for tag, change in modify.string.values.items():
                if change in (S.SET_ADD, S.SET_REMOVE):
                    yield TagChange(key, tag, change == S.SET_ADD, ts)


def _decode_run(op: Any) -> RunInfo:
    fork = op.fork_point if op.HasField("fork_point") else None
    return RunInfo(
        experiment=op.experiment_id if op.HasField("experiment_id") and op.experiment_id else None,
        creation_ms=ms_of(op.creation_time) if op.HasField("creation_time") else None,
        fork_parent=(fork.parent_run_id or None) if fork is not None else None,
        fork_project=(fork.parent_project or None) if fork is not None
        and fork.HasField("parent_project") else None,
        fork_step=step_of(fork.step) if fork is not None and fork.HasField("step") else None,
    )


def _chunks(path: Path, chunk: int) -> Iterator[list[tuple[int, int, int, bytes]]]:
    """``(seq, queued ms, type, blob)`` of the file's operations in sequence order, ``chunk``
    at a time (a list each: a hot loop walks it with no generator step a row)."""
    after = -1
    with closing(_connect(path)) as conn:
        while True:
            rows = conn.execute(
                f"SELECT {S.COL_SEQ}, {S.COL_OP_TS}, {S.COL_OP_TYPE}, {S.COL_OPERATION} "
                f"FROM {S.T_OPERATIONS} WHERE {S.COL_SEQ} > ? ORDER BY {S.COL_SEQ} LIMIT ?",
                (after, chunk)).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield rows


_KIND, _BLOB = itemgetter(2), itemgetter(3)
_MAX_WAIT = 64  # chunks not tried as columns after failed tries (see _read)


def _read(path: Path, chunk: int, values: bool
          ) -> Iterator[tuple[int, int, int, bytes] | AppendRows]:
    """:func:`_chunks` a row at a time, except that a chunk of update operations that
    :func:`read_chunk` reads as columns comes as one :class:`AppendRows`. After a chunk it
    could not read, the next 1, 2, 4, ... (at most 64) chunks are not tried: a run whose
    every step holds a string or an odd value pays for a few tries, not one a chunk."""
    wait = skip = 0
    for rows in _chunks(path, chunk):
        if skip:
            skip -= 1
        elif set(map(_KIND, rows)) == {S.OP_UPDATE_SNAPSHOT}:
            found = read_chunk(list(map(_BLOB, rows)), values)
            if found is not None:
                wait = 0
                yield found
                continue
            wait = skip = min(2 * wait or 1, _MAX_WAIT)
        yield from rows


def _rows(path: Path, chunk: int) -> Iterator[tuple[int, int, int, bytes]]:
    """:func:`_chunks`, a row at a time."""
    for rows in _chunks(path, chunk):
        yield from rows


def read_operations(path: Path, chunk: int = 1000) -> Iterator[Decoded | str]:
    """The file's operations in sequence order, decoded; a ``str`` is a warning (an
    operation bridge cannot decode, named by its sequence id)."""
    update = _proto().UpdateRunSnapshot.FromString
    return _operations(path, chunk, lambda blob, queued: _decode_update(update(blob), queued))


def _operations(path: Path, chunk: int, update: Callable[[bytes, int], Iterator[Any]]
                ) -> Iterator[Any]:
    """Each operation of the file decoded, its snapshot updates (blob, queued ms) by
    ``update``."""
    pb = _proto()
    for seq, queued, kind, blob in _rows(path, chunk):
        try:
            if kind == S.OP_CREATE_RUN:
                yield _decode_run(pb.Run.FromString(blob))
            elif kind == S.OP_UPDATE_SNAPSHOT:
                yield from update(blob, int(queued))
            else:
                yield f"operation {seq}: unknown operation type {kind}; not imported"
        except Exception as exc:  # a damaged blob: protobuf's DecodeError and kin
            yield _undecodable(seq, exc)


def _undecodable(seq: int, exc: Exception) -> str:
    return f"operation {seq}: cannot be decoded ({exc}); not imported"


# Value oneofs an append may hold (``_value``'s float, int, string, histogram, file).
_APPEND_VALUES = frozenset({"float64", "int64", "string", "histogram", "file_ref"})


# UpdateRunSnapshot as a run's description reads it (see _outline_class).
_OUTLINE_FILE = "bridge/neptune_scale_outline.proto"
_OUTLINE = "bridge.neptune_scale.UpdateRunSnapshotOutline"
_OUTLINE_DECODED = ("step", "timestamp", "preview")
_OUTLINE_ENTRIES = ("assign", "modify_sets", "append")


@lru_cache(maxsize=1)
def _outline_class() -> Any:
    """neptune_api's ``UpdateRunSnapshot`` with its maps left as undecoded entries: the
    same field numbers, ``step``, ``timestamp`` and ``preview`` decoded, ``assign``,
    ``modify_sets`` and ``append`` as ``repeated bytes`` (a map's wire form is a repeated
    message: one undecoded entry each). Parsing it makes no ``Value`` a series point, which
    was most of the description's cost; its count of ``append`` is the operation's series.
    Derived from the client's own descriptor at run time, so it follows its field numbers."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.Default()
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(_OUTLINE))
    except KeyError:
        pass
    full = _proto().UpdateRunSnapshot.DESCRIPTOR
    field_proto = descriptor_pb2.FieldDescriptorProto
    outline = descriptor_pb2.DescriptorProto(name=_OUTLINE.rsplit(".", 1)[1])
    deps = {full.file.name}
    for f in full.fields:
        if f.name in _OUTLINE_DECODED:
            outline.field.add(name=f.name, number=f.number, type=f.type,
                              label=field_proto.LABEL_OPTIONAL,
                              type_name="." + f.message_type.full_name)
            deps.add(f.message_type.file.name)
        elif f.name in _OUTLINE_ENTRIES:
            outline.field.add(name=f.name, number=f.number, type=field_proto.TYPE_BYTES,
                              label=field_proto.LABEL_REPEATED)
    missing = set(_OUTLINE_DECODED + _OUTLINE_ENTRIES) - {f.name for f in outline.field}
    if missing:
        raise ImportSourceError(f"neptune_api's UpdateRunSnapshot has no {sorted(missing)}: "
                                "a client this importer does not know")
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=_OUTLINE_FILE, package=_OUTLINE.rsplit(".", 1)[0], syntax="proto3",
        dependency=sorted(deps))
    file_proto.message_type.add().CopyFrom(outline)
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(_OUTLINE))


def _describe_update(blob: bytes, queued_ms: int, facts: AppendFacts,
                     outline: Callable[[bytes], Any]) -> list[Decoded]:
    """:func:`_decode_update` with the appends counted into ``facts``, not decoded (an
    outline of the operation: see :func:`_outline_class`): what a run's description takes
    from them is their count, step, time and preview flag. Assigns and tag changes, seldom
    there, are decoded in full and returned. A list, not a generator: one call an operation."""
    try:
        op = outline(blob)
    except Exception:  # noqa: BLE001 - said as the client's own message fails to parse
        _proto().UpdateRunSnapshot.FromString(blob)
        raise
    ts = ms_of(op.timestamp) if op.HasField("timestamp") else queued_ms
    found = list(_assigns_and_tags(_proto().UpdateRunSnapshot.FromString(blob), ts)) \
        if op.assign or op.modify_sets else []
    count = len(op.append)
    if count:
        if op.HasField("step") and op.step.micro:  # a whole step needs no place
            facts.places = max(facts.places, N.decimal_places(step_of(op.step)))
        if op.HasField("preview") and op.preview.is_preview:
            facts.previews += count
        facts.add_time(ts)
    return found


def _step(step: Any) -> Decimal | int:
    """:func:`step_of`, a whole step as an ``int`` (the same number, no Decimal arithmetic:
    ``float()`` of either is the same float)."""
    return step_of(step) if step.micro else int(step.whole)


def describe_operations(path: Path, facts: AppendFacts,
                        chunk: int = 1000) -> Iterator[Decoded | str]:
    """:func:`read_operations` as a run's description needs it: the appends are added to
    ``facts`` instead of yielded, an operation at a time or a chunk read as columns at a
    time (:func:`_read`), and a series of a type bridge
    cannot import is not warned about here: the values are read, and warned about, by
    :func:`read_appends`."""
    pb, outline = _proto(), _outline_class().FromString
    for row in _read(path, chunk, values=False):
        if row.__class__ is AppendRows:
            facts.add(row)
            continue
        seq, queued, kind, blob = row
        try:
            if kind == S.OP_UPDATE_SNAPSHOT:
                found = _describe_update(blob, queued, facts, outline)
                if found:
                    yield from found
            elif kind == S.OP_CREATE_RUN:
                yield _decode_run(pb.Run.FromString(blob))
            else:
                yield f"operation {seq}: unknown operation type {kind}; not imported"
        except Exception as exc:  # a damaged blob: protobuf's DecodeError and kin
            yield _undecodable(seq, exc)


# An operation's appends: (step, ts_ms, keys, values) where every value is a float64 (the
# bulk of a run: keys a tuple, values their floats), else (step, ts_ms, None, items) with
# items [(key, kind, value), ...] as in Append.
AppendOp = tuple[Decimal | int | None, int, tuple[str, ...] | None, list[Any]]
_FLOAT64 = attrgetter("float64")


def read_appends(path: Path, chunk: int = 1000,
                 problem: Callable[[str], None] | None = None
                 ) -> Iterator[AppendOp | AppendRows]:
    """The appends :func:`read_operations` yields that are not previews, an operation at a
    time (:data:`AppendOp`), values as in :class:`Append` (an ``int`` as a ``float``), a
    whole step as an ``int``; a chunk of operations that each append the same float series
    comes as one :class:`AppendRows`, read as columns (:mod:`.scale_columns`). An operation
    of float64 values only is read without a Python call a value: the values' ``float64``
    all read at once, which a value of another kind reads as 0.0, so an operation with a 0.0
    among them is read a value at a time. What cannot be imported (an operation that cannot
    be decoded, a series value of a type bridge does not import) is skipped and said to
    ``problem``, as :func:`read_operations` words it."""
    parse = _proto().UpdateRunSnapshot.FromString
    for row in _read(path, chunk, values=True):
        if row.__class__ is AppendRows:
            yield row
            continue
        seq, queued, kind, blob = row
        if kind != S.OP_UPDATE_SNAPSHOT:
            continue
        try:
            op = parse(blob)
        except Exception as exc:  # noqa: BLE001 - a damaged blob: protobuf's DecodeError
            if problem is not None:
                problem(_undecodable(seq, exc))
            continue
        appends = op.append
        if not appends or (op.HasField("preview") and op.preview.is_preview):
            continue
        ts = ms_of(op.timestamp) if op.HasField("timestamp") else int(queued)
        step = _step(op.step) if op.HasField("step") else None
        values = list(map(_FLOAT64, appends.values()))
        if 0.0 not in values:  # each a float64: any other kind reads 0.0
            yield step, ts, tuple(appends), values
            continue
        items: list[tuple[str, str, Any]] = []
        add = items.append
        for key in appends:
            value = appends[key]
            which = value.WhichOneof("value")
            if which == "float64":
                add((key, "float", float(value.float64)))
            elif which == "int64":
                add((key, "float", float(int(value.int64))))
            elif which in _APPEND_VALUES:
                decoded = _value(value)
                if decoded is not None:
                    add((key, decoded[0], decoded[1]))
            elif problem is not None:
                problem(f"series {key!r}: a value of an unsupported type; not imported")
        yield step, ts, None, items


def one_at_a_time(items: Iterable[AppendOp | AppendRows]) -> Iterator[AppendOp]:
    """:func:`read_appends`' items with each :class:`AppendRows` as its operations, for a
    reader that looks at each point."""
    for item in items:
        if item.__class__ is not AppendRows:
            yield item  # type: ignore[misc]
            continue
        rows: AppendRows = item  # type: ignore[assignment]
        k, values = len(rows.names), rows.values
        for i, (at, ts_ms) in enumerate(zip(rows.steps(), rows.ts_ms)):
            yield at, ts_ms, rows.names, values[i * k:(i + 1) * k]


def upload_requests(path: Path) -> dict[str, Upload]:
    """The files the client had still to upload, by the destination a ``FileRef`` names."""
    with closing(_connect(path)) as conn:
        if S.T_UPLOADS not in _tables(conn):
            return {}
        rows = conn.execute(
            f"SELECT {S.COL_UP_SOURCE}, {S.COL_UP_DESTINATION}, {S.COL_UP_MIME}, "
            f"{S.COL_UP_SIZE}, {S.COL_UP_TEMPORARY} FROM {S.T_UPLOADS}").fetchall()
    return {dest: Upload(src, mime, int(size), bool(tmp)) for src, dest, mime, size, tmp in rows}


def operation_errors(path: Path) -> list[OperationError]:
    """The errors the client recorded for operations (an older file may have no such table)."""
    with closing(_connect(path)) as conn:
        if S.T_ERRORS not in _tables(conn):
            return []
        rows = conn.execute(
            f"SELECT {S.COL_ERROR_TS}, {S.COL_ERROR_TYPE}, {S.COL_ERROR_DETAILS}, "
            f"{S.COL_ERROR_SEQ} FROM {S.T_ERRORS} ORDER BY {S.COL_ERROR_ID}").fetchall()
    return [OperationError(int(ts), str(t), str(d), s) for ts, t, d, s in rows]
