"""Comet media read back as bridge media events, with their steps.

What Comet's SDK writes, as a Comet import reads it (key = the name Comet shows, less a
file extension; step and time from the upload; the Comet form kept in
``source.descriptor`` so that a trip back to Comet is exact):

=========================  ===============================================================
Comet                      bridge
=========================  ===============================================================
``visualization`` upload   image (``log_image``, ``log_figure``: PNG, SVG... as written),
(``image`` over REST)      keyed by ``figName``
``histogram3d``            histogram: Comet's bins between the first and last non-empty
                           one as edges and counts (outermost edges ±``stop``)
``audio``, ``video``       audio (sample rate when Comet has it), video
``curve``                  curve (x, y)
``confusion-matrix``       table: the row label column, then one column per label
``dataframe``, ``*.csv``,  table (CSV/TSV; a DataFrame's JSON); numbers read back as
``*.tsv`` asset            numbers, empty cells as null; larger than ``MAX_TABLE_BYTES``:
                           left to the artifact path
``text-sample``            text point of the ``names.TEXT_SERIES`` series
``html`` message           html page of the ``names.HTML_SERIES`` series; Comet keeps no
                           step or time for it (the time of the message before it is used)
=========================  ===============================================================

Uploads bridge's Comet adapter wrote (:mod:`bridge.adapters.comet.media`) carry its marker
(``names.META_MEDIA``): their parts are put back together into the original event, with
its key, step, time, items, captions and, when the marker holds it, its exact data.

Anything that cannot be read is reported through ``warn`` with its reason; the bytes are
kept as a ``file`` media event at their step when there are any.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from bridge.adapters.comet import names as N
from bridge.adapters.importing import ImportError_, ImportEvent, MediaFile, media_event
from bridge.spool.media import extension_for, mime_for

__all__ = ["MediaReader", "comet_bin_edges", "histogram_from_comet"]

_INT = re.compile(r"^[+-]?\d{1,18}$")
_ITEM_KEYS = frozenset({"sha256", "size", "mime", "name", "file"})
_IMAGE_HEADS = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                (b"GIF8", "image/gif"), (b"BM", "image/bmp"))


def comet_bin_edges(start: float, stop: float, step: float, offset: float) -> list[float]:
    """The boundaries of Comet's histogram bins (comet_ml's ``Histogram.values``): bin ``i``
    holds ``edges[i] <= v < edges[i + 1]``, exponentially wider away from ``offset``."""
    if not (start > 0 and stop > start and step > 1):
        raise ValueError(f"not a Comet histogram layout: start={start} stop={stop} step={step}")
    pos = []
    value = start
    while offset + value <= stop:
        pos.append(value)
        value *= step
    return ([-math.inf] + [offset - v for v in reversed(pos)] + [offset]
            + [offset + v for v in pos] + [math.inf])


def histogram_from_comet(body: Mapping[str, Any]) -> dict[str, list[float]]:
    """bridge's ``{"edges", "counts"}`` of a Comet histogram JSON (``version`` 2): its bins
    from the first to the last non-empty one; infinite outer edges become ±``stop``."""
    edges = comet_bin_edges(float(body["start"]), float(body["stop"]), float(body["step"]),
                            float(body.get("offset") or 0))
    found: dict[int, float] = {}
    for index, count in body.get("index_values") or []:
        i = int(index)
        if not 0 <= i < len(edges) - 1:
            raise ValueError(f"bin {i} outside Comet's {len(edges) - 1} bins")
        found[i] = found.get(i, 0.0) + float(count)
    if not found:
        return {"edges": [], "counts": []}
    lo, hi = min(found), max(found)
    stop = float(body["stop"])
    out = [min(max(e, -stop), stop) for e in edges[lo:hi + 2]]
    return {"edges": out, "counts": [found.get(i, 0.0) for i in range(lo, hi + 1)]}


def _series(name: str) -> str:
    """A Comet name as a series key: the name less a file extension bridge knows."""
    base = name.rsplit("/", 1)[-1]
    if "." in base.strip(".") and mime_for(base, "") not in ("", "application/octet-stream"):
        return name[:name.rfind(".")]
    return name


def _sniff_image(head: bytes) -> str | None:
    for magic, mime in _IMAGE_HEADS:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.lstrip().startswith((b"<svg", b"<?xml")):
        return "image/svg+xml"
    return None


def _number(text: str) -> Any:
    """A CSV cell as the value it spells: an integer, a finite float, null, or the text."""
    if text == "":
        return None
    if _INT.match(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def _read_table(raw: bytes, name: str) -> dict[str, Any]:
    """A CSV or TSV file (first row: the columns), or a DataFrame's JSON, as table data."""
    text = raw.decode("utf-8-sig")
    if name.lower().endswith(".json"):
        body = json.loads(text)
        if not isinstance(body, dict) or not all(isinstance(v, dict) for v in body.values()):
            raise ValueError("not a DataFrame's column-oriented JSON")
        columns = [str(c) for c in body]
        index = list(dict.fromkeys(k for col in body.values() for k in col))
        return {"columns": columns,
                "rows": [[body[c].get(i) for c in body] for i in index]}
    dialect = csv.excel_tab if name.lower().endswith(".tsv") else csv.excel
    lines = list(csv.reader(io.StringIO(text), dialect=dialect))
    if not lines:
        return {"columns": [], "rows": []}
    columns, rows = lines[0], lines[1:]
    width = len(columns)
    if any(len(r) != width for r in rows):
        raise ValueError("rows of differing lengths")
    return {"columns": columns, "rows": [[_number(c) for c in r] for r in rows]}


def _confusion_table(body: Mapping[str, Any]) -> dict[str, Any]:
    labels = [str(x) for x in body.get("labels") or []]
    matrix = body.get("matrix") or []
    if not labels:
        labels = [str(i) for i in range(len(matrix))]
    if len(matrix) != len(labels) or any(len(r) != len(labels) for r in matrix):
        raise ValueError("a confusion matrix must be square, one row per label")
    first = str(body.get("rowLabel") or "actual")
    return {"columns": [first, *labels],
            "rows": [[labels[i], *row] for i, row in enumerate(matrix)]}


def _facts(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in _ITEM_KEYS}


@dataclass
class _Part:
    marker: dict[str, Any]
    content: Path | bytes | None  # None: the upload's bytes are the text/data itself
    upload_type: str | None


@dataclass
class _Event:
    parts: dict[int, _Part] = field(default_factory=dict)
    total: int = 1


class MediaReader:
    """Turns one run's Comet media messages into media events (see the module docstring).

    One reader per run: an event bridge wrote as several uploads is held until its last
    part has been read; :meth:`finish` returns what is still incomplete, with a warning."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self.warn = warn
        self._pending: dict[str, _Event] = {}

    # -- messages ----------------------------------------------------------------------------

    def upload(self, p: Mapping[str, Any], local: Path, ts: int,
               bridge_written: bool) -> list[ImportEvent] | None:
        """The media events of one ``file_upload`` whose bytes are at ``local`` ([] while an
        event waits for its other parts), or None when it is not media."""
        meta = p.get("metadata") if isinstance(p.get("metadata"), Mapping) else {}
        marker = meta.get(N.META_MEDIA)
        upload_type = p.get("upload_type")
        if isinstance(marker, Mapping):
            return self._part(dict(marker), _Part(dict(marker), local, upload_type))
        extra = p.get("additional_params") or {}
        step = extra.get("step")
        step = int(step) if isinstance(step, (int, float)) else None
        name = str(extra.get("fileName") or extra.get("figName") or "")
        if upload_type == N.UPLOAD_TEXT:
            if bridge_written and N.META_EVENT in meta:
                return None  # a bridge event, not a text point
            text = local.read_text(encoding="utf-8", errors="replace")
            source = {"vendor": N.VENDOR, "descriptor": {"metadata": dict(meta)}} if meta else None
            return [media_event(N.TEXT_SERIES, step, ts, "text", data={"text": text},
                                source=source)]
        if bridge_written and upload_type == N.UPLOAD_ASSET:
            return None  # bridge's own text/dict/artifact assets
        read = {N.UPLOAD_IMAGE: self._image, N.UPLOAD_IMAGE_REST: self._image,
                N.UPLOAD_HISTOGRAM: self._histogram, N.UPLOAD_AUDIO: self._audio,
                N.UPLOAD_VIDEO: self._video, N.UPLOAD_CURVE: self._curve,
                N.UPLOAD_CONFUSION: self._confusion, N.UPLOAD_DATAFRAME: self._table,
                }.get(str(upload_type))
        if read is None and upload_type == N.UPLOAD_ASSET and name.lower().endswith(
                N.TABLE_SUFFIXES) and local.stat().st_size <= N.MAX_TABLE_BYTES:
            read = self._table
        if read is None:
            return None
        descriptor = {"upload_type": upload_type, "name": name or None}
        if meta:
            descriptor["metadata"] = dict(meta)
        key = _series(name) if name else str(upload_type)
        try:
            return [read(key, name, step, ts, local, extra, descriptor)]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, ImportError_) as exc:
            self.warn(f"{upload_type} {name or '(unnamed)'!r} at step {step}: not readable as "
                      f"{upload_type} ({exc}); kept as a file")
            return [self._as_file(key, name or key, step, ts, local, descriptor)]

    def html(self, p: Mapping[str, Any], ts: int, override: bool) -> list[ImportEvent]:
        """An ``html`` (or ``htmlOverride``) message as an html event."""
        page = p.get("html" if not override else "htmlOverride")
        if not isinstance(page, str):
            self.warn("an html message without a page; skipped")
            return []
        if page.startswith(N.HTML_MARK):
            end = page.find(N.HTML_MARK_END)
            try:
                marker = json.loads(page[len(N.HTML_MARK):end]) if end > 0 else None
            except ValueError:
                marker = None
            if isinstance(marker, dict):
                body = page[end + len(N.HTML_MARK_END):].encode("utf-8")
                return self._part(marker, _Part(marker, body, N.MSG_HTML))
        source = {"vendor": N.VENDOR, "descriptor": {"override": True}} if override else None
        item = MediaFile(page.encode("utf-8"), "text/html", f"{N.HTML_SERIES}.html")
        return [media_event(N.HTML_SERIES, None, ts, "html", [item], source=source)]

    def finish(self) -> list[ImportEvent]:
        """Events whose parts did not all arrive, built from what did, with a warning."""
        out = []
        for event_id, ev in list(self._pending.items()):
            first = next(iter(ev.parts.values())).marker
            self.warn(f"media {first.get(N.MEDIA_KEY)!r} at step {first.get(N.MEDIA_STEP)}: "
                      f"{len(ev.parts)} of {ev.total} parts in the archives; imported without "
                      "the missing ones")
            built = self._build(ev)
            if built is not None:
                out.append(built)
            del self._pending[event_id]
        return out

    # -- bridge's own media: parts of one event ---------------------------------------------

    def _part(self, marker: dict[str, Any], part: _Part) -> list[ImportEvent]:
        event_id = str(marker.get(N.MEDIA_EVENT) or id(part))
        ev = self._pending.setdefault(event_id, _Event())
        try:
            ev.total = max(1, int(marker.get(N.MEDIA_PARTS) or 1))
            ev.parts[int(marker.get(N.MEDIA_PART) or 0)] = part
        except (TypeError, ValueError):
            ev.parts[len(ev.parts)] = part
        if len(ev.parts) < ev.total:
            return []
        del self._pending[event_id]
        built = self._build(ev)
        return [built] if built is not None else []

    def _build(self, ev: _Event) -> ImportEvent | None:
        parts = [ev.parts[n] for n in sorted(ev.parts)]
        head = ev.parts.get(0, parts[0]).marker
        key, kind = str(head.get(N.MEDIA_KEY) or ""), str(head.get(N.MEDIA_TYPE) or "file")
        step, data = head.get(N.MEDIA_STEP), head.get(N.MEDIA_DATA)
        source = head.get(N.MEDIA_SOURCE) if isinstance(head.get(N.MEDIA_SOURCE), Mapping) else None
        try:
            ts = int(head.get(N.MEDIA_TS) or 0)
            if not key or (step is not None and not isinstance(step, int)):
                raise ValueError(f"a marker without a key or with step {step!r}")
            if kind == "table":
                return self._bridge_table(key, step, ts, parts, ev.parts.get(0), data, source)
            items = [self._item(pt) for pt in parts
                     if isinstance(pt.marker.get(N.MEDIA_ITEM), Mapping)]
            if data is None and kind in ("histogram", "curve", "tensor", "text"):
                data = self._bridge_data(kind, key, parts[0])
            return media_event(key, step, ts, kind, items, data, source)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, ImportError_) as exc:
            self.warn(f"media {key!r} at step {step}: not readable ({exc}); skipped")
            return None

    def _item(self, part: _Part) -> MediaFile:
        item = part.marker[N.MEDIA_ITEM]
        assert part.content is not None
        return MediaFile(part.content, str(item.get("mime") or "application/octet-stream"),
                         str(item.get("name") or "file"), _facts(item))

    def _bridge_data(self, kind: str, key: str, part: _Part) -> Any:
        raw = part.content.read_bytes() if isinstance(part.content, Path) else part.content or b""
        if kind == "text":
            return {"text": raw.decode("utf-8")}
        body = json.loads(raw)
        if kind == "histogram" and part.upload_type == N.UPLOAD_HISTOGRAM:
            return histogram_from_comet(body)
        if kind == "curve":  # log_curve names the curve by the key
            return {k: body[k] for k in ("x", "y", "name") if k in body
                    and not (k == "name" and body[k] == key)}
        return body

    def _bridge_table(self, key: str, step: Any, ts: int, parts: list[_Part],
                      csv_part: _Part | None, data: Any, source: Any) -> ImportEvent:
        cells: dict[tuple[int, int], list[_Part]] = {}
        for part in parts:
            cell = part.marker.get(N.MEDIA_CELL)
            if isinstance(cell, list) and len(cell) == 2:
                cells.setdefault((int(cell[0]), int(cell[1])), []).append(part)
        if not isinstance(data, Mapping):
            if csv_part is None or not isinstance(csv_part.content, Path):
                raise ValueError("the table's CSV is missing")
            data = _read_table(csv_part.content.read_bytes(), f"{key}.csv")
        rows = [list(r) for r in data.get("rows") or []]
        files: dict[str, MediaFile] = {}
        for (r, c), found in sorted(cells.items()):
            if r >= len(rows) or c >= len(rows[r]):
                self.warn(f"table {key!r}: a media cell [{r}, {c}] outside the table; skipped")
                continue
            old = rows[r][c]
            nested = dict(old["media"]) if isinstance(old, Mapping) and isinstance(
                old.get("media"), Mapping) else {"type": str(found[0].marker[N.MEDIA_ITEM].get(
                    "mime", "")).split("/")[0] or "file", "data": None}
            if nested["type"] not in ("image", "audio", "video", "html", "object3d"):
                nested["type"] = "file"
            entries = []
            for n, part in enumerate(found):
                ref = f"cell{r}_{c}_{n}"
                f = self._item(part)
                files[ref] = f
                entries.append({"file": ref, "mime": f.mime, "name": f.name,
                                **{k: v for k, v in f.facts.items() if v is not None}})
            nested["items"] = entries
            rows[r][c] = {"media": nested}
        for r, row in enumerate(rows):  # exact data naming media whose upload is missing
            for c, cell in enumerate(row):
                if isinstance(cell, Mapping) and isinstance(cell.get("media"), Mapping) and any(
                        "file" not in i for i in cell["media"].get("items") or []):
                    self.warn(f"table {key!r}: the media of cell [{r}, {c}] is missing; left "
                              "empty")
                    row[c] = None
        table = {"columns": list(data.get("columns") or []), "rows": rows}
        return media_event(key, step, ts, "table", data=table, source=source, cells=files)

    # -- Comet's own media -------------------------------------------------------------------

    @staticmethod
    def _source(descriptor: dict[str, Any]) -> dict[str, Any]:
        return {"vendor": N.VENDOR, "descriptor": {k: v for k, v in descriptor.items()
                                                  if v is not None}}

    def _image(self, key: str, name: str, step: int | None, ts: int, local: Path,
               extra: Mapping[str, Any], descriptor: dict[str, Any]) -> ImportEvent:
        with local.open("rb") as fh:
            head = fh.read(64)
        ext = str(extra.get("extension") or "").lstrip(".").lower()
        mime = mime_for(f"x.{ext}", "") if ext else ""
        mime = mime if mime.startswith("image/") else (_sniff_image(head) or "")
        if not mime:
            raise ValueError("neither its extension nor its bytes name an image format")
        facts: dict[str, Any] = {}
        if mime != "image/svg+xml":
            from bridge.media.encode import image_facts

            facts = image_facts(local.read_bytes())
        item = MediaFile(local, mime, f"{key.rsplit('/', 1)[-1]}{extension_for(mime)}", facts)
        return media_event(key, step, ts, "image", [item], source=self._source(descriptor))

    def _histogram(self, key: str, name: str, step: int | None, ts: int, local: Path,
                   extra: Mapping[str, Any], descriptor: dict[str, Any]) -> ImportEvent:
        body = json.loads(local.read_bytes())
        data = histogram_from_comet(body)
        return media_event(key, step, ts, "histogram", data=data,
                           source=self._source({**descriptor, "json": body}))

    def _file_item(self, key: str, name: str, local: Path, default: str,
                   facts: dict[str, Any] | None = None) -> MediaFile:
        mime = mime_for(name, default) if name else default
        return MediaFile(local, mime, name.rsplit("/", 1)[-1] or f"{key}{extension_for(mime)}",
                         facts or {})

    def _audio(self, key: str, name: str, step: int | None, ts: int, local: Path,
               extra: Mapping[str, Any], descriptor: dict[str, Any]) -> ImportEvent:
        meta = descriptor.get("metadata") or {}
        rate = extra.get("sampleRate") or meta.get("sample_rate")
        item = self._file_item(key, name, local, "audio/wav",
                               {"sample_rate": int(rate)} if isinstance(rate, (int, float)) else {})
        return media_event(key, step, ts, "audio", [item], source=self._source(descriptor))

    def _video(self, key: str, name: str, step: int | None, ts: int, local: Path,
               extra: Mapping[str, Any], descriptor: dict[str, Any]) -> ImportEvent:
        ext = str(extra.get("extension") or "").lower()
        default = mime_for(f"x.{ext}", "video/mp4") if ext else "video/mp4"
        item = self._file_item(key, name, local, default)
        return media_event(key, step, ts, "video", [item], source=self._source(descriptor))

    def _curve(self, key: str, name: str, step: int | None, ts: int, local: Path,
               extra: Mapping[str, Any], descriptor: dict[str, Any]) -> ImportEvent:
        body = json.loads(local.read_bytes())
        x, y = list(body["x"]), list(body["y"])
        if len(x) != len(y):
            raise ValueError(f"{len(x)} x values for {len(y)} y values")
        data: dict[str, Any] = {"x": x, "y": y}
        if body.get("name") not in (None, key, name):
            data["name"] = body["name"]
        return media_event(key, step, ts, "curve", data=data, source=self._source(descriptor))

    def _confusion(self, key: str, name: str, step: int | None, ts: int, local: Path,
                   extra: Mapping[str, Any], descriptor: dict[str, Any]) -> ImportEvent:
        body = json.loads(local.read_bytes())
        return media_event(key, step, ts, "table", data=_confusion_table(body),
                           source=self._source({**descriptor, "json": body}))

    def _table(self, key: str, name: str, step: int | None, ts: int, local: Path,
               extra: Mapping[str, Any], descriptor: dict[str, Any]) -> ImportEvent:
        if not name.lower().endswith((*N.TABLE_SUFFIXES, ".json")):
            raise ValueError("only CSV, TSV and JSON tables are read")
        data = _read_table(local.read_bytes(), name)
        return media_event(key, step, ts, "table", data=data, source=self._source(descriptor))

    def _as_file(self, key: str, name: str, step: int | None, ts: int, local: Path,
                 descriptor: dict[str, Any]) -> ImportEvent:
        item = self._file_item(key, name, local, "application/octet-stream")
        return media_event(key, step, ts, "file", [item], source=self._source(descriptor))

