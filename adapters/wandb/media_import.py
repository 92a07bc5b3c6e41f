"""W&B history media -> bridge media events, joined with their files (offline run dirs).

W&B writes a media value as a descriptor in the history row (``{"_type": "image-file",
"path": "media/images/…png", "sha256": …}``) and the file under the session's ``files/``.
:class:`MediaJoin` reads both into one media event at the row's step and time, so an image
arrives as an image at its step rather than as an event plus a disconnected artifact:

- ``image-file`` / ``images/separated``: one item per image, captions and sizes kept, an
  image's bounding boxes inline in its descriptor (read from W&B's ``boxes2D`` files);
- ``histogram``: edges and counts (``bins``/``values``, or W&B's ``packedBins``);
- ``table-file``: columns and rows. W&B's own ``files/media/table`` copy holds the string
  ``"Image"`` where an image was; the images are in the ``run_table`` artifact W&B logged
  with the table, which the row names by client id (``artifact_path``). When that
  artifact's staged files are there, the table's media cells are real media with their
  bytes; otherwise the cells keep W&B's placeholder and a warning says so (counted);
- ``audio-file``, ``video-file``, ``html-file``, ``object3D-file`` (and their list forms);
- a string: a text point; any other descriptor with a ``path``: a ``file`` media event.

In a run bridge's W&B adapter wrote, a table of columns ``x``, ``y`` (and a constant
``name``) is the form the adapter gives a curve, and is read back as that curve.

The W&B descriptor is kept in ``source`` ({"vendor": "wandb", "descriptor": …}). Files are
read only through :func:`~bridge.adapters.importing.resolve_source` (inside the import
roots, or a staged artifact file whose MD5 matches its manifest); a missing or refused file
is a warning and its event is left out, never silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from bridge.adapters.importing import (
    ImportError_,
    ImportEvent,
    MediaFile,
    media_event,
    resolve_source,
    safe_relative_path,
)
from bridge.adapters.wandb import names
from bridge.spool.media import mime_for

__all__ = ["BridgeMediaFiles", "MediaJoin"]

Warn = Callable[[str], None]

_LISTS = {"images/separated": "filenames", "audio": "audio", "videos": "videos",
          "html": "html", "object3D": "objects", "images": "filenames"}


class MediaJoin:
    """Media of one W&B run: history descriptors joined with the files of their session.

    ``artifacts`` are every artifact record of the run (any session), to find a table's
    run-table artifact by its client id. :attr:`used_files` (session dir, relative path)
    and :attr:`used_artifacts` (client ids) name what became media, so the importer does
    not import them a second time as plain files and artifacts.
    """

    def __init__(self, roots: Iterable[Path], artifacts: Iterable[Mapping[str, Any]],
                 warn: Warn, bridge_written: bool = False) -> None:
        self.roots = list(roots)
        self.bridge_written = bridge_written
        self.warn = warn
        self.by_client = {a.get("client_id"): a for a in artifacts if a.get("client_id")}
        self.used_files: set[tuple[Path, str]] = set()
        self.used_artifacts: set[str] = set()

    def events(self, session: Path, key: str, value: Any, step: int | None,
               ts_ms: int) -> list[ImportEvent] | None:
        """The media event of one history value (a list of one); ``[]`` for media whose
        files are missing or refused (warned about); None when the value is not media."""
        if isinstance(value, str):
            return [media_event(key, step, ts_ms, "text", data={"text": value})]
        if not isinstance(value, Mapping) or "_type" not in value:
            return None
        try:
            ev = self._media(session, key, dict(value), step, ts_ms)
        except (ImportError_, OSError, ValueError, KeyError, TypeError) as exc:
            self.warn(f"media {key!r} at step {step} of {session.name} not imported: {exc}")
            return []
        return None if ev is None else [ev]

    # -- per W&B type ----------------------------------------------------------------------

    def _media(self, session: Path, key: str, d: dict[str, Any], step: int | None,
               ts_ms: int) -> ImportEvent | None:
        wtype = str(d["_type"])
        kind = names.MEDIA_TYPES.get(wtype)
        source = {"vendor": "wandb", "descriptor": d}
        if kind == "histogram":
            return media_event(key, step, ts_ms, "histogram", data=_histogram(d), source=source)
        if kind == "table":
            data, cells = self._table(session, key, d, step)
            curve = _curve(data) if self.bridge_written and not cells else None
            if curve is not None:  # how bridge's adapter writes a curve
                return media_event(key, step, ts_ms, "curve", data=curve)
            return media_event(key, step, ts_ms, "table", data=data, source=source, cells=cells)
        if kind is not None:
            if wtype == "image-file" and isinstance(d.get("boxes"), Mapping):
                d["boxes"] = self._boxes(session, d["boxes"])
            items = [self._file(session, kind, entry) for entry in _entries(wtype, d)]
            if not items:
                raise ValueError(f"a {wtype} without files")
            return media_event(key, step, ts_ms, kind, items, source=source)
        if isinstance(d.get("path"), str):  # plotly, bokeh, molecule...: kept as a file
            return media_event(key, step, ts_ms, "file", [self._file(session, "file", d)],
                               source=source)
        return None

    def _file(self, session: Path, kind: str, entry: Mapping[str, Any]) -> MediaFile:
        rel = safe_relative_path(str(entry.get("path") or ""))
        local = resolve_source(session / "files" / rel, self.roots)
        if not local.is_file():
            raise ValueError(f"{rel} is not a regular file")
        self.used_files.add((session, rel))
        return MediaFile(local, _mime(kind, rel), Path(rel).name, _facts(entry))

    def _boxes(self, session: Path, boxes: Mapping[str, Any]) -> dict[str, Any]:
        """An image's bounding boxes inline (``{layer: {"box_data", "class_labels"}}``),
        read from the ``boxes2D`` files W&B wrote beside it; a layer whose file cannot be
        read keeps W&B's reference (and the file is imported as a plain file)."""
        out: dict[str, Any] = {}
        for layer, ref in boxes.items():
            out[layer] = ref
            if not isinstance(ref, Mapping) or not isinstance(ref.get("path"), str):
                continue
            try:
                rel = safe_relative_path(ref["path"])
                local = resolve_source(session / "files" / rel, self.roots)
                value = json.loads(local.read_text(encoding="utf-8"))
            except (ImportError_, OSError, ValueError):
                continue
            if isinstance(value, Mapping) and isinstance(value.get("box_data"), list):
                out[layer] = {"box_data": value["box_data"],
                              "class_labels": value.get("class_labels")}
                self.used_files.add((session, rel))
        return out

    def _table(self, session: Path, key: str, d: Mapping[str, Any], step: int | None
               ) -> tuple[dict[str, Any], dict[str, MediaFile]]:
        staged = self._staged_table(d)
        cells: dict[str, MediaFile] = {}
        if staged is not None:
            table, files, client_id = staged
            rows = [[self._cell(c, files, cells) for c in row] for row in table.get("data") or ()]
            self.used_artifacts.add(client_id)
            if isinstance(d.get("path"), str):
                self._mark_file(session, d["path"])
            return {"columns": list(table.get("columns") or []), "rows": rows}, cells
        rel = safe_relative_path(str(d.get("path") or ""))
        local = resolve_source(session / "files" / rel, self.roots)
        table = json.loads(local.read_text(encoding="utf-8"))
        self.used_files.add((session, rel))
        rows = [list(r) for r in table.get("data") or ()]
        placeholders = sum(1 for r in rows for c in r if c in _PLACEHOLDERS)
        if placeholders:
            self.warn(f"table {key!r} at step {step} of {session.name}: {placeholders} media "
                      "cell(s) kept as W&B's placeholder text; the run-table artifact with "
                      "their files is not in the import location")
        return {"columns": list(table.get("columns") or []), "rows": rows}, cells

    def _mark_file(self, session: Path, path: str) -> None:
        try:
            self.used_files.add((session, safe_relative_path(path)))
        except ImportError_:
            pass

    def _staged_table(self, d: Mapping[str, Any]
                      ) -> tuple[dict[str, Any], dict[str, Path], str] | None:
        """The table JSON and files of the run-table artifact the row names, when staged."""
        ref = d.get("artifact_path")
        if not isinstance(ref, str) or not ref.startswith(names.CLIENT_ARTIFACT_SCHEME):
            return None
        client_id, _, entry = ref[len(names.CLIENT_ARTIFACT_SCHEME):].partition("/")
        art = self.by_client.get(client_id)
        if art is None:
            return None
        files: dict[str, Path] = {}
        for f in art.get("files") or ():
            local = f.get("local_path")
            if not local:
                continue
            try:
                files[f["path"]] = resolve_source(
                    local, self.roots, digest=names.manifest_md5(f.get("digest")))
            except ImportError_:
                continue
        if entry not in files:
            return None
        table = json.loads(files[entry].read_text(encoding="utf-8"))
        return table, files, client_id

    def _cell(self, cell: Any, files: Mapping[str, Path], cells: dict[str, MediaFile]) -> Any:
        if not isinstance(cell, Mapping) or "_type" not in cell:
            return cell
        kind = names.MEDIA_TYPES.get(str(cell["_type"]))
        path = cell.get("path")
        if kind == "histogram":
            return {"media": {"type": "histogram", "items": [], "data": _histogram(cell)}}
        if kind is None or kind == "table" or not isinstance(path, str) or path not in files:
            self.warn(f"table cell of W&B type {cell['_type']!r} kept as its descriptor")
            return dict(cell)
        ref = f"cell{len(cells)}"
        facts = _facts(cell)
        cells[ref] = MediaFile(files[path], _mime(kind, path), Path(path).name, facts)
        item = {"file": ref, "mime": cells[ref].mime, "name": cells[ref].name, **facts}
        return {"media": {"type": kind, "items": [item], "data": None}}


class BridgeMediaFiles:
    """``file`` and ``tensor`` media that bridge's W&B adapter wrote as run files
    (:func:`~bridge.adapters.wandb.names.media_file`), gathered across the run's sessions
    (a replayed batch saves the same path again: kept once) and read back as events."""

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}

    def add(self, rel: str, local: Path) -> bool:
        """Take ``rel`` if it is one of these files; False leaves it to the caller."""
        if names.parse_media_file(rel) is None:
            return False
        self.files.setdefault(rel, local)
        return True

    def events(self) -> Iterable[ImportEvent]:
        groups: dict[tuple[str, str, int, int], list[tuple[int, str, Path]]] = {}
        for rel, local in self.files.items():
            parsed = names.parse_media_file(rel)
            assert parsed is not None
            kind, key, step, ts_ms, n, name = parsed
            groups.setdefault((kind, key, step, ts_ms), []).append((n, name, local))
        for (kind, key, step, ts_ms), items in sorted(groups.items()):
            items.sort()
            if kind == "tensor":
                data = json.loads(items[0][2].read_text(encoding="utf-8"))
                yield media_event(key, step, ts_ms, "tensor", data=data)
            else:
                yield media_event(key, step, ts_ms, "file",
                                  [MediaFile(local, mime_for(name), name)
                                   for _, name, local in items])


_PLACEHOLDERS = {"Image", "Audio", "Video", "Html", "Object3D", "Molecule"}


def _curve(table: Mapping[str, Any]) -> dict[str, Any] | None:
    """A curve from the table bridge's W&B adapter writes for one (columns ``x``, ``y`` and
    an optional constant ``name``, numbers in ``x`` and ``y``), else None."""
    columns, rows = table.get("columns"), table.get("rows") or []
    if columns not in (["x", "y"], ["x", "y", "name"]):
        return None
    numbers = (int, float)
    if not all(isinstance(r, list) and len(r) == len(columns)
               and all(isinstance(v, numbers) and not isinstance(v, bool) for v in r[:2])
               for r in rows):
        return None
    out: dict[str, Any] = {"x": [r[0] for r in rows], "y": [r[1] for r in rows]}
    if len(columns) == 3:
        labels = {r[2] for r in rows}
        if len(labels) > 1:
            return None
        if labels:
            out["name"] = labels.pop()
    return out


def _entries(wtype: str, d: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The file descriptors of a W&B media value (one, or each of a list form)."""
    field = _LISTS.get(wtype)
    if field is None:
        return [d]
    listed = d.get(field) or []
    if wtype in ("images/separated", "images"):
        captions = d.get("captions") or []
        out = []
        for n, path in enumerate(listed):
            entry: dict[str, Any] = {"path": path, "width": d.get("width"),
                                     "height": d.get("height")}
            if isinstance(captions, list) and n < len(captions):
                entry["caption"] = captions[n]
            out.append(entry)
        return out
    if wtype == "object3D":
        return [o for o in d.get("objects") or () if isinstance(o, Mapping)]
    out = [dict(e) for e in listed if isinstance(e, Mapping)]
    captions = d.get("captions")
    if isinstance(captions, list):
        for e, c in zip(out, captions):
            if c is not None:
                e.setdefault("caption", c)
    return out


def _facts(entry: Mapping[str, Any]) -> dict[str, Any]:
    facts = {k: entry.get(k) for k in ("caption", "width", "height", "sample_rate", "fps")}
    return {k: v for k, v in facts.items() if v is not None and v is not False}


def _mime(kind: str, rel: str) -> str:
    if rel.lower().endswith(".pts.json"):
        return "application/json"
    mime = mime_for(rel)
    if kind == "html":
        return "text/html"
    return mime


def _histogram(d: Mapping[str, Any]) -> dict[str, Any]:
    counts = [float(c) for c in d.get("values") or ()]
    packed = d.get("packedBins")
    if isinstance(packed, Mapping):
        lo, size, n = float(packed["min"]), float(packed["size"]), int(packed["count"])
        edges = [lo + i * size for i in range(n + 1)]
    else:
        edges = [float(e) for e in d.get("bins") or ()]
    if len(edges) != len(counts) + 1:
        raise ValueError(f"a histogram with {len(edges)} edges for {len(counts)} counts")
    return {"edges": edges, "counts": counts}
