"""Read W&B's ``.wandb`` transaction log without any reader from wandb.

wandb (0.31) writes every run, online or offline, to ``run-<id>.wandb`` through
wandb-core (Go) and ships no Python reader for it, so bridge reads the format itself:
the importer uses it to bring W&B runs into the spool, and the W&B adapter uses it to
learn what an earlier (possibly killed) sync session already wrote.

Format (wandb-core ``core/pkg/leveldb``, ``core/internal/transactionlog``):

* a 7-byte file header: ``b":W&B"``, magic ``0xBEE1`` (uint16 LE), version byte ``0``;
* LevelDB log framing in 32 KiB blocks aligned to file offset 0 (the header eats the
  first 7 bytes of block 0); a chunk is ``crc (uint32 LE) | length (uint16 LE) |
  type (uint8: 1 full, 2 first, 3 middle, 4 last) | data``; fewer than 7 bytes left
  in a block are zero padding;
* the checksum is **plain CRC-32 (IEEE, zlib's crc32) of the type byte followed by
  the data**, not LevelDB's masked CRC-32C (wandb-core opens its writer with
  ``CRCAlgoIEEE``);
* a record's bytes are a ``wandb.proto.wandb_internal_pb2.Record``.

Damage policy: a file that simply ends early (a writer killed mid-record, a copy in
progress) yields every complete record and sets :attr:`WandbLog.truncated`. A checksum
mismatch, an impossible chunk or an undecodable record *before* the end raises
:class:`CorruptLogError` with the file offset, because silently dropping history is
worse than stopping; pass ``skip_corrupt=True`` to do what LevelDB does instead (drop
the rest of the damaged 32 KiB block, resume at the next record that starts in a later
block) and read the count in :attr:`WandbLog.skipped_blocks`.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from bridge.adapters.wandb.names import INTERNAL_KEY, log_file_name, session_key
from bridge.errors import VendorFormatError

__all__ = [
    "BLOCK_SIZE",
    "CorruptLogError",
    "RunLog",
    "WandbLog",
    "WandbLogError",
    "apply_fact",
    "find_run_logs",
    "iter_history",
    "iter_records",
    "read_run",
    "read_run_info",
    "session_dirs",
    "session_key",
]

BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = 7
FILE_HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_CHUNK = struct.Struct("<IHB")


class WandbLogError(VendorFormatError):
    """A ``.wandb`` file cannot be read (bad header, not a file)."""


class CorruptLogError(WandbLogError):
    """A damaged record before the end of the file; ``offset`` is where it starts."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt record at byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WandbLog:
    """One ``.wandb`` file: iterate raw payloads or decoded records, then check health.

    ``truncated`` and ``skipped_blocks`` are final once an iteration has finished.
    """

    def __init__(self, path: str | Path, *, skip_corrupt: bool = False) -> None:
        self.path = Path(path)
        self.skip_corrupt = skip_corrupt
        self.truncated = False  # the file ended inside a record
        self.skipped_blocks = 0  # damaged blocks dropped (skip_corrupt=True only)
        self.end_offset = 0  # where the last complete record ends

    def payloads(self) -> Iterator[bytes]:
        """Yield each record's bytes, in file order, every chunk's CRC checked."""
        self.truncated, self.skipped_blocks, self.end_offset = False, 0, 0
        with open(self.path, "rb") as fp:
            head = fp.read(BLOCK_SIZE)
            if len(head) < len(FILE_HEADER) or head[: len(FILE_HEADER)] != FILE_HEADER:
                if len(head) < len(FILE_HEADER) and FILE_HEADER.startswith(head):
                    self.truncated = bool(head)  # a writer killed before its header
                    return
                raise WandbLogError(f"{self.path}: not a W&B transaction log (bad header)")
            self.end_offset = len(FILE_HEADER)
            yield from self._scan(fp, head)

    def records(self) -> Iterator[Any]:
        """Yield ``wandb_internal_pb2.Record`` messages (imports wandb's protobuf lazily)."""
        from google.protobuf.message import DecodeError
        from wandb.proto import wandb_internal_pb2 as pb

        for offset, data in self._payloads_with_offsets():
            record = pb.Record()
            try:
                record.ParseFromString(data)
            except DecodeError as exc:
                self._damaged(offset, f"undecodable record ({exc})")
                continue
            yield record

    def __iter__(self) -> Iterator[Any]:
        return self.records()

    # -- framing -----------------------------------------------------------------

    def _payloads_with_offsets(self) -> Iterator[tuple[int, bytes]]:
        self._last_offset = 0
        for data in self.payloads():
            yield self._last_offset, data

    def _damaged(self, offset: int, reason: str) -> None:
        if not self.skip_corrupt:
            raise CorruptLogError(self.path, offset, reason)
        self.skipped_blocks += 1

    def _scan(self, fp: IO[bytes], block: bytes) -> Iterator[bytes]:
        block_start = 0  # file offset of block[0]
        pos = len(FILE_HEADER)
        parts: list[bytes] = []  # chunks of a record in progress
        record_at = 0
        recovering = False  # after damage: skip until a FULL or FIRST chunk
        while True:
            if pos + CHUNK_HEADER > len(block):
                if len(block) < BLOCK_SIZE:  # the final, short block
                    if parts or any(block[pos:]):
                        self.truncated = True
                    return
                block_start += len(block)
                block, pos = fp.read(BLOCK_SIZE), 0
                if not block:
                    self.truncated = bool(parts)
                    return
                continue
            crc, length, kind = _CHUNK.unpack_from(block, pos)
            at = block_start + pos
            end = pos + CHUNK_HEADER + length
            if crc == 0 and length == 0 and kind == 0:
                # Zeroed space (a preallocated or sparse tail); nothing starts here.
                if not any(block[pos:]) and len(block) < BLOCK_SIZE:
                    self.truncated = bool(parts)
                    return
                reason = "zeroed chunk inside a record" if parts else None
                parts, pos = [], len(block)
                if reason:
                    self._damaged(record_at, reason)
                    recovering = True
                continue
            problem = None
            if end > len(block):
                if len(block) < BLOCK_SIZE and block_start + len(block) == _size(fp):
                    self.truncated = True  # the file ends inside this chunk
                    return
                problem = f"chunk length {length} runs past its block"
            elif zlib.crc32(block[pos + 6 : end]) != crc:
                problem = "checksum mismatch"
            elif kind not in (FULL, FIRST, MIDDLE, LAST):
                problem = f"unknown chunk type {kind}"
            elif recovering and kind in (MIDDLE, LAST):
                pos = end  # the tail of a record whose head was lost
                continue
            elif kind in (FULL, FIRST) and parts:
                problem = "record started before the previous one ended"
            elif kind in (MIDDLE, LAST) and not parts:
                problem = "continuation chunk without a first chunk"
            if problem:
                self._damaged(at, problem)
                parts, pos, recovering = [], len(block), True
                continue
            recovering = False
            data = block[pos + CHUNK_HEADER : end]
            pos = end
            if kind in (FULL, FIRST):
                record_at = at
            if kind == FULL:
                self._last_offset = at
                self.end_offset = block_start + end
                yield data
            elif kind == FIRST:
                parts = [data]
            else:
                parts.append(data)
                if kind == LAST:
                    self._last_offset = record_at
                    self.end_offset = block_start + end
                    yield b"".join(parts)
                    parts = []


def _size(fp: IO[bytes]) -> int:
    return os.fstat(fp.fileno()).st_size


def iter_records(path: str | Path, *, skip_corrupt: bool = False) -> Iterator[Any]:
    """Yield the ``Record`` messages of one ``.wandb`` file (see :class:`WandbLog`)."""
    return WandbLog(path, skip_corrupt=skip_corrupt).records()


# -- a plain view of a run ---------------------------------------------------------


@dataclass
class RunLog:
    """What one ``.wandb`` file says about a run, as plain Python values."""

    path: Path
    run_id: str | None = None
    entity: str | None = None
    project: str | None = None
    name: str | None = None
    notes: str | None = None
    group: str | None = None
    job_type: str | None = None
    tags: list[str] = field(default_factory=list)
    start_time: float | None = None  # seconds since the epoch
    resumed: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # define_metric calls
    files: list[str] = field(default_factory=list)  # paths saved under files/
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None  # None: the run never finished (crash or still open)
    runtime: int | None = None  # seconds, from the exit record
    truncated: bool = False
    skipped_blocks: int = 0


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # W&B writes NaN/Infinity as JSON extensions; json handles those


def _apply(target: dict[str, Any], key: str, nested: Any, value: Any) -> None:
    path = list(nested) if nested else [key]
    node = target
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _remove(target: dict[str, Any], key: str, nested: Any) -> None:
    path = list(nested) if nested else [key]
    node = target
    for part in path[:-1]:
        node = node.get(part, {})
    node.pop(path[-1], None)


def _history_value(item: Any) -> Any:
    which = item.WhichOneof("value") if _has_value_oneof(item) else None
    if which in ("boolean", "integer", "number", "text"):
        return getattr(item, which)
    if which == "none":
        return None
    if which == "json":
        return _json(item.json)
    return _json(item.value_json)


def _has_value_oneof(item: Any) -> bool:
    return any(o.name == "value" for o in item.DESCRIPTOR.oneofs)


def _config_value(value: Any) -> Any:
    # wandb stores each top-level config key as {"value": v, "desc": ...}.
    if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
        return value["value"]
    return value


def _apply_run(out: RunLog, run: Any) -> None:
    out.run_id = run.run_id or out.run_id
    out.entity = run.entity or out.entity
    out.project = run.project or out.project
    out.name = run.display_name or out.name
    out.notes = run.notes or out.notes
    out.group = run.run_group or out.group
    out.job_type = run.job_type or out.job_type
    if run.tags:
        out.tags = list(run.tags)
    if run.HasField("start_time"):
        out.start_time = run.start_time.seconds + run.start_time.nanos / 1e9
    out.resumed = out.resumed or bool(run.resumed)
    for item in run.config.update:
        _apply(out.config, item.key, item.nested_key, _config_value(_json(item.value_json)))
    for item in run.summary.update:
        _apply(out.summary, item.key, item.nested_key, _json(item.value_json))


def _artifact(rec: Any) -> dict[str, Any]:
    return {
        "name": rec.name,
        "type": rec.type,
        "digest": rec.digest,
        "aliases": list(rec.aliases),
        "metadata": _json(rec.metadata) if rec.metadata else {},
        "client_id": rec.client_id,  # what a table row's ``artifact_path`` names
        "files": [
            {
                "path": e.path,
                "digest": e.digest,
                "size": e.size,
                "local_path": e.local_path,
            }
            for e in rec.manifest.contents
        ],
    }


def read_run(path: str | Path, *, skip_corrupt: bool = False) -> RunLog:
    """Read a run dir (``offline-run-*/`` or ``run-*/``) or a ``.wandb`` file into a RunLog."""
    out = _read(path, skip_corrupt, keep_history=True)
    return out


def read_run_info(path: str | Path, *, skip_corrupt: bool = False) -> RunLog:
    """Like :func:`read_run` without the history rows (``history`` stays empty), so a
    run of millions of points is described in constant memory; see :func:`iter_history`."""
    return _read(path, skip_corrupt, keep_history=False)


def iter_history(path: str | Path, *, skip_corrupt: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the history rows of a run dir or ``.wandb`` file one by one, in file order."""
    log = WandbLog(_log_file(Path(path)), skip_corrupt=skip_corrupt)
    for rec in log.records():
        if rec.WhichOneof("record_type") == "history":
            yield _history_row(rec)


def _history_row(rec: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for item in rec.history.item:
        _apply(row, item.key, item.nested_key, _history_value(item))
    return row


def _read(path: str | Path, skip_corrupt: bool, keep_history: bool) -> RunLog:
    log_path = _log_file(Path(path))
    log = WandbLog(log_path, skip_corrupt=skip_corrupt)
    out = RunLog(path=log_path)
    for rec in log.records():
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            _apply_run(out, rec.run)
        elif kind == "history":
            if keep_history:
                out.history.append(_history_row(rec))
        elif kind == "summary":
            for item in rec.summary.update:
                _apply(out.summary, item.key, item.nested_key, _json(item.value_json))
            for item in rec.summary.remove:
                _remove(out.summary, item.key, item.nested_key)
        else:
            apply_fact(out, kind, rec)
    out.config.pop(INTERNAL_KEY, None)  # wandb's own bookkeeping, not user config
    out.truncated, out.skipped_blocks = log.truncated, log.skipped_blocks
    return out


def apply_fact(out: RunLog, kind: str | None, rec: Any) -> None:
    """A run-level record of kind ``kind`` (config, metric, files, artifact, exit) into
    ``out``; other kinds are not facts of the run and are left alone."""
    if kind == "config":
        for item in rec.config.update:
            value = _config_value(_json(item.value_json))
            _apply(out.config, item.key, item.nested_key, value)
        for item in rec.config.remove:
            _remove(out.config, item.key, item.nested_key)
    elif kind == "metric":
        m = rec.metric
        out.metrics.append(
            {"name": m.name, "glob_name": m.glob_name, "step_metric": m.step_metric}
        )
    elif kind == "files":
        out.files.extend(f.path for f in rec.files.files if f.path not in out.files)
    elif kind == "artifact":
        out.artifacts.append(_artifact(rec.artifact))
    elif kind == "exit":
        out.exit_code = rec.exit.exit_code
        out.runtime = rec.exit.runtime


def _log_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("*.wandb"))
    if len(found) != 1:
        raise WandbLogError(f"{path}: expected one .wandb file, found {len(found)}")
    return found[0]


def find_run_logs(wandb_dir: str | Path, run_id: str) -> list[Path]:
    """Every ``.wandb`` file of ``run_id`` under a ``wandb/`` dir, oldest session first.

    W&B writes each session of a run (offline, or a resumed online run) to its own
    ``[offline-]run-<YYYYmmdd_HHMMSS>-<id>[-<n>]/run-<id>.wandb``; ``-<n>`` separates
    sessions started within the same second. Other names (``discarded-*``) are ignored.
    """
    logs = (d / log_file_name(run_id) for d in session_dirs(wandb_dir, run_id))
    return [log for log in logs if log.is_file()]


def session_dirs(wandb_dir: str | Path, run_id: str) -> list[Path]:
    """The session dirs of ``run_id`` (complete or not), oldest first."""
    root = Path(wandb_dir)
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        key = session_key(d.name)
        if key and key[1] == run_id and d.is_dir():
            found.append(((key[0], key[2]), d))
    return [d for _, d in sorted(found)]
