"""bridge's media events as Comet's own media calls, with their steps and original times.

==========  ==================================================  ===============================
bridge      Comet                                               kept / transformed / lost
==========  ==================================================  ===============================
image       ``log_image`` per item, named by the key            bytes, step; caption and item
                                                                name in the image metadata
histogram   ``log_histogram_3d`` (step 0 when there is none)    Comet bins are fixed
                                                                (exponential around 0): each
                                                                bin's count goes to the Comet
                                                                bin of its midpoint, rounded
                                                                to an integer; exact edges and
                                                                counts in the metadata when
                                                                small (``MAX_META_DATA``)
table       ``<key>.csv`` asset (the form ``log_table`` writes  values as text; media cells as
            for rows), media cells as their own uploads         their own image/asset uploads,
                                                                the cell holding the upload's
                                                                name; exact rows in metadata
                                                                when small
audio       ``log_audio`` (the file as is)                      bytes, step, sample rate
video       ``log_video`` (MP4, MOV, WMV, GIF), other formats   bytes, step
            as assets
html        ``log_html`` (the HTML tab)                         Comet keeps no step or time for
                                                                html: both ride in a comment
                                                                at the head of the page;
                                                                non-UTF-8 pages go as assets
curve       ``log_curve``                                       x, y, step
text        ``log_text(text, step=)``                           text, step
object3d,   ``log_asset`` with the step                         bytes, step
file
tensor      ``log_asset_data`` of the JSON data                 values, step
==========  ==================================================  ===============================

Every upload carries bridge's marker in its metadata (``names.META_MEDIA``: key, type,
event, original step and time, which part of the event it is), from which the importer
puts an event of several uploads back together. The original time also goes into the
archive's ``local_timestamp`` of each upload (comet_ml stamps uploads with the time of the
call; ``comet upload`` does not send it, Comet's server stamps uploads itself). Media a
Comet import brought in (``source.vendor == "comet"``) go back in their original form: the
same 3-D histogram bins, the same confusion matrix JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from bridge.adapters.base import Event, RunInfo
from bridge.adapters.comet import names as N
from bridge.spool.media import MEDIA_TYPES, blob_items, describe, extension_for, mime_for

__all__ = ["MediaRefused", "MediaSender", "media_refusal"]


class MediaRefused(Exception):
    """comet_ml would not take one upload of a media event (too large, a bad curve...)."""


def media_refusal(ev: Event, run: RunInfo) -> str | None:
    """Why Comet cannot hold this media event (a dead letter with this reason), or None."""
    p = ev.payload
    if not isinstance(p, Mapping) or p.get("type") not in MEDIA_TYPES:
        kind = p.get("type") if isinstance(p, Mapping) else type(p).__name__
        return f"media payload of unknown type {kind!r}"
    if not ev.key:
        return "a media event needs a key"
    items = list(blob_items(p))
    if items and run.blob_root is None:
        return "the run has no blob store"
    for item in items:
        if not run.blob_path(item["sha256"]).is_file():
            return f"blob {item['sha256']} of {item.get('name')!r} is missing from the spool"
    return None


def _small(value: Any) -> bool:
    try:
        return len(json.dumps(value, ensure_ascii=False)) <= N.MAX_META_DATA
    except (TypeError, ValueError):
        return False


def _ext(item: Mapping[str, Any]) -> str:
    """The item's extension: from its name when that agrees with its MIME type."""
    name, mime = str(item.get("name") or ""), str(item.get("mime") or "")
    if name and "." in name and (not mime or mime_for(name, mime) == mime):
        return name[name.rfind("."):]
    return extension_for(mime) if mime else ""


def _as_file(message: Any, tmpdir: str | None) -> Any:
    """An in-memory upload as the file upload comet_ml's offline writer would make of it
    anyway, so it keeps the time set here (the conversion stamps the time it runs)."""
    if tmpdir is None or type(message).__name__ != "UploadInMemoryMessage":
        return message
    try:
        from comet_ml.messages_utils import convert_upload_in_memory_to_file_message
    except ImportError:
        return message
    return convert_upload_in_memory_to_file_message(message, tmpdir)


@contextmanager
def _upload(exp: Any, step: int | None, ts_ms: int, extension: str | None = None) -> Iterator[None]:
    """Give the uploads logged inside the block ``step``, the original time and, when
    comet_ml sets none, the file ``extension`` (an image from a blob path has none).

    The step rides in ``curr_step``: the adapter's ``_hush`` turns comet_ml's own step
    setting off (it would make the step current for every later upload and log a step
    parameter), so the ``step=`` the calls also pass changes nothing. comet_ml stamps a
    message with the time it is queued: the original time is set on the queued message."""
    enqueue = getattr(exp, "_enqueue_message", None)
    own = "_enqueue_message" in vars(exp)

    def stamped(message: Any) -> None:
        if getattr(message, "type", None) == N.MSG_UPLOAD:
            message = _as_file(message, getattr(exp, "tmpdir", None))
            message.local_timestamp = ts_ms
            params = getattr(message, "additional_params", None)
            if extension and isinstance(params, dict) and not params.get("extension"):
                params["extension"] = extension
        assert enqueue is not None
        enqueue(message)

    exp.curr_step = step
    if enqueue is not None:
        exp._enqueue_message = stamped
    try:
        yield
    finally:
        exp.curr_step = None
        if enqueue is not None:
            if own:
                exp._enqueue_message = enqueue
            else:
                del exp._enqueue_message


class MediaSender:
    """Sends one media event at a time into an open comet_ml experiment.

    ``uploads`` counts the ``file_upload`` messages asked of comet_ml, refused events'
    earlier parts included: the adapter checks the archive holds exactly that many."""

    def __init__(self, exp: Any, run: RunInfo) -> None:
        self.exp = exp
        self.run = run
        self.uploads = 0
        self.html = 0  # html messages (not uploads)

    # -- entry -----------------------------------------------------------------------------

    def send(self, ev: Event) -> None:
        """Log ``ev`` (a media event :func:`media_refusal` accepted); raises
        :class:`MediaRefused` when comet_ml refuses one of its uploads."""
        p: Mapping[str, Any] = ev.payload
        kind = str(p["type"])
        source = p.get("source") if isinstance(p.get("source"), Mapping) else None
        if source and source.get("vendor") == N.VENDOR and self._native(ev, p, source):
            return
        getattr(self, "_" + kind, self._file)(ev, p)

    # -- helpers ---------------------------------------------------------------------------

    def _marker(self, ev: Event, part: int, parts: int, **extra: Any) -> dict[str, Any]:
        p = ev.payload
        m: dict[str, Any] = {
            N.MEDIA_KEY: ev.key, N.MEDIA_TYPE: p["type"], N.MEDIA_EVENT: f"{ev.file_id}:{ev.seq}",
            N.MEDIA_TS: ev.ts_ms, N.MEDIA_STEP: ev.step, N.MEDIA_PART: part, N.MEDIA_PARTS: parts,
        }
        if part == 0:
            if p.get("data") is not None and _small(p["data"]):
                m[N.MEDIA_DATA] = p["data"]
            if p.get("source") and _small(p["source"]):
                m[N.MEDIA_SOURCE] = p["source"]
        m.update({k: v for k, v in extra.items() if v is not None})
        return {N.META_MEDIA: m}

    def _check(self, result: Any, what: str) -> None:
        if result is None:
            raise MediaRefused(f"comet_ml refused {what} (too large, or not readable as such)")
        self.uploads += 1

    def _blob(self, item: Mapping[str, Any]) -> str:
        return str(self.run.blob_path(item["sha256"]))

    def _name(self, ev: Event, item: Mapping[str, Any], n: int, count: int) -> str:
        base = ev.key if count == 1 else f"{ev.key}_{n}"
        return f"{base}{_ext(item)}"

    def _asset(self, ev: Event, item: Mapping[str, Any], name: str,
               meta: dict[str, Any]) -> None:
        with _upload(self.exp, ev.step, ev.ts_ms, extension=_ext(item).lstrip(".") or None):
            result = self.exp.log_asset(self._blob(item), file_name=name, step=ev.step,
                                        metadata=meta)
        self._check(result, f"asset {name!r}")

    def _image_upload(self, ev: Event, item: Mapping[str, Any], name: str,
                      meta: dict[str, Any]) -> None:
        if item.get("caption"):
            meta = {**meta, N.META_CAPTION: item["caption"]}
        with _upload(self.exp, ev.step, ev.ts_ms, extension=_ext(item).lstrip(".") or None):
            result = self.exp.log_image(self._blob(item), name=name, step=ev.step,
                                        metadata=meta)
        self._check(result, f"image {name!r}")

    # -- one method per media type ---------------------------------------------------------

    def _image(self, ev: Event, p: Mapping[str, Any]) -> None:
        items = list(p.get("items") or [])
        for n, item in enumerate(items):
            self._image_upload(ev, item, ev.key, self._marker(ev, n, len(items), item=item))

    def _audio(self, ev: Event, p: Mapping[str, Any]) -> None:
        items = list(p.get("items") or [])
        for n, item in enumerate(items):
            name = self._name(ev, item, n, len(items))
            meta = self._marker(ev, n, len(items), item=item)
            if item.get("sample_rate"):  # where comet_ml puts it for samples it encodes
                meta["sample_rate"] = item["sample_rate"]
            with _upload(self.exp, ev.step, ev.ts_ms, extension=_ext(item).lstrip(".") or None):
                result = self.exp.log_audio(self._blob(item), sample_rate=item.get("sample_rate"),
                                            file_name=name, metadata=meta, step=ev.step)
            self._check(result, f"audio {name!r}")

    def _video(self, ev: Event, p: Mapping[str, Any]) -> None:
        items = list(p.get("items") or [])
        for n, item in enumerate(items):
            name = self._name(ev, item, n, len(items))
            meta = self._marker(ev, n, len(items), item=item)
            fmt = _ext(item).lstrip(".").lower()
            if fmt not in N.VIDEO_FORMATS:  # log_video refuses it: the file, as an asset
                self._asset(ev, item, name, meta)
                continue
            with _upload(self.exp, ev.step, ev.ts_ms):
                result = self.exp.log_video(self._blob(item), name=name, format=fmt,
                                            step=ev.step, metadata=meta)
            self._check(result, f"video {name!r}")

    def _html(self, ev: Event, p: Mapping[str, Any]) -> None:
        items = list(p.get("items") or [])
        for n, item in enumerate(items):
            meta = self._marker(ev, n, len(items), item=item)
            raw = self.run.blob_path(item["sha256"]).read_bytes()
            try:
                page = raw.decode("utf-8")
            except UnicodeDecodeError:  # Comet's html is text: the page as a file
                self._asset(ev, item, self._name(ev, item, n, len(items)), meta)
                continue
            mark = json.dumps(meta[N.META_MEDIA], ensure_ascii=False).replace("--", "\\u002d-")
            self.exp.log_html(f"{N.HTML_MARK}{mark}{N.HTML_MARK_END}{page}")
            self.html += 1

    def _file(self, ev: Event, p: Mapping[str, Any]) -> None:
        """object3d, file, and any type Comet has no own form for: assets with the step."""
        items = list(p.get("items") or [])
        for n, item in enumerate(items):
            self._asset(ev, item, self._name(ev, item, n, len(items)),
                        self._marker(ev, n, len(items), item=item))

    def _text(self, ev: Event, p: Mapping[str, Any]) -> None:
        data = p.get("data") if isinstance(p.get("data"), Mapping) else {}
        text = str(data.get("text", ""))
        meta = self._marker(ev, 0, 1)
        meta[N.META_MEDIA].pop(N.MEDIA_DATA, None)  # the text itself is the sample
        with _upload(self.exp, ev.step, ev.ts_ms):
            result = self.exp.log_text(text, step=ev.step, metadata=meta)
        self._check(result, f"text sample {ev.key!r}")

    def _curve(self, ev: Event, p: Mapping[str, Any]) -> None:
        data = p.get("data") if isinstance(p.get("data"), Mapping) else {}
        with _upload(self.exp, ev.step, ev.ts_ms):
            result = self.exp.log_curve(ev.key, list(data.get("x") or []),
                                        list(data.get("y") or []), step=ev.step,
                                        metadata=self._marker(ev, 0, 1))
        self._check(result, f"curve {ev.key!r}")

    def _tensor(self, ev: Event, p: Mapping[str, Any]) -> None:
        text = json.dumps(p.get("data"), ensure_ascii=False)
        meta = self._marker(ev, 0, 1)
        meta[N.META_MEDIA].pop(N.MEDIA_DATA, None)  # the asset holds it
        with _upload(self.exp, ev.step, ev.ts_ms):
            result = self.exp.log_asset_data(text, name=f"{ev.key}.json", step=ev.step,
                                             metadata=meta)
        self._check(result, f"tensor {ev.key!r}")

    def _histogram(self, ev: Event, p: Mapping[str, Any]) -> None:
        data = p.get("data") if isinstance(p.get("data"), Mapping) else {}
        edges = [float(x) for x in data.get("edges") or []]
        counts = [float(x) for x in data.get("counts") or []]
        if len(edges) != len(counts) + 1:
            raise MediaRefused(f"histogram {ev.key!r}: {len(edges)} edges for {len(counts)} "
                               "counts")
        hist = _new_histogram()
        mids, weights = [], []
        for i, c in enumerate(counts):
            lo, hi = edges[i], edges[i + 1]
            if c and math.isfinite(c) and math.isfinite(lo) and math.isfinite(hi):
                mids.append((lo + hi) / 2)
                weights.append(int(round(c)))
        if mids:
            hist.add(mids, counts=weights)
        self._log_histogram(ev, hist)

    def _log_histogram(self, ev: Event, hist: Any) -> None:
        meta = self._marker(ev, 0, 1)
        if hist.is_empty():  # log_histogram_3d ignores an empty one: keep the data as JSON
            with _upload(self.exp, ev.step, ev.ts_ms):
                result = self.exp.log_asset_data(json.dumps(ev.payload.get("data")),
                                                 name=f"{ev.key}.json", step=ev.step,
                                                 metadata=meta)
            self._check(result, f"empty histogram {ev.key!r}")
            return
        step = ev.step if ev.step is not None else 0  # Comet requires one
        with _upload(self.exp, step, ev.ts_ms):
            result = self.exp.log_histogram_3d(hist, name=ev.key, step=step, metadata=meta)
        self._check(result, f"histogram {ev.key!r}")

    def _table(self, ev: Event, p: Mapping[str, Any]) -> None:
        data = p.get("data") if isinstance(p.get("data"), Mapping) else {}
        columns = [str(c) for c in data.get("columns") or []]
        rows = [list(r) for r in data.get("rows") or [] if isinstance(r, list)]
        cells = [(r, c, cell["media"]) for r, row in enumerate(rows) for c, cell in enumerate(row)
                 if isinstance(cell, Mapping) and isinstance(cell.get("media"), Mapping)]
        parts = 1 + sum(len(list(blob_items(m))) for _, _, m in cells)
        part = 1
        shown: dict[tuple[int, int], str] = {}
        for r, c, media in cells:
            items = list(blob_items(media))
            names = []
            for n, item in enumerate(items):
                base = f"{ev.key}_{r}_{c}" if len(items) == 1 else f"{ev.key}_{r}_{c}_{n}"
                meta = self._marker(ev, part, parts, item=item, cell=[r, c])
                if media.get("type") == "image":
                    self._image_upload(ev, item, base, meta)
                    names.append(base)
                else:
                    self._asset(ev, item, base + _ext(item), meta)
                    names.append(base + _ext(item))
                part += 1
            shown[(r, c)] = ";".join(names) if names else describe(media)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        for r, row in enumerate(rows):
            writer.writerow([shown[(r, c)] if (r, c) in shown else _cell_text(v)
                             for c, v in enumerate(row)])
        # log_table writes rows through csv.DictWriter, which loses one-column tables and
        # duplicate column names: the same asset (``<key>.csv``), written here.
        with _upload(self.exp, ev.step, ev.ts_ms):
            result = self.exp.log_asset_data(buf.getvalue(), name=f"{ev.key}.csv", step=ev.step,
                                             metadata=self._marker(ev, 0, parts))
        self._check(result, f"table {ev.key!r}")

    # -- media a Comet import brought in: their original form ------------------------------

    def _native(self, ev: Event, p: Mapping[str, Any], source: Mapping[str, Any]) -> bool:
        descriptor = source.get("descriptor")
        if not isinstance(descriptor, Mapping):
            return False
        upload_type, body = descriptor.get("upload_type"), descriptor.get("json")
        if upload_type == N.UPLOAD_HISTOGRAM and isinstance(body, Mapping):
            import comet_ml

            try:
                hist = comet_ml.Histogram(body["start"], body["stop"], body["step"],
                                          body.get("offset", 0))
                for i, count in body.get("index_values") or []:
                    hist.counts[int(i)] = count
            except (KeyError, IndexError, TypeError, ValueError):
                return False
            self._log_histogram(ev, hist)
            return True
        if upload_type == N.UPLOAD_CONFUSION and isinstance(body, Mapping):
            log = getattr(self.exp, "_log_asset_data", None)
            if log is None:
                return False
            with _upload(self.exp, ev.step, ev.ts_ms):
                result = log(dict(body), file_name=str(descriptor.get("name") or ev.key),
                             asset_type=N.UPLOAD_CONFUSION, step=ev.step,
                             metadata=self._marker(ev, 0, 1))
            self._check(result, f"confusion matrix {ev.key!r}")
            return True
        return False


def _new_histogram() -> Any:
    """An empty Comet histogram with comet_ml's default bins."""
    import comet_ml

    return comet_ml.Histogram()


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)
