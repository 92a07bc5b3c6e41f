"""Media events (:mod:`bridge.spool.media`) delivered through the neptune 1.x client.

The layout is defined in :mod:`.names` ("media events"): images become ``FileSeries``
values with their step and timestamp, histograms a ``FileSeries`` of PNGs rendered here
with Pillow plus their edges and counts as JSON per step (Neptune 1.x has no histogram
type), text points a ``StringSeries``, and every other type files per step
(``<key>/step_<N>/...``) with the event's JSON beside them.

Every media key follows the adapter's series rule (steps strictly increase, one value per
step, a point without a step gets the next one), so all media of one key read back as one
series and a replayed event is recognised: an image series remembers the sha256 of each
value (the offline op log holds the bytes, see :mod:`.history`), a files-per-step key the
sha256 of its descriptor, and an upload already in the log is not repeated.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from bridge.adapters.neptune import names as N
from bridge.adapters.neptune.paths import PathRefused, empty_segments
from bridge.adapters.neptune.series import Series
from bridge.spool.media import blob_items, extension_for

if TYPE_CHECKING:
    from bridge.adapters.base import Event, RunInfo
    from bridge.adapters.neptune.adapter import NeptuneAdapter, _Session

__all__ = ["IMAGE_LIMIT", "deliver_media", "render_histogram"]

IMAGE_LIMIT = 32 * 1024 * 1024  # the client logs a larger image as empty bytes
_FILE_TYPES = ("table", "audio", "video", "html", "object3d", "curve", "tensor", "file")


def deliver_media(adapter: "NeptuneAdapter", session: "_Session", run: "RunInfo",
                  ev: "Event") -> str | None:
    """Deliver one media event; returns a rejection reason or None."""
    key, payload = ev.key or "", ev.payload
    if not isinstance(payload, Mapping) or "type" not in payload:
        return f"media {key!r}: the payload is not a media payload"
    kind = str(payload["type"])
    root = key.split("/", 1)[0]
    if root in N.RESERVED:
        return f"media {key!r} would write into Neptune's reserved namespace {root!r}"
    missing = [i.get("name") or i["sha256"] for i in blob_items(payload)
               if not run.blob_path(i["sha256"]).is_file()]
    if missing:
        return f"media {key!r}: blob(s) missing from the spool for {', '.join(map(str, missing))}"
    if kind == "text":
        return _text(adapter, session, ev, key, payload)
    if kind == "image":
        return _images(adapter, session, run, ev, key, payload)
    if kind == "histogram":
        return _histogram(adapter, session, ev, key, payload)
    if kind in _FILE_TYPES:
        return _files_per_step(adapter, session, run, ev, key, payload)
    return f"the neptune backend has no mapping for media type {kind!r}"


# --------------------------------------------------------------------------- text


def _text(adapter: "NeptuneAdapter", session: "_Session", ev: "Event", key: str,
          payload: Mapping[str, Any]) -> str | None:
    data = payload.get("data") if isinstance(payload.get("data"), Mapping) else {}
    text = data.get("text")
    if not isinstance(text, str):
        return f"text {key!r}: the point holds no text"
    owner = f"media {key!r}"
    preview = N.text_preview(text)
    long = preview != text
    adapter._check(session, owner, [key, N.long_text_field(key, 0)] if long else [key])
    reason = adapter._queue_point(session, key, ev, preview, numeric=False)
    if reason:
        return reason
    session.paths.claim(owner, [key])
    if long:  # kept whole beside the series (names.py, "media events")
        step = ev.step
        if step is None:
            queued = session.queued.get(key) or []
            if not queued or queued[-1][0] is not ev:
                return None  # a replay of a point delivered earlier, with its file
            step = queued[-1][1]
        field = N.long_text_field(key, step)
        _upload_text(adapter, session, field, text, "txt")
        session.paths.claim(owner, [N.long_text_field(key, _first_step(session, key, step))])
    return None


# --------------------------------------------------------------------------- file series


def _classify(session: "_Session", name: str, step: int | None, value: str,
              ts_ms: int) -> tuple[str, Any]:
    return session.series.setdefault(name, Series()).classify(name, step, value, ts_ms)


def _append_image(adapter: "NeptuneAdapter", session: "_Session", field: str, content: bytes,
                  step: int, ts_ms: int, name: str | None, description: str) -> None:
    session.handle[field].append(
        adapter._File.from_content(content, extension="png"),
        step=N.encode_step(step), timestamp=ts_ms / 1000,
        name=name, description=description,
    )
    session.series[field].seen[step] = hashlib.sha256(content).hexdigest()


def _image_problem(content: bytes, item: Mapping[str, Any]) -> str | None:
    from PIL import Image, UnidentifiedImageError

    if len(content) > IMAGE_LIMIT:
        return (f"{item.get('name')!r} is {len(content)} bytes; Neptune's FileSeries keeps "
                f"images up to {IMAGE_LIMIT} bytes (the client would log it empty)")
    try:
        with Image.open(io.BytesIO(content)):
            pass
    except (UnidentifiedImageError, OSError):
        return (f"{item.get('name')!r} ({item.get('mime')}) is not an image Pillow opens; "
                "Neptune's FileSeries holds only such images")
    return None


def _images(adapter: "NeptuneAdapter", session: "_Session", run: "RunInfo", ev: "Event",
            key: str, payload: Mapping[str, Any]) -> str | None:
    items = [i for i in payload.get("items") or () if isinstance(i, Mapping) and "sha256" in i]
    if not items:
        return f"image {key!r} at step {ev.step} has no image"
    contents = [run.blob_path(i["sha256"]).read_bytes() for i in items]
    for item, content in zip(items, contents):
        problem = _image_problem(content, item)
        if problem:
            return f"image {key!r} at step {ev.step}: {problem}"
    fields = [N.image_field(key, i) for i in range(len(items))]
    for f in fields:
        problem = empty_segments(f, "media key")
        if problem:
            raise PathRefused(problem)
    owner = f"media {key!r}"
    adapter._check(session, owner, fields)
    verdict, step = _classify(session, fields[0], ev.step, items[0]["sha256"], ev.ts_ms)
    if verdict == "reject":
        return str(step)
    step = int(step)
    reasons = []
    for n, (f, item, content) in enumerate(zip(fields, items, contents)):
        v = (verdict, step) if n == 0 else _classify(session, f, step, item["sha256"], ev.ts_ms)
        if v[0] == "reject":
            reasons.append(str(v[1]))
        elif v[0] == "new":
            desc = N.encode_image_description("image", key, n, len(items), item)
            _append_image(adapter, session, f, content, step, ev.ts_ms,
                          item.get("caption") or item.get("name"), desc)
    session.paths.claim(owner, fields)
    return "; ".join(reasons) or None


# --------------------------------------------------------------------------- histograms


def render_histogram(edges: list[float], counts: list[float], width: int = 480,
                     height: int = 270) -> bytes:
    """A PNG bar chart of a histogram, drawn with Pillow (deterministic bytes for the same
    data, so a replay is recognised by its sha256)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 48, width - 12, 12, height - 28
    draw.line([(left, bottom), (right, bottom)], fill="black")
    draw.line([(left, top), (left, bottom)], fill="black")
    lo, hi = (float(edges[0]), float(edges[-1])) if edges else (0.0, 1.0)
    span = (hi - lo) or 1.0
    peak = max((float(c) for c in counts), default=0.0) or 1.0
    for i, c in enumerate(counts):
        x0 = left + (float(edges[i]) - lo) / span * (right - left)
        x1 = left + (float(edges[i + 1]) - lo) / span * (right - left)
        y = bottom - max(0.0, float(c)) / peak * (bottom - top)
        if y < bottom:
            draw.rectangle([round(x0), round(y), max(round(x0), round(x1) - 1), bottom - 1],
                           fill=(31, 119, 180))
    draw.text((left, bottom + 6), f"{lo:.4g}", fill="black")
    draw.text((right - 48, bottom + 6), f"{hi:.4g}", fill="black")
    draw.text((4, top), f"{peak:.4g}", fill="black")
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _histogram(adapter: "NeptuneAdapter", session: "_Session", ev: "Event", key: str,
               payload: Mapping[str, Any]) -> str | None:
    data = payload.get("data") if isinstance(payload.get("data"), Mapping) else {}
    edges, counts = list(data.get("edges") or []), list(data.get("counts") or [])
    if not counts or len(edges) != len(counts) + 1:
        return (f"histogram {key!r} at step {ev.step}: {len(edges)} edges for {len(counts)} "
                "counts (edges must be one more than counts)")
    try:
        finite = all(math.isfinite(float(v)) for v in edges + counts)
    except (TypeError, ValueError):
        finite = False
    if not finite:
        return (f"histogram {key!r} at step {ev.step}: edges and counts must be finite numbers "
                "(Neptune gets a rendered PNG and JSON of them)")
    png = render_histogram(edges, counts)
    owner = f"media {key!r}"
    probe = N.histogram_field(key, 0)
    adapter._check(session, owner, [key, probe])
    verdict, step = _classify(session, key, ev.step, hashlib.sha256(png).hexdigest(), ev.ts_ms)
    if verdict == "reject":
        return str(step)
    step = int(step)
    data_field = N.histogram_field(key, step)
    if verdict == "new":
        item = {"name": f"{key.rsplit('/', 1)[-1]}.png", "mime": "image/png"}
        desc = N.encode_image_description("histogram", key, 0, 1, item)
        _append_image(adapter, session, key, png, step, ev.ts_ms, None, desc)
    _upload_text(adapter, session, data_field, _descriptor(ev, step, payload, {}), "json")
    session.paths.claim(owner, [key, N.histogram_field(key, _first_step(session, key, step))])
    return None


# --------------------------------------------------------------------------- files per step


def _descriptor(ev: "Event", step: int, payload: Mapping[str, Any],
                files: Mapping[str, str]) -> str:
    """The JSON kept beside a media event's files: enough to rebuild the event."""
    return json.dumps({N.MEDIA_MARK: {"key": ev.key, "step": step, "ts_ms": ev.ts_ms,
                                      "payload": dict(payload), "files": dict(files)}},
                      sort_keys=True)


def _upload_text(adapter: "NeptuneAdapter", session: "_Session", field: str, text: str,
                 ext: str) -> None:
    fp = ("content", hashlib.sha256(text.encode("utf-8")).hexdigest())
    if session.fields.get(field) == fp:
        return
    session.handle[field].upload(adapter._File.from_content(text, extension=ext))
    session.fields[field] = fp


def _first_step(session: "_Session", name: str, step: int) -> int:
    """The step whose fields stand for the whole key in the path owners (one entry per
    key, so the saved state does not grow with every step)."""
    seen = session.series[name].seen
    return min(seen) if seen else step


def _file_names(payload: Mapping[str, Any]) -> dict[str, str]:
    """A distinct Neptune field name per blob of the event (sha256 -> name)."""
    out: dict[str, str] = {}
    used = {N.MEDIA_DESCRIPTOR}
    for n, item in enumerate(blob_items(payload)):
        sha = item["sha256"]
        if sha in out:
            continue
        raw = str(item.get("name") or "").replace("/", "_").strip() or sha[:16]
        if not Path(raw).suffix:
            raw += extension_for(str(item.get("mime") or ""), "")
        name = raw if raw not in used else f"{n}_{raw}"
        used.add(name)
        out[sha] = name
    return out


def _files_per_step(adapter: "NeptuneAdapter", session: "_Session", run: "RunInfo", ev: "Event",
                    key: str, payload: Mapping[str, Any]) -> str | None:
    owner = f"media {key!r}"
    names = _file_names(payload)
    probe = N.media_step_field(key, 0, N.MEDIA_DESCRIPTOR)
    adapter._check(session, owner, [probe])
    fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()
    verdict, step = _classify(session, key, ev.step, fingerprint, ev.ts_ms)
    if verdict == "reject":
        return str(step)
    step = int(step)
    files = {sha: N.media_step_field(key, step, name) for sha, name in names.items()}
    for sha, field in files.items():
        blob = str(run.blob_path(sha))
        fp = ("file", blob)
        if session.fields.get(field) == fp:
            continue
        ext = Path(names[sha]).suffix.lstrip(".") or None
        session.handle[field].upload(adapter._File.from_path(blob, extension=ext))
        session.fields[field] = fp
    descriptor = N.media_step_field(key, step, N.MEDIA_DESCRIPTOR)
    rel = {sha: names[sha] for sha in files}
    _upload_text(adapter, session, descriptor, _descriptor(ev, step, payload, rel), "json")
    session.series[key].seen[step] = fingerprint
    first = _first_step(session, key, step)
    session.paths.claim(owner, [N.media_step_field(key, first, N.MEDIA_DESCRIPTOR)])
    return None
