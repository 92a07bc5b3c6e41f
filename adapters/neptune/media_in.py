"""Neptune media read back as bridge media events (:mod:`bridge.spool.media`).

Sources, and what each becomes:

* neptune-exporter Parquet ``histogram_series`` rows (``histogram_value`` = ``{type,
  edges, values}``) -> ``histogram`` events (``counts`` = ``values``; Neptune's histogram
  ``type`` kept in the source descriptor);
* Parquet ``file_series`` rows (``file_value.path`` under the exporter's files root) ->
  ``image`` events when the file's name says image, else ``file`` events;
* 1.x offline ``LogImages`` operations (``FileSeries`` values, bytes inline) -> ``image``
  events; Neptune's ``name`` becomes the caption (else its ``description``), both kept in
  the source descriptor;
* ``StringSeries`` values (``LogStrings``, Parquet ``string_series``) -> ``text`` points
  (bridge's own ``events/<key>`` series excepted: those are events);
* what bridge's own adapter wrote (names.py, "media events"): items of one event spread
  over ``<key>``, ``<key>_1``… are joined again, histograms come back from their JSON
  (not from the rendered PNG), files per step from their descriptor, text series as text.

Nothing is dropped silently: what cannot be read is returned to the importer as a warning.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from bridge.adapters.importing import ImportError_, ImportEvent, MediaFile, media_event
from bridge.adapters.neptune import names as N
from bridge.adapters.neptune.offline import ImagePoint
from bridge.spool.media import extension_for, mime_for

__all__ = [
    "BridgeMedia",
    "bridge_media_files",
    "histogram_event",
    "image_point_events",
    "parquet_file_event",
    "text_event",
]

Warn = Callable[[str], None]
Resolve = Callable[[Any, int], "Path | None"]  # (file reference, index) -> local path
VENDOR = "neptune"


def _source(**descriptor: Any) -> dict[str, Any]:
    return {"vendor": VENDOR, "descriptor": {k: v for k, v in descriptor.items() if v is not None}}


def _image_facts(data: bytes) -> tuple[str, dict[str, Any]] | None:
    """The MIME type and size of image bytes, or None when Pillow cannot read them."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = (img.format or "").lower(), img.size
    except (UnidentifiedImageError, OSError):
        return None
    mime = mime_for(f"x.{fmt}", "image/png") if fmt else "image/png"
    return mime, {"width": w, "height": h}


def text_event(key: str, step: int | None, ts_ms: int, text: str) -> ImportEvent:
    """A text point of a bridge run's text series."""
    return media_event(key, step, ts_ms, "text", data={"text": text})


def histogram_event(path: str, step: int | None, ts_ms: int, value: Any,
                    warn: Warn) -> ImportEvent | None:
    """A Parquet ``histogram_value`` as a histogram event; None (with a warning) when its
    edges and values do not fit together."""
    value = value if isinstance(value, Mapping) else {}
    edges, counts = value.get("edges"), value.get("values")
    if not isinstance(edges, list) or not isinstance(counts, list) or not counts \
            or len(edges) != len(counts) + 1:
        warn(f"histogram {path!r} at step {step}: {len(edges or [])} edges for "
             f"{len(counts or [])} values; not imported")
        return None
    try:
        data = {"edges": [float(e) for e in edges], "counts": [float(c) for c in counts]}
    except (TypeError, ValueError):
        warn(f"histogram {path!r} at step {step}: edges or values that are not numbers; "
             "not imported")
        return None
    return media_event(path, step, ts_ms, "histogram", data=data,
                       source=_source(type=value.get("type")))


def parquet_file_event(path: str, step: int | None, ts_ms: int, rel: str,
                       local: Path) -> ImportEvent:
    """A Parquet ``file_series`` row as an image event (or a file event for other files)."""
    name = Path(rel).name or Path(path).name
    mime = mime_for(name)
    facts: dict[str, Any] = {}
    kind = "file"
    if mime.startswith("image/"):
        found = _image_facts(local.read_bytes())
        if found is not None:
            mime, facts = found
            kind = "image"
    return media_event(path, step, ts_ms, kind, [MediaFile(local, mime, name, facts)],
                       source=_source(attribute_type="file_series", path=rel))


# --------------------------------------------------------------------------- FileSeries values


@dataclass
class _Group:
    key: str
    step: int | None
    ts_ms: int
    count: int
    items: dict[int, MediaFile] = field(default_factory=dict)


def image_point_events(points: Iterable[ImagePoint], mult: int, bridge_written: bool,
                       histograms: set[tuple[str, int]], warn: Warn) -> Iterator[ImportEvent]:
    """``FileSeries`` values as image events. In a bridge run, the items of one event are
    joined again and a histogram's PNG is left out when its JSON is there (``histograms``:
    the ``(key, step)`` of every histogram JSON found)."""
    groups: dict[tuple[str, int | None], _Group] = {}
    for p in points:
        step = N.decode_step(p.step, mult)
        if p.data is None:
            warn(f"image series {p.path!r} at step {step}: the op log's data is not base64; "
                 "not imported")
            continue
        if not p.data:
            warn(f"image series {p.path!r} at step {step}: the client logged it empty (an "
                 "image over Neptune's size limit); not imported")
            continue
        found = _image_facts(p.data)
        if found is None:
            warn(f"image series {p.path!r} at step {step}: not an image Pillow reads; "
                 "not imported")
            continue
        mime, size = found
        facts = N.decode_image_description(p.description) if bridge_written else None
        if facts is None:
            leaf = p.path.rsplit("/", 1)[-1]
            name = f"{leaf}_{step if step is not None else 'none'}{extension_for(mime, '.png')}"
            caption = p.name or p.description
            yield media_event(p.path, step, p.ts_ms, "image",
                              [MediaFile(p.data, mime, name, {**size, "caption": caption})],
                              source=_source(name=p.name, description=p.description))
            continue
        key = str(facts.get("key") or p.path)
        if facts.get("type") == "histogram":
            if step is not None and (key, step) in histograms:
                continue  # the JSON beside it holds the histogram itself
            warn(f"histogram {key!r} at step {step}: its edges and counts are missing; "
                 "imported as the image bridge rendered of it")
        extra = {k: v for k, v in facts.items()
                 if k not in ("type", "key", "item", "items", "name", "mime")}
        item = MediaFile(p.data, str(facts.get("mime") or mime),
                         str(facts.get("name") or f"{key.rsplit('/', 1)[-1]}.png"),
                         {**size, **extra})
        count = max(1, int(facts.get("items") or 1))
        group = groups.setdefault((key, step), _Group(key, step, p.ts_ms, count))
        group.items[int(facts.get("item") or 0)] = item
        if len(group.items) == group.count:
            del groups[(key, step)]
            yield _group_event(group)
    for group in groups.values():
        warn(f"image {group.key!r} at step {group.step}: {len(group.items)} of "
             f"{group.count} images found; imported without the others")
        yield _group_event(group)


def _group_event(group: _Group) -> ImportEvent:
    items = [group.items[i] for i in sorted(group.items)]
    return media_event(group.key, group.step, group.ts_ms, "image", items)


# --------------------------------------------------------------------------- files per step


@dataclass
class BridgeMedia:
    """The media a bridge run's file fields hold, and the file fields that are not media."""

    events: list[ImportEvent]
    used: set[int]  # indices of the file fields these events hold
    histograms: set[tuple[str, int]]
    long_texts: dict[tuple[str, int], tuple[Any, int]]  # (key, step) -> (reference, index)


def bridge_media_files(files: list[tuple[str, str, Any, float | None]], resolve: Resolve,
                       warn: Warn) -> BridgeMedia:
    """Media events from the descriptors bridge's adapter writes beside a media event's
    files (``<key>/step_<N>/media.json``, ``histograms/<key>/step_<N>/histogram.json``),
    and where long text points are kept whole (``texts/<key>/step_<N>/text.txt``); every
    other file field is left to the caller (see ``used``)."""
    dirs: dict[str, dict[str, tuple[int, Any]]] = {}
    for n, (path, _, ref, _) in enumerate(files):
        head, _, name = path.rpartition("/")
        dirs.setdefault(head, {})[name] = (n, ref)
    out = BridgeMedia([], set(), set(), {})
    for path, _, ref, _ in files:
        parsed = N.parse_media_step_field(path)
        if parsed is None:
            continue
        key, step, name = parsed
        text_key = N.relative(N.LONG_TEXT_DATA, key)
        if name == N.LONG_TEXT_FILE and text_key:
            n = dirs[path.rpartition("/")[0]][name][0]
            out.long_texts[(text_key, step)] = (ref, n)
            out.used.add(n)
            continue
        hist_key = N.relative(N.HISTOGRAM_DATA, key)
        if not (name == N.MEDIA_DESCRIPTOR or (name == N.HISTOGRAM_FILE and hist_key)):
            continue
        members = dirs[path.rpartition("/")[0]]
        try:
            found = _descriptor_event(members, name, resolve)
        except (ImportError_, OSError, ValueError, KeyError, TypeError) as exc:
            warn(f"media {key!r} at step {step}: {path!r} unreadable ({exc}); its files are "
                 "imported as plain files, not as a media event")
            continue
        if found is None:
            continue
        event, taken = found
        out.used.update(members[m][0] for m in (name, *taken))
        out.events.append(event)
        if name == N.HISTOGRAM_FILE and event.step is not None:
            out.histograms.add((event.key or "", event.step))
    return out


def _descriptor_event(members: Mapping[str, tuple[int, Any]], name: str,
                      resolve: Resolve) -> tuple[ImportEvent, set[str]] | None:
    """The event a descriptor describes, and the member files it took."""
    n, ref = members[name]
    local = resolve(ref, n)
    if local is None:
        raise ImportError_("the file is missing")
    try:
        doc = json.loads(local.read_text(encoding="utf-8"))
    except ValueError:
        return None  # not bridge's descriptor: a file that happens to have the name
    mark = doc.get(N.MEDIA_MARK) if isinstance(doc, dict) else None
    if not isinstance(mark, dict):
        return None
    payload = dict(mark["payload"])
    files: dict[str, str] = mark.get("files") or {}
    cache: dict[str, MediaFile] = {}
    taken: set[str] = set()

    def media_file(item: Mapping[str, Any]) -> MediaFile:
        sha = item["sha256"]
        if sha not in cache:
            member = files.get(sha)
            if member is None or member not in members:
                raise ImportError_(f"the file of {item.get('name')!r} is missing")
            where = resolve(members[member][1], members[member][0])
            if where is None:
                raise ImportError_(f"the file of {item.get('name')!r} is missing")
            facts = {k: v for k, v in item.items() if k not in ("sha256", "size", "mime", "name")}
            taken.add(member)
            cache[sha] = MediaFile(where, str(item.get("mime") or mime_for(member)),
                                   str(item.get("name") or member), facts)
        return cache[sha]

    items = [media_file(i) for i in payload.get("items") or () if "sha256" in i]
    data = payload.get("data")
    cells: dict[str, MediaFile] = {}
    if payload.get("type") == "table" and isinstance(data, Mapping):
        rows = []
        for row in data.get("rows") or ():
            out_row = []
            for cell in row if isinstance(row, list) else ():
                media = cell.get("media") if isinstance(cell, Mapping) else None
                if isinstance(media, Mapping):
                    refs = []
                    for item in media.get("items") or ():
                        ref = f"cell{len(cells)}"
                        cells[ref] = media_file(item)
                        refs.append({"file": ref, "mime": cells[ref].mime, "name": cells[ref].name,
                                     **cells[ref].facts})
                    cell = {**cell, "media": {**media, "items": refs}}
                out_row.append(cell)
            rows.append(out_row)
        data = {**data, "rows": rows}
    key = str(mark["key"])
    event = media_event(key, int(mark["step"]), int(mark["ts_ms"]), str(payload["type"]),
                        items, data=data, source=payload.get("source"), cells=cells or None)
    return event, taken
