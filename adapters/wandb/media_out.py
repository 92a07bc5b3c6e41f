"""Media events -> W&B media objects in the history row of their step.

A media event becomes ``wandb.Image`` / ``Histogram`` / ``Table`` / ``Audio`` / ``Video`` /
``Html`` / ``Object3D`` in the row that carries ``bridge/step`` and the event's own
``_timestamp`` (:class:`~bridge.adapters.wandb.plan.SessionPlan` places it like a metric,
so a media value and the metrics of the same ``log`` call share a row). How each payload
type is written, and why:

- image: ``wandb.Image`` of the stored file itself (W&B copies a file it is given by path,
  byte for byte, to ``files/media/images/``); several items under one key are a list of
  images (W&B's ``images/separated``). Captions are kept, and the bounding boxes of an
  image first logged as a ``wandb.Image`` (kept in its W&B descriptor); the item's file
  name is not (W&B names media files ``<key>_<_step>_<sha256[:20]>.<ext>``).
- histogram: ``wandb.Histogram(np_histogram=(counts, edges))``. W&B refuses more than
  :data:`~bridge.adapters.wandb.names.MAX_HISTOGRAM_BINS` bins, so a larger histogram is
  re-binned: every ``k`` adjacent bins are merged (counts summed, ``k`` the smallest factor
  that fits), keeping a subset of the original edges and the total count.
- table: ``wandb.Table`` whose media cells are real ``wandb.Image`` (``Audio``...) objects,
  so W&B's run-table artifact carries the images (its ``files/media/table`` copy keeps
  W&B's own ``"Image"`` placeholders, as every W&B run does).
- curve: a ``wandb.Table`` with columns ``x`` and ``y`` (and ``name`` when the curve has
  one): the data W&B's line charts are drawn from, kept as data rather than as a chart
  preset, so it reads back point for point (bridge's importer reads such a table of a run
  the adapter wrote back as the curve).
- text: the string itself (W&B keeps strings in history rows).
- audio / video / html / object3d: the stored file by path, in a staging copy named with
  the extension W&B reads its format from (``.wav``, ``.gif``/``.mp4``, ``.html``,
  ``.glb``/``.pts.json``...); HTML is not rewritten (``inject=False``).
- tensor and file: W&B has no history type for them; each item is a run file with the
  step in its path, ``bridge/media/<type>/<step>/<ts_ms>/<key>/<n>-<name>`` (a tensor's
  inline data as one JSON file), which bridge's importer reads back as the same event.

Every file is checked at planning time (its blob present, its format one W&B reads), so a
bad event is rejected on its own; the W&B objects are made only while the session logs
its rows, one row at a time, so a batch of thousands of images is never held decoded. A
value the SDK still refuses while logging (a page that is not UTF-8) is rejected with the
SDK's reason and the rest of its row is logged.

Replays: a media value in a fragment written since the last confirmed one counts as
delivered by (key, step, time, identity) — a string by its text, any W&B media descriptor
as "media" — exactly as metric points do; run files by their path.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from bridge.adapters.wandb import names
from bridge.spool.media import blob_items, extension_for

__all__ = ["MediaValue", "SessionMedia", "check_media", "media_value_id", "rebin", "run_files"]


@dataclass(frozen=True)
class MediaValue:
    """A media event's payload waiting in a planned row; made a W&B object at log time."""

    uid: tuple[str, int]
    key: str
    payload: Mapping[str, Any]


def media_value_id(value: Any) -> str | None:
    """The identity of a non-numeric history value, the same for a planned value and for
    what W&B wrote, so a replayed batch skips media already delivered: a string is itself,
    any W&B media descriptor (a dict with ``_type``) is ``"media"``. None: not media."""
    if isinstance(value, MediaValue):
        if value.payload.get("type") == "text":
            return "text:" + str((value.payload.get("data") or {}).get("text", ""))
        return "media"
    if isinstance(value, str):
        return "text:" + value
    if isinstance(value, Mapping) and "_type" in value:
        return "media"
    return None


# -- what W&B can hold -----------------------------------------------------------------

_IMAGE_MIMES = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
                "image/bmp": ".bmp", "image/webp": ".webp", "image/tiff": ".tiff"}
_VIDEO_MIMES = {"video/mp4": ".mp4", "video/webm": ".webm", "video/ogg": ".ogg",
                "image/gif": ".gif"}
_AUDIO_MIMES = {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/mpeg": ".mp3",
                "audio/ogg": ".ogg", "audio/flac": ".flac"}
_OBJECT3D_ENDINGS = (".pts.json", ".glb", ".gltf", ".obj", ".stl", ".babylon")
_OBJECT3D_MIMES = {"application/json": ".pts.json", "model/gltf-binary": ".glb",
                   "model/gltf+json": ".gltf", "model/obj": ".obj", "model/stl": ".stl"}


def _extension(kind: str, item: Mapping[str, Any]) -> str | None:
    """The file extension W&B must see for ``item`` of a ``kind`` event, or None."""
    mime = str(item.get("mime") or "")
    if kind == "image":
        return _IMAGE_MIMES.get(mime)
    if kind == "video":
        return _VIDEO_MIMES.get(mime)
    if kind == "audio":
        return _AUDIO_MIMES.get(mime)
    if kind == "html":
        return ".html" if mime in ("text/html", "text/plain") else None
    if kind == "object3d":
        name = str(item.get("name") or "").lower()
        for ending in _OBJECT3D_ENDINGS:
            if name.endswith(ending):
                return ending
        return _OBJECT3D_MIMES.get(mime)
    return None


_FILE_TYPES = ("image", "audio", "video", "html", "object3d")


def check_media(payload: Any, blob_path: Any, *, nested: bool = False) -> str | None:
    """Why W&B cannot hold this media payload, or None. ``blob_path(sha256)`` is where the
    spool keeps an item's bytes; every one must exist."""
    if not isinstance(payload, Mapping):
        return "a media event needs a payload dict"
    kind = payload.get("type")
    data = payload.get("data") if isinstance(payload.get("data"), Mapping) else {}
    items = list(payload.get("items") or ())
    if kind in _FILE_TYPES:
        if not items:
            return f"a {kind} event without items holds nothing to send"
        if nested and len(items) > 1:
            return f"a W&B table cell holds one {kind}, not {len(items)}"
        if kind == "audio" and len(items) > 1 and importlib.util.find_spec("soundfile") is None:
            return "W&B writes a list of audio clips only with the soundfile package installed"
        for item in items:
            if _extension(kind, item) is None:
                return f"W&B cannot show a {kind} of type {item.get('mime')!r}"
    elif kind == "histogram":
        edges, counts = data.get("edges"), data.get("counts")
        if not isinstance(edges, list) or not isinstance(counts, list) or not counts \
                or len(edges) != len(counts) + 1:
            return "a histogram needs n + 1 edges for n > 0 counts"
    elif kind == "table":
        if nested:
            return "W&B cannot nest a table in a table cell"
        columns = data.get("columns")
        if not isinstance(columns, list):
            return "a table needs its columns"
        if len(data.get("rows") or ()) > names.MAX_TABLE_ROWS:
            return (f"W&B keeps at most {names.MAX_TABLE_ROWS:,} rows of a table and would "
                    "silently drop the rest")
        for row in data.get("rows") or ():
            if not isinstance(row, list) or len(row) != len(columns):
                return "every table row needs one cell per column"
            for cell in row:
                if isinstance(cell, Mapping) and isinstance(cell.get("media"), Mapping):
                    reason = check_media(cell["media"], blob_path, nested=True)
                    if reason:
                        return f"table cell: {reason}"
    elif kind == "curve":
        x, y = data.get("x"), data.get("y")
        if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y):
            return "a curve needs x and y of the same length"
    elif kind == "text":
        if not isinstance(data.get("text"), str):
            return "a text point needs its text"
    elif kind in ("tensor", "file"):
        if nested:
            return f"W&B cannot hold a {kind} in a table cell"
        if kind == "tensor" and not data:
            return "a tensor event needs its data"
        if kind == "file" and not items:
            return "a file event without items holds nothing to send"
    else:
        return f"unknown media type {kind!r}"
    for item in blob_items(payload):
        if not Path(blob_path(item["sha256"])).is_file():
            return f"media file {item.get('name')!r} is missing from the spool blob store"
    return None


def run_files(payload: Mapping[str, Any], key: str, step: int, ts_ms: int,
              blob_path: Any) -> list[tuple[str, Path | bytes]]:
    """The run files of a ``file`` or ``tensor`` media event: (path in the run, the blob
    to copy or the bytes to write)."""
    kind = str(payload.get("type"))
    if kind == "tensor":
        data = json.dumps(payload.get("data"), allow_nan=True).encode("utf-8")
        return [(names.media_file(kind, key, step, ts_ms, 0, "tensor.json"), data)]
    return [(names.media_file(kind, key, step, ts_ms, n, str(item.get("name") or "item")),
             Path(blob_path(item["sha256"])))
            for n, item in enumerate(payload.get("items") or ())]


def rebin(edges: list[float], counts: list[float],
          limit: int = names.MAX_HISTOGRAM_BINS) -> tuple[list[float], list[float]]:
    """At most ``limit`` bins: merge every ``k`` adjacent bins (``k = ceil(n / limit)``),
    summing their counts; the edges kept are every ``k``-th original edge and the last."""
    n = len(counts)
    if n <= limit:
        return list(edges), list(counts)
    k = math.ceil(n / limit)
    new_counts = [float(sum(counts[i:i + k])) for i in range(0, n, k)]
    new_edges = [edges[i] for i in range(0, n, k)] + [edges[-1]]
    return new_edges, new_counts


def _boxes(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """Bounding boxes a W&B image carried when it was logged through bridge (kept in the
    event's W&B descriptor), in ``wandb.Image(boxes=...)``'s form; class ids, which JSON
    made strings, are integers again."""
    source = payload.get("source")
    if not isinstance(source, Mapping) or source.get("vendor") != "wandb":
        return None
    boxes = (source.get("descriptor") or {}).get("boxes")
    if not isinstance(boxes, Mapping):
        return None
    out = {}
    for name, layer in boxes.items():
        if not isinstance(layer, Mapping) or not isinstance(layer.get("box_data"), list):
            return None
        entry: dict[str, Any] = {"box_data": layer["box_data"]}
        labels = layer.get("class_labels")
        if isinstance(labels, Mapping):
            try:
                entry["class_labels"] = {int(k): str(v) for k, v in labels.items()}
            except (TypeError, ValueError):
                return None
        out[str(name)] = entry
    return out or None


# -- making W&B objects while a session logs ---------------------------------------------


class SessionMedia:
    """Turns the media values of planned rows into W&B objects, staging each blob under
    ``staging`` with the extension W&B reads (a hard link where it can, else a copy);
    W&B copies what it logs into the run, and :meth:`cleanup` removes the staging dir."""

    def __init__(self, wandb: Any, blob_path: Any, staging: Path) -> None:
        self.wandb = wandb
        self.blob_path = blob_path
        self.staging = staging
        self.failed: dict[tuple[str, int], str] = {}

    def row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``row`` with each media value as its W&B form; a value that fails is left out
        and its event recorded in :attr:`failed` (the adapter rejects it with the reason)."""
        out: dict[str, Any] = {}
        for key, value in row.items():
            if not isinstance(value, MediaValue):
                out[key] = value
                continue
            try:
                out[key] = self.value(value.payload)
            except Exception as exc:  # the SDK raises many types for a file it cannot read
                self.failed[value.uid] = f"W&B refused the {value.payload.get('type')}: " \
                                         f"{type(exc).__name__}: {exc}"
        return out

    def log(self, wb: Any, row: Mapping[str, Any]) -> None:
        """``wb.log`` one planned row. Should W&B fail on one of its media values while
        writing it (copying a file, serialising a table), the row's media are rejected
        with the reason and the rest of the row is logged, so one bad value never keeps
        the batch from being confirmed."""
        values = self.row(row)
        try:
            wb.log(values)
        except Exception as exc:
            media = {k: v for k, v in row.items() if isinstance(v, MediaValue)}
            if not media:
                raise
            for value in media.values():
                self.failed.setdefault(value.uid, f"W&B could not log the "
                                       f"{value.payload.get('type')}: {type(exc).__name__}: {exc}")
            wb.log({k: v for k, v in values.items() if k not in media})

    def value(self, payload: Mapping[str, Any]) -> Any:
        wandb = self.wandb
        kind = payload.get("type")
        data = payload.get("data") if isinstance(payload.get("data"), Mapping) else {}
        if kind == "text":
            return str(data.get("text", ""))
        if kind == "histogram":
            edges, counts = rebin([float(e) for e in data["edges"]],
                                  [float(c) for c in data["counts"]])
            return wandb.Histogram(np_histogram=(counts, edges))
        if kind == "table":
            rows = [[self._cell(c) for c in row] for row in data.get("rows") or ()]
            return wandb.Table(columns=[str(c) for c in data["columns"]], data=rows)
        if kind == "curve":
            columns, rows = ["x", "y"], [list(p) for p in zip(data["x"], data["y"])]
            if data.get("name") is not None:
                columns.append("name")
                rows = [r + [str(data["name"])] for r in rows]
            return wandb.Table(columns=columns, data=rows)
        boxes = _boxes(payload) if kind == "image" else None
        objects = [self._file(kind, item, boxes) for item in payload.get("items") or ()]
        return objects[0] if len(objects) == 1 else objects

    def _cell(self, cell: Any) -> Any:
        if isinstance(cell, Mapping) and isinstance(cell.get("media"), Mapping):
            return self.value(cell["media"])
        return cell

    def _file(self, kind: str | None, item: Mapping[str, Any],
              boxes: dict[str, Any] | None = None) -> Any:
        wandb = self.wandb
        ext = _extension(str(kind), item) or extension_for(str(item.get("mime")))
        path = str(self._stage(item["sha256"], ext))
        caption = item.get("caption")
        if kind == "image":
            if boxes:
                try:
                    return wandb.Image(path, caption=caption, boxes=boxes)
                except Exception:  # boxes W&B does not take: the image without them
                    pass
            return wandb.Image(path, caption=caption)
        if kind == "audio":
            return wandb.Audio(path, sample_rate=item.get("sample_rate"), caption=caption)
        if kind == "video":
            return wandb.Video(path, caption=caption)
        if kind == "html":
            return wandb.Html(path, inject=False)
        if kind == "object3d":
            return wandb.Object3D(path, caption=caption)
        raise ValueError(f"no W&B type for media {kind!r}")

    def _stage(self, sha256: str, ext: str) -> Path:
        target = self.staging / f"{sha256}{ext}"
        if not target.exists():
            self.staging.mkdir(parents=True, exist_ok=True)
            source = Path(self.blob_path(sha256))
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        return target

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
