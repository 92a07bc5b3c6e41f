"""bridge media events as trackio logged values, and back.

trackio logs media as a dict inside a metrics row: ``{"_type": "trackio.image", "file_path":
<relative to MEDIA_DIR>, "caption": ...}`` (video, audio, html, 3-D objects alike), a
histogram as ``{"bins", "values"}``, a markdown report as ``{"_value": text}``, a table as
``{"_value": [row dict, ...]}`` whose image cells are image dicts. bridge writes exactly those
forms, plus a marker (``names.MEDIA_MARK``) with what they do not say, which trackio ignores.
A multi-item event becomes one value per item: ``<key>``, ``<key>_1``, ``<key>_2``...
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from bridge.adapters.trackio import names as N
from bridge.spool.media import extension_for, mime_for

__all__ = ["MediaOut", "Refused", "item_facts", "media_values", "safe_dir"]


class Refused(Exception):
    """trackio cannot hold this media event (the reason is the message)."""


def safe_dir(name: str) -> str:
    """A run name as one directory name (trackio uses the name as it is; a ``/`` or ``..``
    would leave its media directory)."""
    out = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return out if out not in ("", ".", "..") else "_"


class MediaOut:
    """Files to copy (``files``) and values to log for the media events of one request."""

    def __init__(self, project: str, run_name: str, blob_path: Callable[[str], Path]) -> None:
        self.prefix = f"{N.canonical_project(project)}/{safe_dir(run_name)}"
        self.blob_path = blob_path
        self.files: list[dict[str, Any]] = []

    def _file(self, uid_tag: str, step: int | None, n: int, item: Mapping[str, Any]) -> str:
        sha = item.get("sha256")
        if not isinstance(sha, str):
            raise Refused("media item without a file")
        src = self.blob_path(sha)
        if not src.is_file():
            raise Refused(f"blob {sha[:12]} is missing from the spool")
        name = str(item.get("name") or "")
        suffix = (".pts.json" if name.endswith(".pts.json") else Path(name).suffix)
        ext = suffix or extension_for(str(item.get("mime") or ""))
        step_dir = str(step) if step is not None else N.NO_STEP_DIR
        rel = f"{self.prefix}/{step_dir}/{uid_tag}-{n}{ext}"
        self.files.append({"src": str(src), "file_path": rel, "size": src.stat().st_size})
        return rel

    def file_value(self, ttype: str, uid_tag: str, step: int | None, n: int,
                   item: Mapping[str, Any], mark: dict[str, Any]) -> dict[str, Any]:
        facts = {k: v for k, v in item.items() if k not in ("sha256", "size")}
        return {"_type": ttype, "file_path": self._file(uid_tag, step, n, item),
                "caption": item.get("caption"), N.MEDIA_MARK: {**mark, "item": facts}}


def media_values(out: MediaOut, key: str, step: int | None, uid: tuple[str, int],
                 payload: Any) -> dict[str, Any]:
    """The values one media event logs, by stored key; raises :class:`Refused`."""
    if not isinstance(payload, Mapping):
        raise Refused("media event without a payload")
    mtype = payload.get("type")
    data = payload.get("data") if isinstance(payload.get("data"), Mapping) else {}
    tag = hashlib.sha256(f"{uid[0]}:{uid[1]}".encode()).hexdigest()[:16]
    if mtype in N.MEDIA_FILE_TYPES:
        items = list(payload.get("items") or ())
        if not items:
            raise Refused(f"{mtype} event without files")
        values = {}
        for i, item in enumerate(items):
            mark = {"type": mtype, "key": key, "part": i, "parts": len(items)}
            values[key if i == 0 else f"{key}_{i}"] = out.file_value(
                N.MEDIA_FILE_TYPES[mtype], tag, step, i, item, mark)
        return values
    if mtype == "histogram":
        if "edges" not in data or "counts" not in data:
            raise Refused("histogram without edges and counts")
        return {key: {"_type": N.T_HISTOGRAM, "bins": list(data["edges"]),
                      "values": list(data["counts"])}}
    if mtype == "text":
        return {key: {"_type": N.T_MARKDOWN, "_value": str(data.get("text", ""))}}
    if mtype == "table":
        return {key: _table(out, tag, step, data)}
    raise Refused(f"trackio has no {mtype!r} media (it holds images, video, audio, html, "
                  "3-D objects, tables, histograms and markdown)")


def _table(out: MediaOut, tag: str, step: int | None, data: Mapping[str, Any]) -> dict[str, Any]:
    columns = [str(c) for c in data.get("columns") or []]
    if len(set(columns)) != len(columns):
        raise Refused("table with repeated column names (trackio keeps rows as dicts)")
    rows = []
    n = 0
    for row in data.get("rows") or []:
        cells: dict[str, Any] = {}
        for c, cell in enumerate(row if isinstance(row, list) else []):
            col = columns[c] if c < len(columns) else str(c)
            if isinstance(cell, Mapping) and isinstance(cell.get("media"), Mapping):
                media = cell["media"]
                ttype = N.MEDIA_FILE_TYPES.get(str(media.get("type")))
                items = list(media.get("items") or ())
                if ttype is None or not items:
                    raise Refused(f"table cell of type {media.get('type')!r}: trackio's "
                                  "tables hold images and files only")
                vals = []
                for item in items:
                    vals.append(out.file_value(ttype, tag, step, n, item,
                                               {"type": media.get("type")}))
                    n += 1
                cells[col] = vals[0] if len(vals) == 1 else vals
            else:
                cells[col] = cell
        rows.append(cells)
    return {"_type": N.T_TABLE, "_value": rows, N.MEDIA_MARK: {"type": "table",
                                                                "columns": columns}}


# --- back: a trackio value as a bridge media payload ---------------------------------------------

_FILE_TYPES = {v: k for k, v in N.MEDIA_FILE_TYPES.items()}


def item_facts(value: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The bridge media type and item facts (mime, name, caption...) of a file value."""
    mark = value.get(N.MEDIA_MARK) if isinstance(value.get(N.MEDIA_MARK), Mapping) else {}
    mtype = str(mark.get("type") or _FILE_TYPES.get(str(value.get("_type")), "file"))
    facts = dict(mark.get("item") or {}) if isinstance(mark.get("item"), Mapping) else {}
    path = str(value.get("file_path") or "")
    facts.setdefault("name", Path(path).name)
    facts.setdefault("mime", mime_for(path))
    if value.get("caption") is not None:
        facts.setdefault("caption", value.get("caption"))
    return mtype, facts
