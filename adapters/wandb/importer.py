"""Import W&B runs: offline run directories (``.wandb`` logs) or, online, the public API.

Offline is read with bridge's own ``.wandb`` reader (:mod:`bridge.adapters.wandb.log`,
one pass per job through :mod:`bridge.adapters.wandb.records`):
every session directory of one run id (``offline-run-<time>-<id>[-n]``, several when a
run was resumed or written by bridge's adapter, one per confirmed batch) is merged in
start order. History is streamed row by row, so a run of millions of points imports in
bounded memory. Runs that bridge's W&B adapter wrote are recognised (``bridge/step`` as
step, ``key:value`` labels as tags, ``bridge/system.json`` and ``bridge/events/*`` files
back into system facts and events), so ``bridge verify`` reads them back faithfully; those
names are the adapter's own, from :mod:`bridge.adapters.wandb.names`.

History media (``image-file``, ``histogram``, ``table-file``, ``audio-file``, ``video-file``,
``html-file``, ``object3D-file`` and their list forms) and strings become media events at
their row's step and time, joined with their files under ``files/media/`` and, for a table,
with the images of the run-table artifact W&B staged (:mod:`~bridge.adapters.wandb.media_import`);
what was joined is not imported again as a file or an artifact.

``location = "wandb://entity/project"`` reads the public API (``wandb.Api().runs`` and
``run.scan_history``) instead; that path needs credentials and is tested against recorded
GraphQL responses served on loopback, not against a live server.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from bridge.adapters.wandb import names
from bridge.adapters.wandb.names import (
    API_STATES,
    HISTORY_SKIP_KEYS,
    INTERNAL_FILES,
    INTERNAL_KEY,
    STEP_KEY,
    manifest_md5,
    session_key,
    status_of_exit,
)
from bridge.adapters.wandb.records import history_and_summary, read_info
from bridge.adapters.importing import (
    POINTS_BATCH,
    ImportError_,
    ImportEvent,
    MetricPoints,
    SourceRun,
    artifact_event,
    expand,
    resolve_source,
    safe_relative_path,
    take_points,
)

__all__ = ["WandbImporter", "status_of_exit"]

log = logging.getLogger("bridge.importers.wandb")

_OPTIONS = {"skip_corrupt", "entity", "per_page", "trusted_roots"}


@dataclass
class _Fragments:
    """The session directories of one W&B run id, oldest first."""

    run_id: str
    dirs: list[Path] = field(default_factory=list)


class WandbImporter:
    """W&B runs as bridge runs; see the module docstring."""

    name: ClassVar[str] = "wandb"

    def __init__(self, location: str | Path | None, project: str | None = None,
                 **opts: Any) -> None:
        unknown = set(opts) - _OPTIONS
        if unknown:
            raise ImportError_(f"wandb: unknown option(s) {', '.join(sorted(unknown))}")
        if location is None:
            raise ImportError_("wandb: a location is needed (a directory or wandb://entity/project)")
        self.location = str(location)
        self.project = project
        self.skip_corrupt = bool(opts.get("skip_corrupt", False))
        self.per_page = int(opts.get("per_page", 1000))
        # Files are read only inside the location or these directories (see resolve_source).
        self.roots: list[Path] = [Path(self.location)]
        self.roots += [Path(r) for r in opts.get("trusted_roots") or ()]
        self.warnings: list[str] = []  # artifacts or files skipped, with the reason

    # -- listing -----------------------------------------------------------------

    def runs(self) -> Iterator[SourceRun]:
        if self.location.startswith("wandb://"):
            yield from self._api_runs(self.location[len("wandb://"):])
            return
        root = Path(self.location)
        if not root.exists():
            raise ImportError_(f"wandb: {root} does not exist")
        for frags in _find_fragments(root).values():
            frags.dirs = [d for d in frags.dirs if self._session_inside(d)]
            run = self._describe(frags) if frags.dirs else None
            if run is not None:
                yield run

    def _session_inside(self, session: Path) -> bool:
        """A session dir, and the ``.wandb`` log in it, must really be inside the roots: a
        symlinked session would import another run's history from anywhere on the disk."""
        try:
            for path in (session, *session.glob("*.wandb")):
                resolve_source(path, self.roots)
        except ImportError_ as exc:
            self._warn(f"session {session.name} refused: {exc}")
            return False
        return True

    def _describe(self, frags: _Fragments) -> SourceRun | None:
        from bridge.adapters.wandb.log import WandbLogError

        infos = []
        for d in frags.dirs:
            try:
                infos.append(read_info(d, self.skip_corrupt))
            except (OSError, WandbLogError) as exc:
                raise ImportError_(f"wandb: cannot read {d}: {exc}") from exc
        if not infos:
            return None
        first, last = infos[0], infos[-1]
        bridge_written = any(m.get("name") == STEP_KEY for i in infos for m in i.metrics)
        start_ms = int(first.start_time * 1000) if first.start_time else 0
        end_ms = None
        if last.exit_code is not None and last.start_time:
            end_ms = int((last.start_time + (last.runtime or 0)) * 1000)
        name = next((i.name for i in reversed(infos) if i.name), None)
        notes = next((i.notes for i in reversed(infos) if i.notes), None)
        group = next((i.group for i in reversed(infos) if i.group), None)
        project = self.project or next((i.project for i in reversed(infos) if i.project), "") or ""
        extra = {}
        if any(i.truncated for i in infos):
            extra["bridge.import.truncated"] = "true"
        return SourceRun(
            source="wandb", source_id=frags.run_id, project=project, name=name, notes=notes,
            group=group, start_ms=start_ms, end_ms=end_ms,
            status=status_of_exit(last.exit_code), handle=(frags.dirs, infos, bridge_written),
            extra_tags=extra,
        )

    # -- events -------------------------------------------------------------------

    def events(self, run: SourceRun) -> Iterator[ImportEvent]:
        return expand(self.stream(run))

    def stream(self, run: SourceRun) -> Iterator[ImportEvent | MetricPoints]:
        """The run's events, its metric points gathered as :class:`MetricPoints` (a history
        row holds a step's points; the sink writes them without a call a point)."""
        if self.location.startswith("wandb://"):
            yield from self._api_events(run)
            return
        dirs, infos, bridge_written = run.handle
        t0 = run.start_ms
        config: dict[str, Any] = {}
        summary: dict[str, Any] = {}
        for info in infos:  # a resumed session updates what the earlier ones set
            config.update(info.config)
        for key, value in config.items():
            yield ImportEvent("param", key, t0, payload=value)
        labels = next((i.tags for i in reversed(infos) if i.tags), [])
        yield from _tags(labels, bridge_written, t0)
        series = _LastValues()
        from bridge.adapters.wandb.media_import import MediaJoin

        media = MediaJoin(self.roots, [a for i in infos for a in i.artifacts], self._warn,
                          bridge_written)
        flat: list[Any] = []  # points since the last event, handed over as a copy
        for d in dirs:
            session_summary: dict[str, Any] = {}
            for row in history_and_summary(d, self.skip_corrupt, session_summary):
                for ev in _row_events(row, bridge_written, t0, series, flat, media, d):
                    if flat:  # the points before it go first: the order is kept
                        yield take_points(flat)
                    yield ev
                if len(flat) >= POINTS_BATCH:
                    yield take_points(flat)
            summary.update(session_summary)  # a resumed session updates the earlier ones
        if flat:
            yield take_points(flat)
        for key, value in summary.items():
            if key.startswith("_") or key in HISTORY_SKIP_KEYS or series.is_auto_summary(key, value):
                continue
            yield ImportEvent("summary", key, t0, payload=value)
        with tempfile.TemporaryDirectory(prefix="bridge-wandb-") as tmp:
            from bridge.adapters.wandb.media_import import BridgeMediaFiles

            bridge_media = BridgeMediaFiles() if bridge_written else None
            for info in infos:
                yield from self._files(info, bridge_written, t0, Path(tmp), media.used_files,
                                       bridge_media)
            if bridge_media is not None:
                yield from bridge_media.events()
            seen: set[tuple[str, str]] = set()
            for info in infos:
                for art in info.artifacts:
                    if art.get("client_id") in media.used_artifacts:
                        continue  # a table's images, imported with the table
                    if (art["name"], art["digest"]) in seen:
                        continue  # a replayed batch logs the same artifact again
                    seen.add((art["name"], art["digest"]))
                    ev = self._artifact(art, t0)
                    if ev is not None:
                        yield ev

    def _files(self, info: Any, bridge_written: bool, ts: int, tmp: Path,
               media_files: set[tuple[Path, str]] = frozenset(),  # type: ignore[assignment]
               bridge_media: Any = None) -> Iterator[ImportEvent]:
        files_dir = info.path.parent / "files"
        for rel in info.files:
            if (info.path.parent, rel) in media_files:
                continue  # imported with its history row, as media
            local = files_dir / rel
            try:
                safe = safe_relative_path(rel)
            except ImportError_ as exc:
                self._warn(f"file {rel!r} of {info.path.parent.name}: {exc}")
                continue
            try:
                local = resolve_source(local, self.roots)
            except ImportError_ as exc:
                self._warn(f"file {rel!r} of {info.path.parent.name} refused: {exc}")
                continue
            if not local.is_file():
                self._warn(f"file {rel!r} of {info.path.parent.name} is not a regular file")
                continue
            if rel == names.METADATA_FILE:
                facts = _read_json(local)
                if isinstance(facts, dict):
                    yield ImportEvent("system", "system", ts, payload=facts)
                continue
            if rel in INTERNAL_FILES:
                continue
            if bridge_media is not None and bridge_media.add(safe, local):
                continue  # a file/tensor media event, read back once all sessions are seen
            if bridge_written:
                yield from _bridge_file(safe, local, ts)
            else:
                yield artifact_event(safe, [(Path(safe).name, local)], ts)

    def _artifact(self, art: dict[str, Any], ts: int) -> ImportEvent | None:
        """An artifact from its manifest. ``local_path`` is absolute (W&B's staging copy,
        outside the run dir), so a file outside the roots is read only when its bytes match
        the entry's MD5 digest; anything else is refused with the whole artifact."""
        files = []
        try:
            for f in art["files"]:
                local = Path(f["local_path"]) if f.get("local_path") else None
                if local is None or not os.path.lexists(local):
                    self._warn(f"artifact {art['name']!r}: file {f['path']!r} has no local copy")
                    return None
                files.append((f["path"], resolve_source(local, self.roots,
                                                        digest=manifest_md5(f.get("digest")))))
            return artifact_event(art["name"], files, ts, art.get("type") or "file")
        except ImportError_ as exc:
            self._warn(f"artifact {art['name']!r} refused: {exc}")
            return None

    # -- the public API (wandb://entity/project) ------------------------------------

    def _api_runs(self, path: str) -> Iterator[SourceRun]:
        """Runs of ``entity/project`` through ``wandb.Api`` (credentials and server from
        wandb's own login or ``WANDB_API_KEY`` / ``WANDB_BASE_URL``). Tested against
        recorded GraphQL responses, not a live server."""
        from bridge.adapters.base import require

        wandb = require("wandb", "wandb")
        entity, _, project = path.strip("/").partition("/")
        if not entity or not project:
            raise ImportError_(f"wandb: expected wandb://entity/project, got wandb://{path}")
        api = wandb.Api(timeout=60)
        for r in api.runs(f"{entity}/{project}", per_page=self.per_page):
            start_ms = _iso_ms(getattr(r, "created_at", None))
            status = API_STATES.get(str(getattr(r, "state", "") or "").lower(), "FINISHED")
            yield SourceRun(source="wandb", source_id=r.id, project=self.project or project,
                            name=r.name, notes=getattr(r, "notes", None) or None,
                            group=getattr(r, "group", None) or None, start_ms=start_ms,
                            end_ms=_api_end_ms(r, start_ms, status),
                            status=status, handle=("api", r))

    def _api_events(self, run: SourceRun) -> Iterator[ImportEvent | MetricPoints]:
        r = run.handle[1]
        t0 = run.start_ms
        # ``config`` already holds the unwrapped user values; wandb's own keys
        # (``_wandb``, ``wandb_version``) are kept apart in ``rawconfig``.
        config = {k: v for k, v in dict(r.config or {}).items() if not k.startswith("_")}
        for key, value in config.items():
            yield ImportEvent("param", key, t0, payload=value)
        bridge_written = False
        # No local cache: a later import of a still-running run must see its new rows.
        rows = r.scan_history(page_size=self.per_page, use_cache=False)
        series = _LastValues()
        tags_done = False
        flat: list[Any] = []
        for row in rows:
            if not tags_done:
                bridge_written = STEP_KEY in row
                yield from _tags(list(r.tags or []), bridge_written, t0)
                tags_done = True
            for ev in _row_events(row, bridge_written, t0, series, flat):
                if flat:
                    yield take_points(flat)
                yield ev
            if len(flat) >= POINTS_BATCH:
                yield take_points(flat)
        if flat:
            yield take_points(flat)
        if not tags_done:
            yield from _tags(list(r.tags or []), False, t0)
        # ``summary_metrics`` is the plain JSON dict; ``r.summary`` would wrap it and may
        # download the deep-summary file for media values.
        for key, value in dict(r.summary_metrics or {}).items():
            if key.startswith("_") or key in HISTORY_SKIP_KEYS or series.is_auto_summary(key, value):
                continue
            yield ImportEvent("summary", key, t0, payload=value)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("wandb import: %s", message)


# -- helpers ---------------------------------------------------------------------------


def _find_fragments(root: Path) -> dict[str, _Fragments]:
    """Session dirs under ``root`` (a run dir, a ``wandb/`` dir or its parent), by run id."""
    candidates: list[Path] = []
    if session_key(root.name) and root.is_dir():
        candidates.append(root)
    for base in (root, root / names.WANDB_SUBDIR):
        if base.is_dir():
            candidates.extend(d for d in sorted(base.iterdir()) if d.is_dir())
    found: dict[str, list[tuple[tuple[str, int], Path]]] = {}
    for d in dict.fromkeys(candidates):
        key = session_key(d.name)
        if key is None or not any(d.glob("*.wandb")):
            continue
        found.setdefault(key[1], []).append(((key[0], key[2]), d))
    return {rid: _Fragments(rid, [d for _, d in sorted(v)]) for rid, v in sorted(found.items())}


def _tags(labels: list[str], bridge_written: bool, ts: int) -> Iterator[ImportEvent]:
    for label in labels:
        key, value = names.parse_label(label, bridge_written)
        yield ImportEvent("tag", key, ts, payload=value)


class _LastValues:
    """Last and last finite value per metric key: W&B's automatic summary (and the one
    bridge's adapter writes) repeats them, so they are not imported as summaries."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.finite: dict[str, float] = {}
        self.media: dict[str, Any] = {}  # last text or media descriptor per media key

    def add_media(self, key: str, value: Any) -> None:
        self.media[key] = value

    def add(self, key: str, value: float) -> None:
        self.last[key] = value
        if math.isfinite(value):
            self.finite[key] = value

    def is_auto_summary(self, key: str, value: Any) -> bool:
        if key in self.media:  # W&B's summary repeats the last media value of a key
            return value == self.media[key] or (isinstance(value, dict) and "_type" in value)
        if key not in self.last or isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        v = float(value)
        return any(
            x is not None and (x == v or (math.isnan(x) and math.isnan(v)))
            for x in (self.last.get(key), self.finite.get(key))
        )


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in value.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and "_type" not in v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _row_events(row: dict[str, Any], bridge_written: bool, t0: int,
                series: _LastValues, flat: list[Any], media: Any = None,
                session: Path | None = None) -> Iterator[ImportEvent]:
    """A history row's events: numbers are metric points, appended to ``flat`` (see
    :class:`MetricPoints`); offline (``media`` and the row's ``session`` dir given), strings
    and media descriptors are media events joined with their files
    (:mod:`~bridge.adapters.wandb.media_import`); anything else is an event."""
    step = names.row_step(row)
    step = int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None
    ts_ms = names.row_ts_ms(row)
    ts_ms = t0 if ts_ms is None else ts_ms
    nested = False
    for value in row.values():
        if isinstance(value, dict):
            nested = True
            break
    last, finite, point = series.last, series.finite, flat.extend
    for key, value in (_flatten(row) if nested else row).items():
        if key in HISTORY_SKIP_KEYS or key.startswith(INTERNAL_KEY):
            continue
        cls = value.__class__
        if cls is float or cls is int or (
                isinstance(value, (int, float)) and not isinstance(value, bool)):
            v = float(value)
            last[key] = v  # _LastValues.add, inline: once per point
            if v - v == 0.0:
                finite[key] = v
            point((key, step, ts_ms, v))
        elif value is not None:  # text, media or booleans: not a numeric series
            found = None if media is None or session is None else media.events(
                session, key, value, step, ts_ms)
            if found is not None:
                series.add_media(key, value)
                yield from found
                continue
            yield ImportEvent("event", key, ts_ms, step=step, payload={"value": value})


def _api_end_ms(r: Any, start_ms: int, status: str) -> int | None:
    """End of an API run: start + ``_runtime`` (seconds) of its summary, else its last
    heartbeat; a running run has none."""
    if status == "RUNNING":
        return None
    runtime = dict(getattr(r, "summary_metrics", None) or {}).get(names.RUNTIME_KEY)
    if isinstance(runtime, (int, float)) and not isinstance(runtime, bool):
        return start_ms + int(round(float(runtime) * 1000))
    heartbeat = getattr(r, "heartbeat_at", None)
    return _iso_ms(heartbeat) if heartbeat else None


def _iso_ms(text: Any) -> int:
    from datetime import datetime, timezone

    if not text:
        return 0
    dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _bridge_file(rel: str, local: Path, ts: int) -> Iterator[ImportEvent]:
    """Files bridge's adapter wrote: system facts, events, and text/dict events."""
    if rel == names.SYSTEM_FILE:
        facts = _read_json(local)
        yield ImportEvent("system", "system", ts, payload=facts if isinstance(facts, dict) else {})
        return
    if names.is_events_file(rel):
        with open(local, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                e = json.loads(line)
                yield ImportEvent("event", e.get("name"), int(e.get("ts_ms") or ts),
                                  step=e.get("step"), payload=e.get("payload"))
        return
    try:
        text = local.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        yield artifact_event(rel, [(Path(rel).name, local)], ts)
        return
    if rel.endswith(".json"):
        try:
            yield ImportEvent("dict", rel, ts, payload=json.loads(text))
            return
        except ValueError:
            pass
    yield ImportEvent("text", rel, ts, payload=text)

