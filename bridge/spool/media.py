"""The media event's payload: one shape for images, histograms, tables, audio, video, html,
3-D objects, text series, curves and anything else a source holds.

A media event is a ``Kind.MEDIA`` row like a metric — a series key, a step, a timestamp —
whose payload is :func:`media_payload`'s dict::

    {"type": "image",
     "items": [{"sha256": "…", "size": 5120, "mime": "image/png", "name": "samples.png",
                "caption": "a cat", "width": 224, "height": 224}],
     "data": null,
     "source": {"vendor": "wandb", "descriptor": {…}}}

- ``items`` are files whose bytes live in the content-addressed blob store (by sha256):
  an image per item (a list of images under one key is one event with several items), a
  WAV, a GIF/MP4, an HTML page, a GLB or point-cloud JSON. Optional facts per item:
  ``caption``, ``width``/``height`` (images, video), ``sample_rate``/``duration`` (audio),
  ``fps``/``frames`` (video).
- ``data`` holds small structured values inline: a histogram's ``{"edges": [n+1],
  "counts": [n]}``, a table's ``{"columns": [...], "rows": [[cell, ...]]}`` whose media
  cells are ``{"media": <payload>}``, a text point's ``{"text": "..."}``, a curve's
  ``{"x": [...], "y": [...]}`` (PR curves, Comet curves), a tensor's ``{"dtype", "shape",
  "values"}``.
- ``source`` keeps the source vendor's own descriptor (what its SDK wrote), so a round
  trip to the same vendor can be exact.

Everything that reads or writes media payloads uses this module; the user-facing classes
that build them are in :mod:`bridge.media`.
"""

from __future__ import annotations

import mimetypes
from typing import Any, Iterable, Iterator, Mapping

__all__ = [
    "EXTENSIONS",
    "MEDIA_TYPES",
    "blob_items",
    "describe",
    "extension_for",
    "media_item",
    "media_payload",
    "mime_for",
    "resolve_files",
]

MEDIA_TYPES = frozenset({
    "image", "histogram", "table", "audio", "video", "html", "object3d", "text", "curve",
    "tensor", "file",
})

# The file extension bridge gives each MIME type it writes (adapters name files with it).
EXTENSIONS = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
    "image/bmp": ".bmp", "image/svg+xml": ".svg", "image/tiff": ".tiff",
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/mpeg": ".mp3", "audio/ogg": ".ogg",
    "audio/flac": ".flac",
    "video/mp4": ".mp4", "video/webm": ".webm", "video/ogg": ".ogv",
    "text/html": ".html", "text/plain": ".txt", "application/json": ".json",
    "model/gltf-binary": ".glb", "model/gltf+json": ".gltf", "model/obj": ".obj",
    "model/stl": ".stl", "application/x-npy": ".npy",
}
_BY_EXTENSION = {ext: mime for mime, ext in EXTENSIONS.items() if mime != "audio/x-wav"}
_BY_EXTENSION.update({".jpeg": "image/jpeg", ".htm": "text/html", ".tif": "image/tiff",
                      ".pts.json": "application/json"})


def mime_for(name: str, default: str = "application/octet-stream") -> str:
    """The MIME type a file name implies (bridge's table first, then the platform's)."""
    lower = name.lower()
    for ext, mime in _BY_EXTENSION.items():
        if lower.endswith(ext):
            return mime
    return mimetypes.guess_type(lower)[0] or default


def extension_for(mime: str, default: str = ".bin") -> str:
    return EXTENSIONS.get(mime, mimetypes.guess_extension(mime) or default)


def media_item(sha256: str, size: int, mime: str, name: str, **facts: Any) -> dict[str, Any]:
    """One file of a media event; facts that are None are left out."""
    out: dict[str, Any] = {"sha256": sha256, "size": int(size), "mime": mime, "name": name}
    out.update({k: v for k, v in facts.items() if v is not None})
    return out


def media_payload(type: str, items: Iterable[Mapping[str, Any]] = (), data: Any = None,
                  source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A media event's payload (see the module docstring)."""
    if type not in MEDIA_TYPES:
        raise ValueError(f"unknown media type {type!r}; known: {', '.join(sorted(MEDIA_TYPES))}")
    out: dict[str, Any] = {"type": type, "items": [dict(i) for i in items], "data": data}
    if source:
        out["source"] = dict(source)
    return out


def blob_items(payload: Any) -> Iterator[dict[str, Any]]:
    """Every item with bytes in the blob store, a table's media cells included."""
    if not isinstance(payload, Mapping):
        return
    for item in payload.get("items") or ():
        if isinstance(item, Mapping) and "sha256" in item:
            yield item  # type: ignore[misc]
    data = payload.get("data")
    if payload.get("type") == "table" and isinstance(data, Mapping):
        for row in data.get("rows") or ():
            for cell in row if isinstance(row, list) else ():
                if isinstance(cell, Mapping) and isinstance(cell.get("media"), Mapping):
                    yield from blob_items(cell["media"])


def describe(payload: Any) -> str:
    """A short readable description: ``image 224x224 image/png``, ``histogram 64 bins``…"""
    if not isinstance(payload, Mapping):
        return repr(payload)[:80]
    kind = payload.get("type", "?")
    data = payload.get("data") if isinstance(payload.get("data"), Mapping) else {}
    items = list(payload.get("items") or ())
    if kind == "text":
        text = str(data.get("text", ""))
        return text if len(text) <= 80 else text[:79] + "…"
    if kind == "histogram":
        return f"histogram {len(data.get('counts') or [])} bins"
    if kind == "table":
        cols = data.get("columns") or []
        return f"table {len(data.get('rows') or [])}x{len(cols)} ({', '.join(map(str, cols))[:60]})"
    if kind == "curve":
        return f"curve {len(data.get('x') or [])} points"
    parts = [kind]
    if items:
        first = items[0]
        if first.get("width") and first.get("height"):
            parts.append(f"{first['width']}x{first['height']}")
        parts.append(str(first.get("mime", "")))
        if len(items) > 1:
            parts.append(f"({len(items)} items)")
        captions = [str(i["caption"]) for i in items if i.get("caption")]
        if captions:
            parts.append(repr(captions[0] if len(captions) == 1 else captions)[:60])
    return " ".join(p for p in parts if p)


def resolve_files(payload: Any, stored: Mapping[str, tuple[str, int]]) -> Any:
    """``payload`` with every item's ``{"file": ref}`` replaced by ``stored[ref]``'s sha256
    and size (an importer names files by reference until the sink has stored them)."""
    if not isinstance(payload, Mapping):
        return payload
    out = dict(payload)
    items = []
    for item in payload.get("items") or ():
        item = dict(item)
        ref = item.pop("file", None)
        if ref is not None:
            if ref not in stored:
                raise ValueError(f"media item names file {ref!r}, which was not given")
            item["sha256"], item["size"] = stored[ref]
            item = {"sha256": item.pop("sha256"), "size": item.pop("size"), **item}
        items.append(item)
    out["items"] = items
    data = payload.get("data")
    if payload.get("type") == "table" and isinstance(data, Mapping):
        rows = [[{**cell, "media": resolve_files(cell["media"], stored)}
                 if isinstance(cell, Mapping) and isinstance(cell.get("media"), Mapping) else cell
                 for cell in row] if isinstance(row, list) else row
                for row in data.get("rows") or ()]
        out["data"] = {**data, "rows": rows}
    return out
