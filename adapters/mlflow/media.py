"""Media events (``bridge.spool.media``) as MLflow holds them, for both clients of the adapter.

The layout (its names and patterns are defined in ``names``):

- **image**: each item as ``mlflow.log_image(key=, step=, timestamp=)`` writes it —
  ``images/<key>+step+<N>+timestamp+<T>+<uuid>.png`` and its WebP thumbnail
  ``…+compressed.webp`` (longer side 256 px) — and the run tag ``mlflow.loggedImages`` =
  ``True``, so MLflow's image grid and step slider show them. A PNG keeps its exact bytes;
  another format is converted to PNG for the grid and its original bytes are kept beside the
  event's descriptor. Several items of one event are several images at that step.
- **table**: ``log_table``'s JSON (``{"columns": [...], "data": [[...]]}``) at
  ``tables/<key>/step_<N>.json`` (or the ``artifact_file`` an MLflow source named, a
  ``.parquet`` one as ``.json``), listed in
  the run tag ``mlflow.loggedArtifacts``; an image cell is stored as ``log_table`` stores one
  (``table_images/<table>/<uuid>.png`` + ``.webp``, the cell ``{"type": "image", "filepath",
  "compressed_filepath"}``); another media cell is ``{"type", "filepath"}`` under
  ``table_media/``; a cell without files (text, histogram) is ``{"type", "data"}``.
- **everything else** (histogram, audio, video, html, object3d, curve, tensor, file, text):
  ``media/<key>/step_<N>/<type>-<T>-<i><ext>`` per item, plus a PNG chart of each histogram
  (``<type>-<T>.png``, drawn with Pillow).

Every event also gets a descriptor, ``media/<key>/step_<N>/<type>-<T>.json``: the payload
with each item's artifact path (``file``) added, so captions, names, facts, inline data and
the source descriptor survive and bridge's importer reads the event back whole. Every name
depends only on the event (key, step, timestamp, item index and content), so a replay writes
the same files with the same bytes: delivery stays idempotent.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from bridge.adapters.mlflow import names
from bridge.spool.media import MEDIA_TYPES, extension_for

__all__ = ["Staged", "Unsendable", "check", "histogram_png", "is_image", "merge_logged_tables",
           "stage", "table_path", "write"]

MAX_TAG_VALUE = 8000  # MLflow's limit on a tag value
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EXT = re.compile(r"^(\.[A-Za-z0-9]{1,8}){1,2}$")
BlobPath = Callable[[str], Path]


class Unsendable(Exception):
    """An event whose files cannot be written (bytes missing from the spool)."""


@dataclass
class Staged:
    """What :func:`stage` put in the staging folder for one event."""

    files: list[str]
    table: str | None = None


def check(payload: Any) -> str | None:
    """Why a media payload cannot be delivered, or None when it can."""
    if not isinstance(payload, Mapping):
        return "mlflow: a media event without a payload"
    kind = payload.get("type")
    if kind not in MEDIA_TYPES:
        return f"mlflow: unknown media type {kind!r}"
    for item in payload.get("items") or ():
        if not isinstance(item, Mapping) or not _SHA256.match(str(item.get("sha256"))):
            return f"mlflow: a {kind} item without a valid sha256"
    return None


def is_image(payload: Any) -> bool:
    return isinstance(payload, Mapping) and payload.get("type") == "image"


def table_path(key: str, step: int | None, payload: Mapping[str, Any]) -> str:
    """Where a table lands: the ``artifact_file`` an MLflow source named, else
    ``tables/<key>/step_<N>.json``."""
    source = payload.get("source") or {}
    desc = source.get("descriptor") if isinstance(source, Mapping) else None
    if source.get("vendor") == "mlflow" and isinstance(desc, Mapping):
        path = desc.get("artifact_file")
        if isinstance(path, str) and path.endswith(".parquet"):
            path = path[: -len(".parquet")] + ".json"  # bridge writes log_table's JSON form
        if isinstance(path, str) and path.endswith(".json") and _safe(path):
            return path
    return names.table_file(key, step)


def _safe(path: str) -> bool:
    parts = path.split("/")
    return not path.startswith("/") and "\\" not in path and all(
        p not in ("", ".", "..") for p in parts) and not any(c in path for c in "#%\"':,[]{}")


def _ext(item: Mapping[str, Any]) -> str:
    name = str(item.get("name") or "")
    base = name.rsplit("/", 1)[-1]
    if "." in base.lstrip("."):
        ext = "." + base.lstrip(".").split(".", 1)[1]
        if _EXT.match(ext):
            return ext.lower()
    return extension_for(str(item.get("mime") or ""))


def _blob(blob_path: BlobPath, item: Mapping[str, Any]) -> Path:
    if not _SHA256.match(str(item.get("sha256"))):
        raise Unsendable(f"{item.get('name')!r}: no valid sha256")
    try:
        src = blob_path(str(item["sha256"]))
    except Exception as exc:  # AdapterError: not a blob name
        raise Unsendable(str(exc)) from exc
    if not src.is_file():
        raise Unsendable(f"{item.get('name')!r} (sha256 {item['sha256']}) is missing from the "
                         "spool")
    return src


def _put(dest: Path, rel: str, content: Path | bytes) -> None:
    target = dest / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # the same content again (names follow content): never write
        target.unlink()  # through a hard link into the blob store
    if isinstance(content, bytes):
        target.write_bytes(content)
        return
    try:
        os.link(content, target)  # the spool's filesystem: no copy
    except OSError:
        shutil.copyfile(content, target)


# -- pictures (Pillow) -----------------------------------------------------------------------


def _open(path: Path) -> Any:
    """A decoded image, or None when Pillow cannot read it (SVG, a corrupt file)."""
    try:
        from PIL import Image

        with Image.open(path) as img:
            img.load()
            return img.copy()  # the file is closed (an animated GIF would keep it open)
    except Exception:
        return None


def _rgb_ok(img: Any) -> Any:
    if img.mode in ("RGB", "RGBA", "L", "LA"):
        return img
    return img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")


def _thumbnail(img: Any) -> bytes:
    """MLflow's thumbnail: scaled (up or down) so the longer side is 256 px, as WebP."""
    w, h = img.size
    size = names.THUMBNAIL_SIZE
    if w > h:
        new = (size, max(1, int(h * size / w)))
    else:
        new = (max(1, int(w * size / h)), size)
    buf = io.BytesIO()
    _rgb_ok(img).resize(new).save(buf, format="WEBP")
    return buf.getvalue()


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    _rgb_ok(img).save(buf, format="PNG")
    return buf.getvalue()


def histogram_png(data: Mapping[str, Any], width: int = 640, height: int = 360) -> bytes | None:
    """A bar chart of a histogram's counts over its edges (Pillow only), or None if the data
    is not a histogram."""
    try:
        edges = [float(x) for x in data.get("edges") or []]
        counts = [float(x) for x in data.get("counts") or []]
    except (TypeError, ValueError):
        return None
    if not counts or len(edges) != len(counts) + 1:
        return None
    try:
        return _draw_histogram(edges, counts, width, height)
    except (ValueError, OverflowError):  # non-finite edges: the JSON holds the data
        return None


def _draw_histogram(edges: list[float], counts: list[float], width: int, height: int) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 50, width - 15, 15, height - 35
    lo, hi = edges[0], edges[-1]
    finite = [c for c in counts if math.isfinite(c)]
    peak = max(finite) if finite and max(finite) > 0 else 1.0
    span = (hi - lo) if math.isfinite(hi - lo) and hi > lo else 1.0
    for c, a, b in zip(counts, edges, edges[1:]):
        if not (math.isfinite(c) and c > 0 and math.isfinite(a) and math.isfinite(b)):
            continue
        x0 = left + (a - lo) / span * (right - left)
        x1 = max(x0 + 1, left + (b - lo) / span * (right - left))
        if x1 - x0 >= 4:
            x1 -= 1  # a gap between bars
        y0 = bottom - c / peak * (bottom - top)
        draw.rectangle([x0, y0, x1, bottom], fill=(31, 119, 180))
    draw.line([left, bottom, right, bottom], fill="black")
    draw.line([left, top, left, bottom], fill="black")
    draw.text((left, bottom + 8), f"{lo:.4g}", fill="black")
    draw.text((right - 60, bottom + 8), f"{hi:.4g}", fill="black")
    draw.text((4, top), f"{peak:.4g}", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# -- staging -----------------------------------------------------------------------------------


def stage(key: str, step: int | None, ts_ms: int, payload: Mapping[str, Any],
          blob_path: BlobPath, dest: Path) -> Staged:
    """Write one event's files into ``dest`` as they are to appear in the run's artifacts."""
    kind = str(payload["type"])
    files: list[str] = []
    out = {names.MEDIA_MARKER: 1, "key": key, "step": step, "timestamp": int(ts_ms),
           "type": kind, "data": payload.get("data"), "items": [],
           "source": payload.get("source")}

    def put(rel: str, content: Path | bytes) -> str:
        _put(dest, rel, content)
        files.append(rel)
        return rel

    staged = Staged(files)
    if kind == "image":
        for i, item in enumerate(payload.get("items") or ()):
            out["items"].append(_stage_image(key, step, ts_ms, i, item, blob_path, put))
    elif kind == "table":
        staged.table = out["table"] = table_path(key, step, payload)
        out["data"] = _stage_table(staged.table, payload.get("data"), blob_path, put)
    else:
        for i, item in enumerate(payload.get("items") or ()):
            rel = names.media_file(key, step, kind, ts_ms, i, _ext(item))
            out["items"].append({**item, "file": put(rel, _blob(blob_path, item))})
        if kind == "histogram" and isinstance(payload.get("data"), Mapping):
            chart = histogram_png(payload["data"])
            if chart is not None:
                out["render"] = put(names.media_file(key, step, kind, ts_ms, ext=".png"), chart)
    text = json.dumps(out, indent=1, sort_keys=True, default=str, allow_nan=True)
    put(names.media_file(key, step, kind, ts_ms), text.encode("utf-8"))
    return staged


def _stage_image(key: str, step: int | None, ts_ms: int, i: int, item: Mapping[str, Any],
                 blob_path: BlobPath, put: Callable[[str, Path | bytes], str]) -> dict[str, Any]:
    src = _blob(blob_path, item)
    uid = names.media_uuid(key, step, ts_ms, i, item["sha256"])
    grid = names.step_image_file(key, step or 0, ts_ms, uid)
    entry = dict(item)
    img = _open(src)
    if item.get("mime") == "image/png":
        entry["file"] = put(grid, src)  # the exact bytes
    else:
        entry["file"] = put(names.media_file(key, step, "image", ts_ms, i, _ext(item)), src)
        if img is not None:
            entry["grid"] = put(grid, _png(img))
    if img is not None:
        try:
            entry["thumbnail"] = put(names.step_image_file(key, step or 0, ts_ms, uid, True),
                                     _thumbnail(img))
        except Exception:  # an image Pillow reads but cannot scale: the grid file suffices
            pass
    return entry


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _stage_table(table: str, data: Any, blob_path: BlobPath,
                 put: Callable[[str, Path | bytes], str]) -> Any:
    """``log_table``'s JSON of a table payload; returns the payload's data with each media
    cell's items given their artifact paths (for the descriptor)."""
    if not isinstance(data, Mapping):
        data = {"columns": [], "rows": []}
    columns = [str(c) for c in data.get("columns") or []]
    rows_out: list[list[Any]] = []  # the MLflow table
    rows_desc: list[list[Any]] = []  # the descriptor's copy
    for row in data.get("rows") or ():
        row = row if isinstance(row, list) else [row]
        cells, descs = [], []
        for cell in row:
            media = cell.get("media") if isinstance(cell, Mapping) else None
            if isinstance(media, Mapping):
                cell_out, media_desc = _stage_cell(table, media, blob_path, put)
                cells.append(cell_out)
                descs.append({**cell, "media": media_desc})
            else:
                cells.append(_finite(cell))
                descs.append(cell)
        rows_out.append(cells)
        rows_desc.append(descs)
    body = json.dumps({"columns": columns, "data": rows_out}, separators=(",", ":"),
                      default=str)
    put(table, body.encode("utf-8"))
    return {**data, "columns": columns, "rows": rows_desc}


def _stage_cell(table: str, media: Mapping[str, Any], blob_path: BlobPath,
                put: Callable[[str, Path | bytes], str]) -> tuple[Any, dict[str, Any]]:
    kind = str(media.get("type"))
    items = [dict(i) for i in media.get("items") or () if isinstance(i, Mapping)]
    desc = {**media, "items": items}
    if not items:
        return {"type": kind, "data": media.get("data")}, desc
    paths = []
    for n, item in enumerate(items):
        src = _blob(blob_path, item)
        uid = names.media_uuid(table, n, item.get("sha256"))
        if kind == "image":
            img = _open(src)
            if item.get("mime") == "image/png" or img is None:
                item["file"] = put(names.table_cell_file(table, uid, True, _ext(item)), src)
            else:
                item["file"] = put(names.table_cell_file(table, uid, True), _png(img))
            if img is not None:
                try:
                    item["thumbnail"] = put(
                        names.table_cell_file(table, uid, True, compressed=True),
                        _thumbnail(img))
                except Exception:
                    pass
        else:
            item["file"] = put(names.table_cell_file(table, uid, False, _ext(item)), src)
        paths.append(item)
    first = paths[0]
    if kind == "image":
        cell = {"type": "image", "filepath": first["file"],
                "compressed_filepath": first.get("thumbnail", first["file"])}
    else:
        cell = {"type": kind, "filepath": first["file"]}
    if len(paths) > 1:
        cell["filepaths"] = [p["file"] for p in paths]
    return cell, desc


# -- writing -----------------------------------------------------------------------------------


def write(client: Any, remote: str, key: str, step: int | None, ts_ms: int,
          payload: Mapping[str, Any], blob_path: BlobPath, tmp: Path) -> Staged:
    """Stage one event's files and upload them in one ``log_artifacts`` call (either client)."""
    dest = tmp / "media"
    staged = stage(key, step, ts_ms, payload, blob_path, dest)
    client.log_artifacts(remote, str(dest))
    return staged


def merge_logged_tables(client: Any, remote: str, paths: list[str]) -> None:
    """Add tables to the run's ``mlflow.loggedArtifacts`` tag (read, merge, write: as
    ``log_table`` does), so MLflow's UI offers them as tables. Entries beyond MLflow's tag
    length are left out of the tag (the files are there)."""
    tags = client.get_run(remote).data.tags
    try:
        listed = json.loads(tags.get(names.LOGGED_ARTIFACTS_TAG, "[]"))
        listed = listed if isinstance(listed, list) else []
    except ValueError:
        listed = []
    changed = False
    for path in paths:
        entry = {"path": path, "type": "table"}
        if entry in listed:
            continue
        if len(json.dumps(listed + [entry])) > MAX_TAG_VALUE:
            break
        listed.append(entry)
        changed = True
    if changed:
        client.set_tag(remote, names.LOGGED_ARTIFACTS_TAG, json.dumps(listed))
