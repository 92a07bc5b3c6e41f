"""Real ``wandb`` media objects -> :class:`bridge.media.Media`, for ``run.log``.

Code written for W&B passes ``wandb.Image(...)``, ``wandb.Histogram(...)``, ``wandb.Table``
and the like to ``run.log``; :func:`bridge.media.as_media` hands every object whose type
lives in a ``wandb`` module to :func:`from_wandb`. W&B has already encoded file media when
the object was made (a PNG, a WAV, a GIF/MP4, an HTML page, a ``.pts.json``) into a file
it owns, so the conversion reads those bytes, exactly what W&B itself would have written,
and keeps the object's facts. W&B's own descriptor of the value (``_type``, format, size,
caption, and bounding boxes or mask names for an image) is kept in ``media.source`` as
``{"vendor": "wandb", "descriptor": ...}``, so a round trip to W&B knows what it was.

Nothing here imports ``wandb``: the objects are read by their attributes, and the class is
recognised by name, so a wandb release that renames a private attribute gives a clear
:class:`~bridge.media.MediaError`, not an import error.
"""

from __future__ import annotations

import json
import os
from typing import Any

from bridge.media import (
    Audio,
    Histogram,
    Html,
    Image,
    Media,
    MediaError,
    Object3D,
    Table,
    Video,
)
from bridge.spool.media import media_item, mime_for

__all__ = ["from_wandb"]


def from_wandb(obj: Any) -> Media | None:
    """``obj`` (a ``wandb`` media object) as bridge media, or None when it is not media
    bridge knows (the caller reports it). Raises MediaError when its file is unreadable."""
    name = type(obj).__name__
    convert = _CONVERTERS.get(name)
    if convert is None:
        path = _local_path(obj)
        if path is None:
            return None
        media: Media = _File(_read(path), os.path.basename(path), _caption(obj))
        _describe(media, obj, {"_type": getattr(obj, "_log_type", name)})
        return media
    return convert(obj)


# -- per type ---------------------------------------------------------------------------


def _image(obj: Any) -> Media:
    path = _require_path(obj, "Image")
    media = Image(_read(path), caption=_caption(obj))
    media._mime = mime_for(path, "image/png")
    descriptor: dict[str, Any] = {"_type": "image-file", "format": getattr(obj, "format", None),
                                  "width": getattr(obj, "_width", None),
                                  "height": getattr(obj, "_height", None)}
    if getattr(obj, "_grouping", None) is not None:
        descriptor["grouping"] = obj._grouping
    boxes = getattr(obj, "_boxes", None)
    if boxes:
        descriptor["boxes"] = {k: {"box_data": getattr(b, "_val", None),
                                   "class_labels": getattr(b, "_class_labels", None)}
                               for k, b in boxes.items()}
    masks = getattr(obj, "_masks", None)
    if masks:
        descriptor["masks"] = sorted(masks)  # names only: a mask is an image of its own
    classes = getattr(obj, "_classes", None)
    if classes is not None and hasattr(classes, "_class_set"):
        descriptor["classes"] = getattr(classes, "_class_set", None)
    _describe(media, obj, descriptor)
    return media


def _histogram(obj: Any) -> Media:
    counts, edges = getattr(obj, "histogram", None), getattr(obj, "bins", None)
    if counts is None or edges is None:
        raise MediaError("wandb.Histogram without histogram and bins")
    media = Histogram(edges=list(edges), counts=list(counts))
    _describe(media, obj, {"_type": "histogram"})
    return media


def _table(obj: Any) -> Media:
    columns = list(getattr(obj, "columns", None) or [])
    rows = [[_table_cell(c) for c in r] for r in getattr(obj, "data", None) or []]
    media = Table(columns=[str(c) for c in columns], data=rows)
    _describe(media, obj, {"_type": "table", "log_mode": getattr(obj, "log_mode", None)})
    return media


def _audio(obj: Any) -> Media:
    path = _require_path(obj, "Audio")
    rate = getattr(obj, "_sample_rate", None)
    media = Audio(_read(path), sample_rate=rate, caption=_caption(obj))
    media._mime = mime_for(path, "audio/wav")
    _describe(media, obj, {"_type": "audio-file", "sample_rate": rate,
                           "duration": getattr(obj, "_duration", None)})
    return media


def _video(obj: Any) -> Media:
    path = _require_path(obj, "Video")
    fmt = getattr(obj, "_format", None) or os.path.splitext(path)[1].lstrip(".")
    media = Video(_read(path), caption=_caption(obj), format=fmt)
    _describe(media, obj, {"_type": "video-file", "format": fmt,
                           "width": getattr(obj, "_width", None),
                           "height": getattr(obj, "_height", None)})
    return media


def _html(obj: Any) -> Media:
    path = _local_path(obj)
    media = Html(_read(path) if path else str(getattr(obj, "html", "")).encode("utf-8"))
    _describe(media, obj, {"_type": "html-file"})
    return media


def _object3d(obj: Any) -> Media:
    path = _require_path(obj, "Object3D")
    media = Object3D(_read(path))
    ext = getattr(obj, "_extension", None) or _ending(path)
    media._mime = "application/json" if ext == ".pts.json" else mime_for(path)
    # Named after the key, unless only the name can tell the format (``.babylon``).
    media._name = None if media._mime != "application/octet-stream" else f"object{ext or ''}"
    media.caption = _caption(obj)
    _describe(media, obj, {"_type": "object3D-file", "extension": ext})
    return media


def _table_cell(cell: Any) -> Any:
    """A W&B table cell: its media (``wandb.Image``...) as bridge media, anything else as is."""
    if type(cell).__module__.startswith("wandb"):
        converted = from_wandb(cell)
        if converted is not None:
            return converted
    return cell


_CONVERTERS = {"Image": _image, "Histogram": _histogram, "Table": _table, "Audio": _audio,
               "Video": _video, "Html": _html, "Object3D": _object3d}


# -- helpers ----------------------------------------------------------------------------


class _File(Media):
    """Any other W&B media with a file of its own (a Plotly chart, a molecule...)."""

    type = "file"

    def __init__(self, content: bytes, name: str, caption: str | None) -> None:
        self.content, self.name, self.caption = content, name, caption

    def nbytes(self) -> int:
        return len(self.content)

    def items(self, store: Any, name: str) -> list[dict[str, Any]]:
        sha, size = store(self.content)
        return [media_item(sha, size, mime_for(self.name), self.name, caption=self.caption)]


def _local_path(obj: Any) -> str | None:
    path = getattr(obj, "_path", None)
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or "://" in path or not os.path.isfile(path):
        return None
    return path


def _require_path(obj: Any, what: str) -> str:
    path = _local_path(obj)
    if path is None:
        raise MediaError(f"wandb.{what} has no local file to record (a reference to remote "
                         "storage, or an object W&B has not encoded)")
    return path


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise MediaError(f"cannot read the file of a W&B media object: {exc}") from exc


def _caption(obj: Any) -> str | None:
    caption = getattr(obj, "_caption", None)
    return None if caption is None else str(caption)


def _ending(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(".pts.json"):
        return ".pts.json"
    return os.path.splitext(lower)[1] or None


def _describe(media: Media, obj: Any, descriptor: dict[str, Any]) -> None:
    clean = {k: v for k, v in descriptor.items() if v is not None}
    if _caption(obj) is not None:
        clean["caption"] = _caption(obj)
    try:  # JSON only: the spool stores it as such
        clean = json.loads(json.dumps(clean, default=_plain))
    except (TypeError, ValueError):
        clean = {"_type": descriptor.get("_type")}
    media.source = {"vendor": "wandb", "descriptor": clean}


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
