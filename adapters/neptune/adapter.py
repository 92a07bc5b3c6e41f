"""Neptune backend on the ``neptune`` 1.x client: one bridge run is one Neptune run.

The bridge run id is Neptune's ``custom_run_id``, so a later sync session (async/sync mode)
continues the same remote run. Offline mode writes Neptune's own operation log under
``<data_dir>/.neptune/offline/``; ``neptune sync --path <data_dir> --project ws/proj``
uploads it later. The adapter reads that log back when it opens a run (:mod:`.history`), so
a replay after a killed sync adds no point twice. Each adapter's runs keep their files in
its own data directory without touching the process environment (:mod:`.datadir`). Field
names and formats come from :mod:`.names`; docs/backends/neptune.md shows the mapping.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from bridge.adapters.base import (
    AdapterError,
    BaseAdapter,
    Event,
    ExportResult,
    Limits,
    RunInfo,
    keep_private,
    require,
)
from bridge.adapters.neptune import names as N
from bridge.adapters.neptune.datadir import data_directory
from bridge.adapters.neptune.history import OpLogHistory, read_history
from bridge.adapters.neptune.media import deliver_media
from bridge.adapters.neptune.names import field as _path
from bridge.adapters.neptune.paths import PathRefused, Paths, collisions, empty_segments
from bridge.adapters.neptune.series import Series as _Series

__all__ = ["NeptuneAdapter"]

MODES = ("async", "sync", "offline")
_OPTIONS = {"project", "mode", "data_dir", "spool_dir"}
_INT32 = (-(2**31), 2**31 - 1)
_MAX_STRING = 16384  # Neptune truncates longer String fields
_MAX_SERIES_STRING = 1000  # Neptune truncates longer StringSeries values
_PROJECT_PART = re.compile(r"[^A-Za-z0-9-]+")
_KEYED = ("metric", "event", "param", "summary", "tag", "text", "dict", "artifact", "media")  # key -> path


# --------------------------------------------------------------------------- values


def _atom(value: Any) -> Any:
    """A JSON leaf as a value Neptune stores as-is (the client silently skips None, lists,
    NaN/inf and ints beyond 32 bits, so those become strings or floats here)."""
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        if _INT32[0] <= value <= _INT32[1]:
            return value
        return float(value) if abs(value) <= 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # 'nan', 'inf', '-inf'
    return json.dumps(value)  # None -> "null", lists -> JSON text


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """Nested dicts become Neptune namespaces; an empty dict is kept as the text ``{}``.
    A nested key Neptune would rewrite (empty segments) or two keys that would meet in one
    field (``{"a/b": 1, "a": {"b": 2}}``) raise :class:`PathRefused`."""
    out: dict[str, Any] = {}

    def walk(v: Any, path: str) -> None:
        if isinstance(v, Mapping):
            if not v:
                out[path] = "{}"
                return
            for k, child in v.items():
                problem = empty_segments(k, "nested key")
                if problem:
                    raise PathRefused(f"{problem} (under {path!r})")
                walk(child, f"{path}/{k}")
            return
        if path in out:
            raise PathRefused(f"two values would share the Neptune field {path!r}")
        out[path] = _atom(v)

    walk(value, prefix)
    problem = collisions(list(out))
    if problem:
        raise PathRefused(problem)
    return out


def _fingerprint(value: Any) -> tuple[str, Any]:
    """What an Assign* operation of this value looks like in the op log."""
    kind = {bool: "Bool", int: "Int", float: "Float", str: "String"}[type(value)]
    return (kind, value)


def _extension(name: str, default: str) -> str:
    suffix = Path(name).suffix
    return suffix[1:] if suffix else default


# --------------------------------------------------------------------------- series rule


@dataclass
class _Session:
    handle: Any  # neptune.Run
    remote_id: str
    run_dir: Path | None
    series: dict[str, _Series]
    fields: dict[str, tuple[str, Any]]
    tags: set[str]
    paths: "Paths"
    queued: dict[str, list[tuple[Event, int, Any]]] = field(default_factory=dict)


def _fsync(paths: Sequence[Path]) -> None:
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class NeptuneAdapter(BaseAdapter):
    """Delivers bridge events to Neptune (async/sync against a server, or offline)."""

    name: ClassVar[str] = "neptune"
    limits: ClassVar[Limits] = Limits(max_events=1000)

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise AdapterError(f"neptune: unknown option(s) {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(sorted(_OPTIONS))}")
        self.mode = str(options.get("mode", "async"))
        if self.mode not in MODES:
            raise AdapterError(f"neptune: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        self.project = options.get("project")
        data_dir = options.get("data_dir") or N.default_data_dir(options.get("spool_dir"))
        self.data_dir = Path(data_dir).resolve()
        self.neptune_dir = self.data_dir / N.DATA_DIR_NAME
        self._neptune = require("neptune", "neptune")
        self._errors = require("neptune.exceptions", "neptune")
        self._common_errors = require("neptune.common.exceptions", "neptune")
        self._File = require("neptune.types", "neptune").File
        self._sessions: dict[str, _Session] = {}

    # ------------------------------------------------------------------ contract

    def open_run(self, run: RunInfo) -> str:
        if run.run_id in self._sessions:
            return self._sessions[run.run_id].remote_id
        state = run.state
        state.setdefault("series", {})
        state.setdefault("tags", {})
        owners = state.setdefault("paths", {})
        history = read_history(self.neptune_dir, run.run_id) if self.mode == "offline" else OpLogHistory()
        series = self._series(state["series"], history)
        handle, run_dir = self._init(run)
        remote_id = self._remote_id(handle, run)
        if self.mode == "offline":
            # `neptune sync` makes one Neptune run of every offline directory: say how many.
            seen = state.setdefault("offline_dirs", [])
            for d in history.dirs + ([run_dir] if run_dir is not None else []):
                uid = d.name.split("__")[1] if "__" in d.name else d.name
                if uid not in seen:
                    seen.append(uid)
        known = set(series) | set(history.fields)
        paths = Paths(owners, unknown=known - set(owners))
        session = _Session(handle, remote_id, run_dir, series, dict(history.fields),
                           set(history.tags), paths)
        self._sessions[run.run_id] = session
        # Written in every session: it is how the op log of a session is found again.
        handle[N.RUN_ID] = run.run_id
        self._assign(session, N.PROJECT, run.project)
        if run.group:
            self._assign(session, N.GROUP, run.group)
        if run.start_ms:
            handle[N.START_TIME] = N.time_value(run.start_ms)
        handle.wait()
        return remote_id

    def export(self, run: RunInfo, batch: Sequence[Event]) -> ExportResult:
        session = self._session(run)
        rejected: dict[tuple[str, int], str] = {}
        snapshot = {k: (s.last_step, s.last_value, s.last_ts) for k, s in session.series.items()}
        try:
            for ev in batch:
                try:
                    reason = self._deliver(session, run, ev)
                except (self._errors.MetadataInconsistency, TypeError, ValueError) as exc:
                    reason = f"neptune refused {ev.kind} {ev.key!r}: {exc}"
                if reason:
                    rejected[ev.uid] = reason
            rejected.update(self._flush_series(session))
            session.handle.wait()
        except self._common_errors.NeptuneException as exc:
            for key in list(session.series):
                s = session.series[key]
                if key not in snapshot:
                    s.last_step, s.last_value, s.last_ts = None, None, None
                else:
                    s.last_step, s.last_value, s.last_ts = snapshot[key]
            session.queued.clear()
            return ExportResult.retry(f"neptune: {type(exc).__name__}: {exc}")
        if session.run_dir is not None:
            _fsync(sorted(session.run_dir.glob(N.OP_LOG_GLOB)) + [session.run_dir / "last_put_version"])
            keep_private(session.run_dir)
        for key, s in session.series.items():
            if s.last_step is not None:
                run.state["series"][key] = s.to_state()
        return ExportResult.success(rejected)

    def close_run(self, run: RunInfo, status: str, end_time_ms: int) -> None:
        session = self._session(run)
        handle = session.handle
        handle[N.STATUS] = status
        handle[N.END_TIME] = N.time_value(end_time_ms)
        handle[N.SYS_FAILED] = N.is_failed(status)
        handle.stop()
        if session.run_dir is not None:
            _fsync(sorted(session.run_dir.glob(N.OP_LOG_GLOB)))
            keep_private(session.run_dir)
        del self._sessions[run.run_id]

    def shutdown(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            session.handle.stop()

    def run_url(self, run: RunInfo, remote_id: str) -> str | None:
        """Online: the run's page. Offline: how many offline directories (and so, after
        ``neptune sync``, how many Neptune runs) this bridge run has, and where."""
        if self.mode != "offline":
            session = self._sessions.get(run.run_id)
            return str(session.handle.get_url()) if session else None
        dirs = run.state.get("offline_dirs") or []
        n = len(dirs)
        return (f"{n} offline dir{'s' if n != 1 else ''} ({remote_id}; `neptune sync` makes "
                f"{n} Neptune run{'s' if n != 1 else ''}) in {self.neptune_dir / N.OFFLINE_DIR}")

    # ------------------------------------------------------------------ opening

    def _project(self, run: RunInfo) -> str | None:
        """Option, then NEPTUNE_PROJECT, then the bridge project if it names a workspace."""
        if self.project:
            return str(self.project)
        if os.environ.get("NEPTUNE_PROJECT"):
            return None  # the client reads it itself
        if "/" in run.project:
            ws, _, name = run.project.partition("/")
            return f"{ws}/{_PROJECT_PART.sub('-', name).strip('-')}"
        if self.mode == "offline":
            return None
        raise AdapterError(
            f"neptune: project {run.project!r} has no workspace; set the backend option "
            "project = 'workspace/project' or NEPTUNE_PROJECT"
        )

    def _init(self, run: RunInfo) -> tuple[Any, Path | None]:
        offline = self.neptune_dir / N.OFFLINE_DIR
        before = set(offline.glob(N.RUN_DIR_GLOB)) if offline.is_dir() else set()
        notes = run.state.get("notes", run.notes)
        with data_directory(self.neptune_dir):
            handle = self._neptune.init_run(
                project=self._project(run),
                custom_run_id=run.run_id,
                mode=self.mode,
                name=run.name,
                description=notes if notes is not None else "",
                capture_stdout=False,
                capture_stderr=False,
                capture_hardware_metrics=False,
                capture_traceback=False,
                fail_on_exception=False,
                git_ref=False,
                source_files=[],
            )
        # The client records the *sync* process's script as source code: not the run's.
        if handle.exists(N.SOURCE_CODE):
            del handle[N.SOURCE_CODE]
        run_dir = None
        if self.mode == "offline":
            new = [d for d in offline.glob(f"{N.RUN_DIR_GLOB}__{os.getpid()}__*") if d not in before]
            run_dir = new[0] if len(new) == 1 else None
        return handle, run_dir

    def _remote_id(self, handle: Any, run: RunInfo) -> str:
        if self.mode == "offline":
            return str(handle.get_url())  # "offline/<uuid>"; `neptune sync` assigns the real id
        return str(handle[N.SYS_ID].fetch())

    @staticmethod
    def _series(saved: Mapping[str, Any], history: OpLogHistory) -> dict[str, _Series]:
        out: dict[str, _Series] = {}
        for key, (step, value, ts) in saved.items():
            out[key] = _Series(step, value, ts)
        for key, points in history.points.items():
            s = out.setdefault(key, _Series())
            floor = s.last_step if s.last_step is not None else None
            for step, value in points.items():
                if floor is None or step > floor:
                    s.seen[step] = value
            s.stamps = [p for p in history.stamps.get(key, []) if floor is None or p[2] > floor]
            top = max(points)
            if s.last_step is None or top > s.last_step:
                s.last_step, s.last_value = top, points[top]
                s.last_ts = max((ts for ts, _, st in s.stamps if st == top), default=None)
        return out

    def _session(self, run: RunInfo) -> _Session:
        if run.run_id not in self._sessions:
            self.open_run(run)
        return self._sessions[run.run_id]

    # ------------------------------------------------------------------ delivery

    def _deliver(self, session: _Session, run: RunInfo, ev: Event) -> str | None:
        """Translate one event; returns a rejection reason or None."""
        kind, key, payload = ev.kind, ev.key or "", ev.payload
        if kind in _KEYED:
            problem = empty_segments(key, f"{kind} key")
            if problem:
                return problem
        try:
            return self._deliver_checked(session, run, ev, kind, key, payload)
        except PathRefused as exc:
            return f"{kind} {key!r} refused: {exc}"

    def _deliver_checked(self, session: _Session, run: RunInfo, ev: Event, kind: str, key: str,
                         payload: Any) -> str | None:
        if kind == "metric":
            if key.split("/", 1)[0] in N.RESERVED:
                return f"metric {key!r} would write into Neptune's reserved namespace {key.split('/')[0]!r}"
            self._check(session, f"metric {key!r}", [key])
            reason = self._queue_point(session, key, ev, ev.value, numeric=True)
            if not reason:
                session.paths.claim(f"metric {key!r}", [key])
            return reason
        if kind == "event":
            text = N.encode_event(payload)
            if len(text) > _MAX_SERIES_STRING:
                return f"event {key!r} is {len(text)} characters; Neptune truncates string series values at {_MAX_SERIES_STRING}"
            name = f"{N.EVENTS}/{key}"
            self._check(session, f"event {key!r}", [name])
            reason = self._queue_point(session, name, ev, text, numeric=False)
            if not reason:
                session.paths.claim(f"event {key!r}", [name])
            return reason
        if kind == "param":
            return self._assign_tree(session, f"param {key!r}", f"{N.PARAMETERS}/{key}", payload)
        if kind == "summary":
            return self._assign_tree(session, f"summary {key!r}", f"{N.SUMMARY}/{key}", payload)
        if kind == "system":
            reason = self._assign_tree(session, "system facts", N.ENVIRONMENT, payload)
            host = payload.get("hostname") if isinstance(payload, Mapping) else None
            if isinstance(host, str) and not reason:
                self._assign(session, N.SYS_HOSTNAME, host)
            return reason
        if kind == "tag":
            root = f"{N.TAGS}/{key}"
            self._check(session, f"tag {key!r}", [root])
            reason = self._tag(session, run, key, "" if payload is None else str(payload))
            session.paths.claim(f"tag {key!r}", [root])
            return reason
        if kind == "note":
            text = "" if payload is None else str(payload)
            reason = self._assign(session, N.SYS_DESCRIPTION, text)
            if not reason:
                run.state["notes"] = text
            return reason
        if kind in ("text", "dict"):
            path, owner = f"{N.FILES}/{key}", f"file {key!r}"  # text and dict share files/
            self._check(session, owner, [path])
            content = str(payload) if kind == "text" else json.dumps(payload, indent=2)
            reason = self._upload_content(session, path, content, _extension(key, "txt" if kind == "text" else "json"))
            if not reason:
                session.paths.claim(owner, [path])
            return reason
        if kind == "artifact":
            return self._artifact(session, run, key, payload)
        if kind == "media":  # the layout: names.py, "media events"; the code: media.py
            return deliver_media(self, session, run, ev)
        if kind in ("model", "dataset"):  # MLflow's logged models and datasets: models_out.py
            from bridge.adapters.neptune.models_out import deliver

            return deliver(self, session, run, ev)
        return f"the neptune backend has no mapping for event kind {kind!r}"

    @staticmethod
    def _check(session: _Session, owner: str, paths: Sequence[str]) -> None:
        """Raise PathRefused when ``owner`` may not write these Neptune fields."""
        for path in paths:
            problem = session.paths.conflict(path, owner)
            if problem:
                raise PathRefused(problem)

    def _queue_point(self, session: _Session, name: str, ev: Event, value: Any, numeric: bool) -> str | None:
        if numeric:
            if name.split("/", 1)[0] in N.RESERVED:
                return f"metric {name!r} would write into Neptune's reserved namespace {name.split('/')[0]!r}"
            if value is None or not math.isfinite(value):
                return f"Neptune 1.x does not store NaN/inf in a float series (the client drops them): {name!r} = {value!r} at step {ev.step}"
            value = float(value)
        series = session.series.setdefault(name, _Series())
        verdict, detail = series.classify(name, ev.step, value, ev.ts_ms)
        if verdict == "reject":
            return str(detail)
        if verdict == "new":
            session.queued.setdefault(name, []).append((ev, int(detail), value))
        return None

    def _flush_series(self, session: _Session) -> dict[tuple[str, int], str]:
        """One LogFloats/LogStrings operation per series and batch, original timestamps."""
        rejected: dict[tuple[str, int], str] = {}
        queued, session.queued = session.queued, {}
        for name, points in queued.items():
            try:
                session.handle[name].extend(
                    [v for _, _, v in points],
                    steps=[N.encode_step(s) for _, s, _ in points],
                    timestamps=[ev.ts_ms / 1000 for ev, _, _ in points],
                )
            # AttributeError: the client's answer to a series over an existing namespace
            except (self._errors.MetadataInconsistency, TypeError, ValueError, AttributeError) as exc:
                for ev, _, _ in points:
                    rejected[ev.uid] = f"neptune refused series {name!r}: {exc}"
                continue
            series = session.series[name]
            for ev, step, value in points:
                series.seen[step] = value
        return rejected

    def _assign(self, session: _Session, path: str, value: Any) -> str | None:
        if isinstance(value, str) and len(value) > _MAX_STRING:
            return f"{path!r} is {len(value)} characters; Neptune truncates string fields at {_MAX_STRING}"
        fp = _fingerprint(value)
        if session.fields.get(path) == fp:
            return None  # the same value is already there (a replay)
        session.handle[path] = value
        session.fields[path] = fp
        return None

    def _assign_tree(self, session: _Session, owner: str, prefix: str, value: Any) -> str | None:
        leaves = _leaves(value, prefix)
        self._check(session, owner, list(leaves))
        reasons = [r for p, v in leaves.items() if (r := self._assign(session, p, v))]
        session.paths.claim(owner, list(leaves))
        return "; ".join(reasons) or None

    def _tag(self, session: _Session, run: RunInfo, key: str, value: str) -> str | None:
        label = N.tag_label(key, value)
        old = run.state["tags"].get(key)
        old_label = None if old is None else N.tag_label(key, old)
        if old_label and old_label != label and old_label in session.tags:
            # An offline session starts a new op log without sys/tags: nothing to remove there.
            if session.handle.exists(N.SYS_TAGS):
                session.handle[N.SYS_TAGS].remove(old_label)
            session.tags.discard(old_label)
        if label not in session.tags:
            session.handle[N.SYS_TAGS].add(label)
            session.tags.add(label)
        reason = self._assign(session, _path(N.TAGS, key), value)
        run.state["tags"][key] = value
        return reason

    def _upload_content(self, session: _Session, path: str, content: str, ext: str) -> str | None:
        fp = ("content", hashlib.sha256(content.encode("utf-8")).hexdigest())
        if session.fields.get(path) == fp:
            return None
        session.handle[path].upload(self._File.from_content(content, extension=ext))
        session.fields[path] = fp
        return None

    def _artifact(self, session: _Session, run: RunInfo, name: str, payload: Mapping[str, Any]) -> str | None:
        files = list(payload.get("files") or [])
        missing = [f["path"] for f in files if not run.blob_path(f["sha256"]).is_file()]
        if missing:
            return f"artifact {name!r}: blob(s) missing from the spool for {', '.join(missing)}"
        single = not payload.get("is_dir") and len(files) == 1
        if not single:
            for f in files:
                problem = empty_segments(f["path"], "member path")
                if problem:
                    return f"artifact {name!r}: {problem}"
        leaves = [f"{N.ARTIFACTS}/{name}"] if single else [f"{N.ARTIFACTS}/{name}/{f['path']}" for f in files]
        leaves.append(f"{N.MANIFESTS}/{name}")  # the manifest
        problem = collisions(leaves)
        if problem:
            return f"artifact {name!r}: {problem}"
        self._check(session, f"artifact {name!r}", leaves)
        session.paths.claim(f"artifact {name!r}", leaves)
        for f in files:
            path = _path(N.ARTIFACTS, name) if single else _path(N.ARTIFACTS, name, f["path"])
            blob = str(run.blob_path(f["sha256"]))
            fp = ("file", blob)
            if session.fields.get(path) == fp:
                continue
            ext = _extension(f["path"] if not single else (f["path"] or name), "")
            session.handle[path].upload(self._File.from_path(blob, extension=ext or None))
            session.fields[path] = fp
        return self._assign(session, _path(N.MANIFESTS, name), N.encode_manifest(payload))
