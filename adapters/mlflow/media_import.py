"""MLflow's media back into media events: step images, ``log_table`` tables, bridge's layout.

Given every artifact file of a run, :func:`media_events` claims the files that are media and
returns their events; the importer keeps the rest as artifacts. Recognized:

- bridge's own layout (``media.py``): each descriptor ``media/<key>/step_<N>/<type>-<T>.json``
  marked ``bridge_media`` gives back its event whole (key, step, timestamp, captions, inline
  data, source) with the files it names; the thumbnails, grid copies and charts it lists are
  claimed too;
- MLflow's step images in every file-name dialect it has written
  (``images/<key>+step+<N>+timestamp+<T>+<uuid>.png``, ``%`` instead of ``+``, ``~`` or ``#``
  for ``/`` in the key): one image event per key, step and timestamp (several images logged
  in the same millisecond at one step are one event); the ``…compressed.webp`` thumbnails are
  skipped;
- tables listed in the run's ``mlflow.loggedArtifacts`` tag and written as ``log_table`` does
  (JSON ``{"columns", "data"}``): a table event keyed by the file's path, stepless, whose image
  cells (``{"type": "image", "filepath", "compressed_filepath"}``) carry their images; a
  Parquet table stays an artifact, with a warning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from bridge.adapters.importing import ImportError_, ImportEvent, MediaFile, media_event
from bridge.adapters.mlflow import names
from bridge.spool.media import MEDIA_TYPES, mime_for

__all__ = ["media_events"]

Warn = Callable[[str], None]
_BOOK = ("sha256", "size", "file", "grid", "thumbnail", "mime", "name")


def media_events(files: Iterable[tuple[str, Path]], tags: Mapping[str, str], at: int,
                 warn: Warn) -> tuple[list[ImportEvent], set[str]]:
    """(media events, artifact paths they hold) of one run's artifact files (``files``:
    artifact path -> checked local file); ``at`` is the time given to stepless tables."""
    by_path = dict(files)
    claimed: set[str] = set()
    events: list[ImportEvent] = []
    for path in sorted(by_path):
        if names.parse_media_descriptor(path) is not None:
            ev = _descriptor(path, by_path, claimed, warn)
            if ev is not None:
                events.append(ev)
    events.extend(_step_images(by_path, claimed))
    events.extend(_tables(by_path, tags, at, claimed, warn))
    return events, claimed


# -- bridge's layout -----------------------------------------------------------------------


def _facts(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in _BOOK}


def _descriptor(path: str, by_path: Mapping[str, Path], claimed: set[str],
                warn: Warn) -> ImportEvent | None:
    try:
        desc = json.loads(by_path[path].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not bridge's: stays an artifact
    if not isinstance(desc, dict) or desc.get(names.MEDIA_MARKER) != 1:
        return None
    kind = desc.get("type")
    if kind not in MEDIA_TYPES or not isinstance(desc.get("key"), str):
        return None
    used = {path}

    def local(item: Mapping[str, Any]) -> Path | None:
        ref = item.get("file")
        if ref not in by_path:
            return None
        used.update(p for p in (ref, item.get("grid"), item.get("thumbnail")) if p in by_path)
        return by_path[ref]

    items = []
    for item in desc.get("items") or ():
        src = local(item) if isinstance(item, Mapping) else None
        if src is None:
            warn(f"{path}: names a file that is not in the run ({item!r:.120}); descriptor "
                 "ignored")
            return None
        items.append(MediaFile(src, str(item.get("mime") or mime_for(src.name)),
                               str(item.get("name") or src.name), _facts(item)))
    data = desc.get("data")
    cells: dict[str, MediaFile] = {}
    if kind == "table" and isinstance(data, Mapping):
        rows = []
        for row in data.get("rows") or ():
            out = []
            for cell in row if isinstance(row, list) else [row]:
                media = cell.get("media") if isinstance(cell, Mapping) else None
                if isinstance(media, Mapping):
                    refs = []
                    for item in media.get("items") or ():
                        src = local(item) if isinstance(item, Mapping) else None
                        if src is None:
                            warn(f"{path}: a table cell names a missing file; the cell is "
                                 "left empty")
                            continue
                        ref = f"cell{len(cells)}"
                        cells[ref] = MediaFile(src, str(item.get("mime") or mime_for(src.name)),
                                               str(item.get("name") or src.name))
                        refs.append({"file": ref, "mime": cells[ref].mime,
                                     "name": cells[ref].name, **_facts(item)})
                    cell = {**cell, "media": {**media, "items": refs}}
                out.append(cell)
            rows.append(out)
        data = {**data, "rows": rows}
        if isinstance(desc.get("table"), str):
            used.add(desc["table"])
    if isinstance(desc.get("render"), str):
        used.add(desc["render"])
    step = desc.get("step")
    try:
        ev = media_event(desc["key"], int(step) if step is not None else None,
                         int(desc.get("timestamp") or 0), kind, items, data,
                         desc.get("source") or None, cells or None)
    except (ImportError_, ValueError, TypeError) as exc:
        warn(f"{path}: {exc}; descriptor ignored")
        return None
    claimed.update(used)
    return ev


# -- MLflow's step images --------------------------------------------------------------------


def _step_images(by_path: Mapping[str, Path], claimed: set[str]) -> list[ImportEvent]:
    groups: dict[tuple[str, int, int], list[tuple[str, Path]]] = {}
    for path in sorted(by_path):
        if path in claimed:
            continue
        parsed = names.parse_step_image(path)
        if parsed is None:
            continue
        claimed.add(path)
        if parsed.compressed:
            continue  # MLflow's thumbnail of an image it also holds whole
        groups.setdefault((parsed.key, parsed.step, parsed.timestamp), []).append(
            (path, by_path[path]))
    out = []
    for (key, step, ts), members in sorted(groups.items(), key=lambda g: (g[0][2], g[0])):
        items = [MediaFile(local, mime_for(path, "image/png"), path.rsplit("/", 1)[-1])
                 for path, local in members]
        out.append(media_event(key, step, ts, "image", items))
    return out


# -- log_table ------------------------------------------------------------------------------


def _logged_tables(tags: Mapping[str, str]) -> list[str]:
    try:
        listed = json.loads(tags.get(names.LOGGED_ARTIFACTS_TAG) or "[]")
    except ValueError:
        return []
    return [e["path"] for e in listed if isinstance(e, dict) and e.get("type") == "table"
            and isinstance(e.get("path"), str)] if isinstance(listed, list) else []


def _tables(by_path: Mapping[str, Path], tags: Mapping[str, str], at: int, claimed: set[str],
            warn: Warn) -> list[ImportEvent]:
    out = []
    for path in _logged_tables(tags):
        if path in claimed or path not in by_path:
            continue
        if not path.endswith(".json"):
            warn(f"table {path!r} is not JSON (Parquet); kept as an artifact")
            continue
        try:
            table = json.loads(by_path[path].read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            warn(f"table {path!r} cannot be read ({exc}); kept as an artifact")
            continue
        if not isinstance(table, dict) or not isinstance(table.get("columns"), list) or \
                not isinstance(table.get("data"), list):
            warn(f"table {path!r} is not in log_table's form; kept as an artifact")
            continue
        used = {path}
        cells: dict[str, MediaFile] = {}
        rows = []
        for row in table["data"]:
            rows.append([_cell(c, by_path, cells, used) for c in
                         (row if isinstance(row, list) else [row])])
        data = {"columns": [str(c) for c in table["columns"]], "rows": rows}
        source = {"vendor": "mlflow", "descriptor": {"artifact_file": path}}
        out.append(media_event(path, None, at, "table", data=data, source=source,
                               cells=cells or None))
        claimed.update(used)
    return out


def _cell(cell: Any, by_path: Mapping[str, Path], cells: dict[str, MediaFile],
          used: set[str]) -> Any:
    """A ``log_table`` cell: an image (or bridge's other media) reference becomes a media
    cell with its file; anything else stays as it is."""
    if not isinstance(cell, Mapping) or cell.get("type") not in MEDIA_TYPES:
        return cell
    kind = cell["type"]
    paths = cell.get("filepaths") or [cell.get("filepath")]
    if not all(isinstance(p, str) and p in by_path for p in paths):
        if "data" in cell and not cell.get("filepath"):
            return {"media": {"type": kind, "items": [], "data": cell.get("data")}}
        return cell  # a reference to nothing in this run: kept as written
    items = []
    for p in paths:
        ref = f"cell{len(cells)}"
        cells[ref] = MediaFile(by_path[p], mime_for(p), p.rsplit("/", 1)[-1])
        items.append({"file": ref, "mime": cells[ref].mime, "name": cells[ref].name})
        used.add(p)
    if isinstance(cell.get("compressed_filepath"), str):
        used.add(cell["compressed_filepath"])
    return {"media": {"type": kind, "items": items, "data": None}}
