"""A chunk of neptune-scale operations read as columns, by protobuf's own parser, in C.

Reading an operation through the client's message objects costs a Python object and an
attribute look-up a field, which is most of an import's time (and all of its ceiling's). A
chunk of update operations that each append the same float series is read instead from its
bytes laid end to end: protobuf parses concatenated messages as one message merged from
them, so a message that declares an operation's fields ``repeated`` collects each field of
every operation into one list, in order; the same is done a level down for the steps, the
times, the appended entries and their values.

That is exact only for operations written as a protobuf serializer writes them, so a chunk
is first parsed as its operations (the client's ``UpdateRunSnapshot`` with its maps as
repeated entries, so that their order is kept), its unknown fields dropped, and serialized
back: the bytes must be the chunk's own. No field is then written twice, as an explicit 0,
packed where it is single, or unknown, and the lists below hold one value an operation,
which is checked too. A chunk of any other shape, or that fails a check or a parse, gives
None and is read an operation at a time (:mod:`.scale_offline`), with the same result.

The classes are derived at run time from the client's descriptors, so they follow its field
numbers, types and order.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from itertools import chain, compress, islice, repeat
from operator import add, mul, not_, or_, truediv
from typing import Any

from bridge.adapters.neptune import names as N
from bridge.adapters.neptune import scale_names as S

__all__ = ["AppendRows", "read_chunk"]

_PACKAGE = "bridge.neptune_scale.columns"
_FILE = "bridge/neptune_scale_columns.proto"


@dataclass(slots=True)
class AppendRows:
    """Operations of a chunk that each append the float series ``names``, none a preview:
    one row each, in sequence order. A step is ``wholes[i] + micros[i] / 10**6`` (the
    client's ``Step``); ``values`` are the rows' values one row after another (empty when
    the chunk was read for its description only)."""

    wholes: list[int]
    micros: list[int]
    ts_ms: list[int]
    names: tuple[str, ...]
    values: list[float]

    def places(self) -> int:
        """The decimal places the chunk's steps need (:func:`names.decimal_places`)."""
        return max((N.decimal_places(Decimal(m) / S.MICRO) for m in set(self.micros) if m),
                   default=0)

    def steps(self) -> list[Decimal | int]:
        """Each row's step as :func:`scale_offline.step_of` reads it, a whole one an int."""
        if not any(self.micros):
            return self.wholes
        return [Decimal(w) + Decimal(m) / S.MICRO if m else w
                for w, m in zip(self.wholes, self.micros)]


@dataclass(frozen=True)
class _Classes:
    batch: Any  # the operations, each a length-delimited Operation: see _classes
    fields: Any  # UpdateRunSnapshot's fields, each repeated bytes
    entries: Any  # an append map entry's key (repeated string) and value (repeated bytes)
    floats: Any  # Value's float64, repeated
    step: Any  # Step's whole and micro, repeated
    time: Any  # Timestamp's seconds and nanos, repeated
    step_zeros: tuple[bytes, bytes]  # each field's 0 (its tag and a 0): see _pairs
    time_zeros: tuple[bytes, bytes]
    float_tag: bytes  # Value.float64's tag: a float value is this and 8 bytes


_FIELDS = ("step", "timestamp", "assign", "modify_sets", "append", "preview")
_STEP, _TIME = ("whole", "micro"), ("seconds", "nanos")


@lru_cache(maxsize=1)
def _classes() -> _Classes:
    """The messages a chunk is read with. ``Operation`` is the client's
    ``UpdateRunSnapshot`` field for field, in its order, but for its maps: an ``Entry``
    (``key``, its value's bytes) repeated, so serialized back it keeps the entries' order and
    the chunk's bytes can be compared as they are. A value's bytes are checked apart
    (:func:`_float_values`): parsing a million ``Value`` messages to check them cost more."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    from bridge.adapters.base import require

    pb = require(S.PROTO_MODULE, S.EXTRA)
    update = pb.UpdateRunSnapshot.DESCRIPTOR
    entry = update.fields_by_name["append"].message_type
    value = entry.fields_by_name["value"].message_type
    step = update.fields_by_name["step"].message_type
    time = update.fields_by_name["timestamp"].message_type
    pool = descriptor_pool.Default()
    try:
        pool.FindMessageTypeByName(f"{_PACKAGE}.Batch")
    except KeyError:
        proto = descriptor_pb2.FieldDescriptorProto
        repeated = proto.LABEL_REPEATED
        file = descriptor_pb2.FileDescriptorProto(
            name=_FILE, package=_PACKAGE, syntax="proto3",
            dependency=sorted({update.file.name, value.file.name, step.file.name,
                               time.file.name}))
        pair = file.message_type.add(name="Entry")  # its value's bytes: see _float_values
        for f in entry.fields:
            pair.field.add(name=f.name, number=f.number, label=f.label,
                           type=proto.TYPE_STRING if f.name == "key" else proto.TYPE_BYTES)
        operation = file.message_type.add(name="Operation")
        written = descriptor_pb2.DescriptorProto()
        update.CopyToProto(written)  # its fields as declared, in order, presence kept
        operation.oneof_decl.extend(written.oneof_decl)
        for f, declared in zip(update.fields, written.field):
            added = operation.field.add()
            added.CopyFrom(declared)
            kind = f.message_type
            if kind is not None and kind.GetOptions().map_entry:
                if kind.fields_by_name["value"].message_type is value:
                    added.type_name = f".{_PACKAGE}.Entry"
                else:  # a map of other values (tag sets): its entries' bytes
                    added.ClearField("type_name")
                    added.type = proto.TYPE_BYTES
        batch = file.message_type.add(name="Batch")
        batch.field.add(name="ops", number=1, type=proto.TYPE_MESSAGE, label=repeated,
                        type_name=f".{_PACKAGE}.Operation")
        fields = file.message_type.add(name="Fields")
        for name in _FIELDS:
            fields.field.add(name=name, number=update.fields_by_name[name].number,
                             type=proto.TYPE_BYTES, label=repeated)
        entries = file.message_type.add(name="Entries")
        for f in entry.fields:
            entries.field.add(name=f.name, number=f.number, label=repeated,
                              type=proto.TYPE_STRING if f.name == "key" else proto.TYPE_BYTES)
        floats = file.message_type.add(name="Floats")
        f64 = value.fields_by_name["float64"]
        floats.field.add(name="float64", number=f64.number, type=f64.type, label=repeated)
        for name, source, wanted in (("Step", step, _STEP), ("Time", time, _TIME)):
            message = file.message_type.add(name=name)
            for field_name in wanted:
                f = source.fields_by_name[field_name]
                message.field.add(name=f.name, number=f.number, type=f.type, label=repeated)
        pool.Add(file)

    def get(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))

    def zeros(source: Any, names: tuple[str, str]) -> tuple[bytes, bytes]:
        first, second = (_varint(source.fields_by_name[n].number << 3) + b"\x00"
                         for n in names)  # a field's tag (varint) and a 0
        return first, second

    f64 = value.fields_by_name["float64"]
    return _Classes(get("Batch"), get("Fields"), get("Entries"), get("Floats"), get("Step"),
                    get("Time"), zeros(step, _STEP), zeros(time, _TIME),
                    _varint(f64.number << 3 | 1))  # wire type 1: 64 bits


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _header(size: int) -> bytes:
    """A ``Batch.ops`` field's tag (field 1, length-delimited) and an operation's size."""
    return b"\x0a" + _varint(size)


def _framed(blobs: list[bytes]) -> bytes:
    """``blobs`` as one ``Batch``: each behind its field's header."""
    sizes = list(map(len, blobs))
    headers = {size: _header(size) for size in set(sizes)}
    return b"".join(chain.from_iterable(zip(map(headers.__getitem__, sizes), blobs)))


def _pairs(cls: Any, zeros: tuple[bytes, bytes], bodies: list[Any], names: tuple[str, str]
           ) -> tuple[list[int], list[int]]:
    """The two fields of each body (a Step or a Timestamp), aligned. proto3 leaves out a
    field of 0, so a field with fewer values than bodies is read again with a 0 of it in
    front of each body (:func:`_aligned`)."""
    n = len(bodies)
    message = cls.FromString(b"".join(bodies))
    out = []
    for name, zero in zip(names, zeros):
        values = getattr(message, name)
        if not values:
            out.append([0] * n)
        elif len(values) == n:
            out.append(list(values))
        else:
            out.append(_aligned(getattr(cls.FromString(zero + zero.join(bodies)), name)))
            if len(out[-1]) != n:
                raise ValueError("a field's values do not align with its bodies")
    return out[0], out[1]


def _aligned(values: Any) -> list[int]:
    """A field's values read with a 0 in front of each body: a 0 followed by a value is that
    value (a body's own value is never 0: proto3 leaves it out, and the chunk's bytes are
    checked to be as a serializer writes them), a 0 followed by a 0 or the end is a body's
    0. No Python step a value."""
    values = list(values)
    present = list(map(bool, values))
    last_of_body = chain(map(not_, islice(present, 1, None)), (True,))
    return list(compress(values, map(or_, present, last_of_body)))


def _float_values(c: _Classes, bodies: Any) -> list[float]:
    """The values, when each is a ``Value`` of a float64 alone, written as a serializer
    writes it (its tag and 8 bytes: nothing else in the body); else fewer values than
    bodies."""
    tag = c.float_tag
    if len(tag) != 1 or set(map(len, bodies)) != {9}:
        return []
    joined = b"".join(bodies)
    if joined[::9] != tag * len(bodies):
        return []
    return list(c.floats.FromString(joined).float64)


def read_chunk(blobs: list[bytes], values: bool = True) -> AppendRows | None:
    """The update operations ``blobs`` as :class:`AppendRows`, or None when they are not of
    that shape (each one step, one time, the same float series, no assign, tag change or
    preview), are not written as a serializer writes them (see the module's docstring), or
    do not parse. ``values=False`` reads what a description needs, not the values."""
    try:
        return _read_chunk(blobs, values)
    except Exception:  # noqa: BLE001 - a damaged operation: read one at a time, which says so
        return None


def _read_chunk(blobs: list[bytes], values: bool) -> AppendRows | None:
    n = len(blobs)
    if not n:
        return None
    c = _classes()
    framed = _framed(blobs)
    ops = c.batch.FromString(framed)
    ops.DiscardUnknownFields()
    if ops.SerializeToString() != framed:
        return None
    fields = c.fields.FromString(b"".join(blobs))
    if (len(fields.step) != n or len(fields.timestamp) != n or fields.assign
            or fields.modify_sets or fields.preview):
        return None
    appended = fields.append
    k, rest = divmod(len(appended), n)
    if not k or rest:
        return None
    entries = c.entries.FromString(b"".join(appended))
    keys = entries.key
    if len(keys) != n * k or len(entries.value) != n * k:
        return None
    names = tuple(keys[:k])
    if len(set(names)) != k or list(keys) != list(names) * n:
        return None  # each operation holds the same k distinct series
    floats: list[float] = []
    if values:
        floats = _float_values(c, entries.value)
        if len(floats) != n * k:
            return None  # a value of another kind
    wholes, micros = _pairs(c.step, c.step_zeros, list(fields.step), _STEP)
    seconds, nanos = _pairs(c.time, c.time_zeros, list(fields.timestamp), _TIME)
    # scale_offline.ms_of of each: round(seconds * 1000 + nanos / 1_000_000), in C
    ts_ms = list(map(round, map(add, map(mul, seconds, repeat(1000)),
                                map(truediv, nanos, repeat(1_000_000)))))
    return AppendRows(wholes, micros, ts_ms, names, floats)
