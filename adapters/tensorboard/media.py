"""TensorBoard summaries that are not scalars, as bridge media events.

Both forms an event file holds arrive here:

- the legacy values torch's ``SummaryWriter`` (and TF1) write: ``Summary.Value.image``
  (an encoded PNG, or a GIF for ``add_video``), ``histo`` (a ``HistogramProto``) and
  ``audio`` (an encoded WAV with its sample rate);
- the tensor values of TensorBoard's plugins, named by ``metadata.plugin_data.plugin_name``:
  ``images`` (``[width, height, image, ...]``), ``histograms`` (``[k, 3]`` left, right,
  count), ``audio`` (``[k, 2]`` clip, label), ``text`` (strings), ``pr_curves`` (``[6, t]``)
  and any other numeric tensor (meshes, ``add_tensor``), kept as a ``tensor`` (inline) or an
  ``.npy`` file.

Encoded bytes are kept exactly as the event file holds them. Each event's ``source`` names
the plugin, the form and the original tag, plus what the bridge payload has no field for
(a histogram's min, max, sum; a PR curve's counts), so nothing the file says is lost.
A value that cannot become media raises :class:`Skipped` with the name it is counted under.
"""

from __future__ import annotations

import base64
import io
import math
import re
import wave
from typing import Any

from bridge.adapters.importing import ImportEvent, MediaFile, media_event
from bridge.adapters.tensorboard.names import (
    LEGACY_AUDIO,
    LEGACY_HISTO,
    LEGACY_IMAGE,
    PLUGIN_AUDIO,
    PLUGIN_HISTOGRAMS,
    PLUGIN_IMAGES,
    PLUGIN_PR_CURVES,
    PLUGIN_TEXT,
    PR_CURVE_ROWS,
    TENSOR_INLINE_VALUES,
    TEXT_SUMMARY_SUFFIX,
    VENDOR,
)
from bridge.spool.media import extension_for

__all__ = ["Skipped", "legacy_media", "tensor_media", "text_of"]

_HUGE = 1e300  # TF1's outermost default histogram edges are -DBL_MAX and DBL_MAX


class Skipped(Exception):
    """A summary value that is not imported; ``str(exc)`` is the name it is counted under."""


def _sniff(data: bytes, default: str) -> str:
    """The MIME type of encoded bytes from their first bytes (event files name none)."""
    for head, mime in ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                       (b"GIF8", "image/gif"), (b"BM", "image/bmp"), (b"fLaC", "audio/flac"),
                       (b"OggS", "audio/ogg"), (b"ID3", "audio/mpeg")):
        if data.startswith(head):
            return mime
    if data[:4] == b"RIFF":
        return "image/webp" if data[8:12] == b"WEBP" else "audio/wav"
    return default


def _safe(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tag).strip("_") or "summary"


def _name(tag: str, step: int, n: int, total: int, mime: str) -> str:
    """A file name for an item: ``<tag>_<step>[_<n>]<ext>`` (the tag's slashes become _)."""
    suffix = f"_{n}" if total > 1 else ""
    return f"{_safe(tag)}_{step}{suffix}{extension_for(mime)}"


def _source(plugin: str, form: str, value: Any, **extra: Any) -> dict[str, Any]:
    """The ``source`` of an imported event: what TensorBoard called it and how."""
    descriptor: dict[str, Any] = {"plugin": plugin, "form": form, "tag": value.tag}
    meta = value.metadata if value.HasField("metadata") else None
    if meta is not None:
        if meta.display_name and meta.display_name != value.tag:
            descriptor["display_name"] = meta.display_name
        if meta.summary_description:
            descriptor["description"] = meta.summary_description
        if meta.plugin_data.content:
            descriptor["plugin_content"] = base64.b64encode(meta.plugin_data.content).decode()
    descriptor.update({k: v for k, v in extra.items() if v is not None})
    return {"vendor": VENDOR, "descriptor": descriptor}


def _gif_facts(data: bytes) -> dict[str, Any]:
    """Frames and frames per second of an animated GIF (``add_video``); {} if unreadable."""
    try:
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(data)) as img:
            frames = int(getattr(img, "n_frames", 1))
            duration = img.info.get("duration") or 0
        facts: dict[str, Any] = {"frames": frames}
        if duration:
            facts["fps"] = round(1000.0 / float(duration), 3)
        return facts
    except Exception:
        return {}


def _wav_facts(data: bytes) -> dict[str, Any]:
    """Sample rate and duration from a WAV header (tensor-form audio names neither)."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate = w.getframerate()
            return {"sample_rate": rate, "duration": round(w.getnframes() / float(rate), 6)}
    except Exception:
        return {}


def _finite(x: float) -> float | str:
    """A float for a JSON payload: NaN and infinities as the strings JSON has for them."""
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


# -- legacy values ---------------------------------------------------------------------------

def legacy_media(value: Any, step: int, ts: int) -> ImportEvent:
    """A legacy ``image`` / ``histo`` / ``audio`` value as a media event."""
    kind = value.WhichOneof("value")
    if kind == LEGACY_IMAGE:
        return _legacy_image(value, step, ts)
    if kind == LEGACY_HISTO:
        return _legacy_histogram(value, step, ts)
    if kind == LEGACY_AUDIO:
        return _legacy_audio(value, step, ts)
    raise Skipped(kind or "unknown")


def _legacy_image(value: Any, step: int, ts: int) -> ImportEvent:
    img = value.image
    data = bytes(img.encoded_image_string)
    if not data:
        raise Skipped("images(empty)")
    mime = _sniff(data, "image/png")
    facts: dict[str, Any] = {"width": img.width or None, "height": img.height or None}
    kind = "image"
    if mime == "image/gif":
        gif = _gif_facts(data)
        if gif.get("frames", 1) > 1:  # torch's add_video writes an animated GIF here
            kind = "video"
            facts.update(gif)
    item = MediaFile(data, mime, _name(value.tag, step, 0, 1, mime), facts)
    source = _source(PLUGIN_IMAGES, "legacy", value, colorspace=img.colorspace or None)
    return media_event(value.tag, step, ts, kind, [item], source=source)


def histogram_edges(bucket_limit: list[float], bucket: list[float], lo: float,
                    hi: float) -> tuple[list[float], list[float]]:
    """Edges (n + 1) and counts (n) of a ``HistogramProto``, which holds only each
    bucket's right edge: empty buckets at both ends are dropped, and the left edge of the
    first bucket left is the right edge of the one before it (torch writes an empty bucket
    first for that reason) or, for a first bucket that is not empty, the data's minimum.
    TF1's ``±DBL_MAX`` outer edges become the data's minimum and maximum."""
    if len(bucket_limit) != len(bucket):
        raise Skipped("histograms(malformed)")
    filled = [i for i, c in enumerate(bucket) if c]
    if not filled:
        raise Skipped("histograms(empty)")
    first, last = filled[0], filled[-1]
    if first > 0:
        edges = [float(x) for x in bucket_limit[first - 1:last + 1]]
    else:
        edges = [float(lo)] + [float(x) for x in bucket_limit[:last + 1]]
    counts = [float(c) for c in bucket[first:last + 1]]
    if not math.isfinite(edges[0]) or abs(edges[0]) >= _HUGE:
        edges[0] = float(lo)
    if not math.isfinite(edges[-1]) or abs(edges[-1]) >= _HUGE:
        edges[-1] = float(hi)
    return edges, counts


def _legacy_histogram(value: Any, step: int, ts: int) -> ImportEvent:
    h = value.histo
    edges, counts = histogram_edges(list(h.bucket_limit), list(h.bucket), h.min, h.max)
    source = _source(PLUGIN_HISTOGRAMS, "legacy", value, min=_finite(h.min),
                     max=_finite(h.max), num=_finite(h.num), sum=_finite(h.sum),
                     sum_squares=_finite(h.sum_squares))
    return media_event(value.tag, step, ts, "histogram",
                       data={"edges": edges, "counts": counts}, source=source)


def _legacy_audio(value: Any, step: int, ts: int) -> ImportEvent:
    a = value.audio
    data = bytes(a.encoded_audio_string)
    if not data:
        raise Skipped("audio(empty)")
    mime = a.content_type or _sniff(data, "audio/wav")
    rate = int(a.sample_rate) if a.sample_rate else None
    facts: dict[str, Any] = {"sample_rate": rate}
    if rate and a.length_frames:
        facts["duration"] = round(a.length_frames / float(rate), 6)
    if rate is None and mime in ("audio/wav", "audio/x-wav"):
        facts.update(_wav_facts(data))
    item = MediaFile(data, mime, _name(value.tag, step, 0, 1, mime), facts)
    source = _source(PLUGIN_AUDIO, "legacy", value, num_channels=a.num_channels or None,
                     length_frames=a.length_frames or None, content_type=a.content_type or None)
    return media_event(value.tag, step, ts, "audio", [item], source=source)


# -- tensor values -----------------------------------------------------------------------------

def _bytes(x: Any) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode("utf-8")


def text_of(array: Any) -> str:
    """A text summary's string tensor: one string, lines of strings, or tab-separated rows."""
    def s(x: Any) -> str:
        return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)

    if array.ndim == 0:
        return s(array.item())
    if array.ndim == 1:
        return "\n".join(s(x) for x in array)
    return "\n".join("\t".join(s(x) for x in row.reshape(-1)) for row in array)


def tensor_media(plugin: str, value: Any, array: Any, step: int, ts: int) -> ImportEvent:
    """A tensor summary of ``plugin`` (the tag's plugin, from its first value) as media."""
    if plugin == PLUGIN_IMAGES:
        return _tensor_images(value, array, step, ts)
    if plugin == PLUGIN_HISTOGRAMS:
        return _tensor_histogram(value, array, step, ts)
    if plugin == PLUGIN_AUDIO:
        return _tensor_audio(value, array, step, ts)
    if plugin == PLUGIN_TEXT:
        return _text(value, array, step, ts)
    if plugin == PLUGIN_PR_CURVES:
        return _pr_curve(value, array, step, ts)
    return _tensor(plugin, value, array, step, ts)


def _tensor_images(value: Any, array: Any, step: int, ts: int) -> ImportEvent:
    flat = array.reshape(-1)
    if flat.size < 3:
        raise Skipped("images(empty)")
    width, height = int(_bytes(flat[0])), int(_bytes(flat[1]))
    blobs = [_bytes(x) for x in flat[2:]]
    items = []
    for n, data in enumerate(blobs):
        mime = _sniff(data, "image/png")
        items.append(MediaFile(data, mime, _name(value.tag, step, n, len(blobs), mime),
                               {"width": width, "height": height}))
    return media_event(value.tag, step, ts, "image", items,
                       source=_source(PLUGIN_IMAGES, "tensor", value))


def _tensor_histogram(value: Any, array: Any, step: int, ts: int) -> ImportEvent:
    if array.ndim != 2 or array.shape[-1] != 3:
        raise Skipped("histograms(malformed)")
    if array.shape[0] == 0:
        raise Skipped("histograms(empty)")
    lefts, rights, counts = (array[:, i].astype(float).tolist() for i in range(3))
    extra: dict[str, Any] = {}
    gaps = [i for i in range(1, len(lefts)) if lefts[i] != rights[i - 1]]
    if gaps:  # buckets that do not touch: keep each bucket's own left edge
        extra["lefts"] = lefts
    return media_event(value.tag, step, ts, "histogram",
                       data={"edges": [lefts[0]] + rights, "counts": counts},
                       source=_source(PLUGIN_HISTOGRAMS, "tensor", value, **extra))


def _tensor_audio(value: Any, array: Any, step: int, ts: int) -> ImportEvent:
    rows = array.reshape(array.shape[0], -1) if array.ndim >= 1 else array.reshape(1, 1)
    items = []
    for n, row in enumerate(rows):
        data = _bytes(row[0])
        if not data:
            continue
        mime = _sniff(data, "audio/wav")
        label = _bytes(row[1]).decode("utf-8", "replace") if row.size > 1 else ""
        facts = _wav_facts(data) if mime == "audio/wav" else {}
        facts["caption"] = label or None
        items.append(MediaFile(data, mime, _name(value.tag, step, n, len(rows), mime), facts))
    if not items:
        raise Skipped("audio(empty)")
    return media_event(value.tag, step, ts, "audio", items,
                       source=_source(PLUGIN_AUDIO, "tensor", value))


def _text(value: Any, array: Any, step: int, ts: int) -> ImportEvent:
    key = value.tag
    if key.endswith(TEXT_SUMMARY_SUFFIX) and len(key) > len(TEXT_SUMMARY_SUFFIX):
        key = key[: -len(TEXT_SUMMARY_SUFFIX)]  # torch's add_text(tag) suffix
    shape = list(array.shape) if array.ndim > 1 else None
    return media_event(key, step, ts, "text", data={"text": text_of(array)},
                       source=_source(PLUGIN_TEXT, "tensor", value, shape=shape))


def _pr_curve(value: Any, array: Any, step: int, ts: int) -> ImportEvent:
    if array.ndim != 2 or array.shape[0] != len(PR_CURVE_ROWS):
        return _tensor(PLUGIN_PR_CURVES, value, array, step, ts)
    rows = {name: [_finite(x) for x in array[i].astype(float).tolist()]
            for i, name in enumerate(PR_CURVE_ROWS)}
    data = {"x": rows.pop("recall"), "y": rows.pop("precision"), "name": "precision/recall"}
    source = _source(PLUGIN_PR_CURVES, "tensor", value, num_thresholds=int(array.shape[1]),
                     **rows)
    return media_event(value.tag, step, ts, "curve", data=data, source=source)


def _tensor(plugin: str, value: Any, array: Any, step: int, ts: int) -> ImportEvent:
    """Any other numeric tensor (a mesh part, ``add_tensor``): inline when small, else .npy."""
    if array.dtype.kind not in "biufc":
        raise Skipped(plugin or "tensor")
    import numpy as np

    shape = [int(d) for d in array.shape]
    source = _source(plugin or "tensor", "tensor", value, dtype=str(array.dtype), shape=shape)
    if array.dtype.kind == "c":
        array = np.stack([array.real, array.imag], axis=-1)  # complex: (real, imag) pairs
        source["descriptor"]["complex_as_pairs"] = True
    if array.size <= TENSOR_INLINE_VALUES:
        values = [_finite(x) if isinstance(x, float) else x for x in array.reshape(-1).tolist()]
        data = {"dtype": str(array.dtype), "shape": [int(d) for d in array.shape],
                "values": values}
        return media_event(value.tag, step, ts, "tensor", data=data, source=source)
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    mime = "application/x-npy"
    item = MediaFile(buf.getvalue(), mime, _name(value.tag, step, 0, 1, mime))
    return media_event(value.tag, step, ts, "file", [item], source=source)
