"""One W&B session's ``.wandb`` log for the importer: run facts apart, rows and summary in one pass.

Describing a run needs its facts (run, config, metrics, files, artifacts, exit), which are a
handful of records; importing it needs the history rows and the summary, which are nearly all
of them. :func:`read_info` decodes only the facts, telling history and summary records apart
by their field number without decoding them; :func:`history_and_summary` streams the rows
and builds the summary in the log's order, decoding each value once (a summary key's JSON
text is kept until its last value is known). Both agree with the run-level reader in
:mod:`bridge.adapters.wandb.log`, whose framing, damage handling and value decoding they use.
"""

from __future__ import annotations

import json
import json.scanner
import re
from pathlib import Path
from typing import Any, Iterator

from bridge.adapters.wandb.names import INTERNAL_KEY

__all__ = ["history_and_summary", "read_info"]


# -- reading the .wandb log: run facts apart, history rows and the summary in one pass ------
#
# A run's log holds, per logged step, one history record and (as wandb-core writes them)
# summary records; the run's facts (run, config, files, artifacts, exit, ...) are a handful.
# Describing a run reads the framing of the whole log (its exit record is at the end, and
# damage must be found before anything is imported) but decodes only the records that are
# not history or summary, told apart by the field number of the Record's ``record_type``
# without decoding them. The summary is built by the events pass, which decodes every
# record anyway, in the log's order, as the run-level reader builds it.

_HISTORY_FIELD, _SUMMARY_FIELD = 2, 3  # wandb_internal.proto Record fields
# A Record's ``num`` (field 1, a varint), then a length-delimited field numbered below 16.
_RECORD_HEAD = re.compile(rb"\x08[\x80-\xff]{0,9}[\x00-\x7f]([\x0a-\x7a])", re.DOTALL)
_SCAN = json.scanner.make_scanner(json.JSONDecoder())


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``; value -1 when the bytes end."""
    value = shift = 0
    while pos < end:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
    return -1, pos


def _record_field(data: bytes, oneof: frozenset[int]) -> int:
    """The number of the ``record_type`` field a serialized Record sets (the last one, as
    protobuf decodes it): its top-level fields are walked, tags and lengths only; 0 when none
    is found or the bytes are odd (then the record is decoded)."""
    end = len(data)
    head = _RECORD_HEAD.match(data)
    if head is not None and head[1][0] & 7 == 2 and head[1][0] >> 3 in oneof:
        # As wandb-core writes a record: ``num``, then one record_type field to the end.
        length, pos = _varint(data, head.end(), end)
        if length >= 0 and pos + length == end:
            return head[1][0] >> 3
    pos, found = 0, 0
    while pos < end:
        tag, pos = _varint(data, pos, end)
        if tag < 0:
            return 0
        number, wire = tag >> 3, tag & 7
        if number in oneof:
            found = number
        if wire == 0:
            value, pos = _varint(data, pos, end)
            if value < 0:
                return 0
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if length < 0:
                return 0
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            return 0
    return found if pos == end else 0


def _oneof_numbers(pb: Any) -> frozenset[int]:
    return frozenset(f.number for f in pb.Record.DESCRIPTOR.oneofs_by_name["record_type"].fields)


def read_info(path: Path, skip_corrupt: bool) -> Any:
    """:func:`~bridge.adapters.wandb.log.read_run_info` without the history rows and the
    summary (``summary`` stays empty: :func:`history_and_summary` reads it)."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    from bridge.adapters.wandb import log as wl

    log_path = wl._log_file(Path(path))
    reader = wl.WandbLog(log_path, skip_corrupt=skip_corrupt)
    out = wl.RunLog(path=log_path)
    oneof = _oneof_numbers(pb)
    for offset, data in reader._payloads_with_offsets():
        if _record_field(data, oneof) in (_HISTORY_FIELD, _SUMMARY_FIELD):
            continue
        rec = pb.Record()
        try:
            rec.ParseFromString(data)
        except DecodeError as exc:
            reader._damaged(offset, f"undecodable record ({exc})")
            continue
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            summary = out.summary
            wl._apply_run(out, rec.run)
            out.summary = summary  # the run's summary items: read with the history
            summary.clear()
        else:
            wl.apply_fact(out, kind, rec)
    out.config.pop(INTERNAL_KEY, None)  # wandb's own bookkeeping, not user config
    out.truncated, out.skipped_blocks = reader.truncated, reader.skipped_blocks
    return out


def _fast_json(text: str) -> Any:
    """``json.loads`` of a whole value without its per-call wrappers (a history row's values
    are millions of short numbers); anything unusual goes the run-level reader's way."""
    try:
        value, end = _SCAN(text, 0)
        if end == len(text):
            return value
    except Exception:  # noqa: BLE001 - the reader's own _json decides, as it always did
        pass
    from bridge.adapters.wandb.log import _json

    return _json(text)


def _summary_remove(summary: dict[str, Any], raw: set[str], key: str, nested: Any) -> None:
    path = list(nested) if nested else [key]
    if len(path) == 1:
        summary.pop(path[0], None)
        raw.discard(path[0])
        return
    _decode_raw(summary, raw, path[0])
    from bridge.adapters.wandb.log import _remove

    _remove(summary, key, nested)


def _decode_raw(summary: dict[str, Any], raw: set[str], key: str) -> None:
    if key in raw:
        raw.discard(key)
        summary[key] = _fast_json(summary[key])


def history_and_summary(path: Path, skip_corrupt: bool,
                        summary: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The history rows of one session's log, in file order, as
    :func:`~bridge.adapters.wandb.log.iter_history` yields them; ``summary`` is filled as
    :func:`~bridge.adapters.wandb.log.read_run_info` fills it once the rows are read."""
    from wandb.proto import wandb_internal_pb2 as pb

    from bridge.adapters.wandb import log as wl

    reader = wl.WandbLog(wl._log_file(Path(path)), skip_corrupt=skip_corrupt)
    has_oneof = any(o.name == "value" for o in pb.HistoryItem.DESCRIPTOR.oneofs)
    history_value, fast_json, scan, apply = wl._history_value, _fast_json, _SCAN, wl._apply
    raw: set[str] = set()  # keys of ``summary`` whose value is JSON text not decoded yet
    for rec in reader.records():
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row: dict[str, Any] = {}
            for item in rec.history.item:
                if has_oneof and item.WhichOneof("value") is not None:
                    value = history_value(item)
                else:
                    text = item.value_json
                    try:  # _fast_json, inline: once per point
                        value, end = scan(text, 0)
                        if end != len(text):
                            value = fast_json(text)
                    except Exception:  # noqa: BLE001 - decided by the reader's own _json
                        value = fast_json(text)
                nested = item.nested_key
                if not nested:
                    row[item.key] = value
                elif len(nested) == 1:
                    row[nested[0]] = value
                else:
                    wl._apply(row, item.key, nested, value)
            yield row
        elif kind == "summary" or kind == "run":
            # A key's value is kept as its JSON text until the end: a summary record per
            # step repeats every key, and only the last value of each is used.
            update = rec.summary.update if kind == "summary" else rec.run.summary.update
            for item in update:
                nested = item.nested_key
                if not nested:
                    key = item.key
                elif len(nested) == 1:
                    key = nested[0]
                else:  # a nested path: into the decoded value of its top-level key
                    top = nested[0]
                    if top in raw:
                        raw.discard(top)
                        summary[top] = fast_json(summary[top])
                    apply(summary, item.key, nested, fast_json(item.value_json))
                    continue
                summary[key] = item.value_json
                raw.add(key)
            if kind == "summary":
                for item in rec.summary.remove:
                    _summary_remove(summary, raw, item.key, item.nested_key)
    for key in raw:
        summary[key] = _fast_json(summary[key])
