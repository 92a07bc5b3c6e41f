"""Delivering spooled runs into trackio's local store, so ``trackio show`` displays them.

Each export becomes one request to the store process (:mod:`.store`), which writes through
trackio's ``SQLiteStorage``: a metrics row per metric point or media event with its original
step and ISO timestamp, a system_metrics row per point of bridge's stepless ``system/*``
series, an alert per ``event`` event, an artifact version (linked to the run) per artifact,
and the run's config (params, with tags, summaries,
notes, platform facts and the closing status under ``bridge/`` keys). Every row carries the
log id of its spool event (``names.log_id``) and trackio inserts with INSERT OR IGNORE on a
unique log id, so a batch replayed after a killed sync writes nothing twice; media files
have names derived from their event and are skipped when already there.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sqlite3
from pathlib import Path
from typing import Any, ClassVar, Sequence

from bridge.adapters.base import (AdapterError, BaseAdapter, Event, ExportResult, Kind, Limits,
                                  MissingDependency, RemoteRunLost, RunInfo,
                                  TransientError)
from bridge.adapters.trackio import names as N
from bridge.adapters.trackio.media import MediaOut, Refused, media_values
from bridge.adapters.trackio.store import StoreFailed, call_store
from bridge.spool.schema import read_only_uri

__all__ = ["TrackioAdapter"]

_OPTIONS = frozenset({"project", "dir", "spool_dir"})
_FILE_KINDS = {
    Kind.TEXT.value: "trackio keeps no run files (log_text)",
    Kind.DICT.value: "trackio keeps no run files (log_dict)",
    Kind.MODEL.value: "trackio has no logged models",
    Kind.DATASET.value: "trackio has no dataset inputs",
}


def _finite_or_marker(value: float | None) -> Any:
    """The value as trackio serializes it (``NaN``/``Infinity`` strings for non-finite)."""
    if value is None:
        return None
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


class TrackioAdapter(BaseAdapter):
    """bridge runs into a trackio directory (options: ``project``, ``dir``)."""

    name: ClassVar[str] = "trackio"
    limits: ClassVar[Limits] = Limits(max_events=1000)
    #: Each export starts a store process (about 0.6 s to import trackio): background sync
    #: delivers this backend every ``agent.session_interval`` while the run trains.
    session_per_export: ClassVar[bool] = True
    #: ``check_remote`` reads the project file: a wiped trackio directory is noticed.
    checks_remote: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise AdapterError(f"trackio: unknown option(s) {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(sorted(_OPTIONS - {'spool_dir'}))}")
        if importlib.util.find_spec("trackio") is None:
            raise MissingDependency(f"the trackio backend needs 'trackio': pip install "
                                    f"'tracking-bridge[{N.EXTRA}]'")
        self.project: str | None = options.get("project")
        self.root = (Path(options["dir"]).expanduser() if options.get("dir")
                     else N.default_dir()).resolve()

    # -- contract --------------------------------------------------------------------------------

    def _project(self, run: RunInfo) -> str:
        return self.project or run.project

    @staticmethod
    def _run_name(run: RunInfo) -> str:
        return run.name or run.run_id

    def open_run(self, run: RunInfo) -> str:
        """A trackio run exists by its rows: nothing to create. Its id is bridge's run id."""
        return run.run_id

    def check_remote(self, run: RunInfo) -> None:
        """Every export writes the run's config row: without it, the run is gone."""
        db = N.project_db(self.root, self._project(run))
        if not db.is_file():
            raise RemoteRunLost(f"trackio: {db} no longer exists")
        try:
            conn = sqlite3.connect(read_only_uri(db), uri=True, timeout=30)
            try:
                found = conn.execute(f"SELECT 1 FROM {N.CONFIGS} WHERE run_id = ? LIMIT 1",
                                     (run.run_id,)).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise TransientError(f"trackio: cannot read {db}: {exc}") from exc
        if found is None:
            raise RemoteRunLost(f"trackio: run {run.run_id} is not in {db}")

    def export(self, run: RunInfo, batch: Sequence[Event]) -> ExportResult:
        request, rejected = self._request(run, batch)
        try:
            call_store(self.root, request)
        except StoreFailed as exc:
            return ExportResult.retry(str(exc))
        return ExportResult.success(rejected)

    def close_run(self, run: RunInfo, status: str, end_time_ms: int) -> None:
        request = self._base(run)
        request["config"].update({N.CFG_STATUS: status, N.CFG_END: N.iso_from_ms(end_time_ms)})
        try:
            call_store(self.root, request)
        except StoreFailed as exc:
            raise TransientError(str(exc)) from exc

    # -- building a request ------------------------------------------------------------------------

    def _base(self, run: RunInfo) -> dict[str, Any]:
        config: dict[str, Any] = {N.CFG_CREATED: N.iso_from_ms(run.start_ms)}
        if run.group:
            config[N.CFG_GROUP] = run.group
        if run.notes:
            config[N.CFG_NOTES] = run.notes
        return {"project": self._project(run), "run": self._run_name(run), "run_id": run.run_id,
                "created_at": N.iso_from_ms(run.start_ms), "rows": [], "system": [],
                "alerts": [], "files": [], "artifacts": [], "config": config}

    @staticmethod
    def _artifact(req: dict[str, Any], run: RunInfo, ev: Event, lid: str) -> str | None:
        """Add an artifact to the request (a version of trackio's artifact ``name``, linked
        to the run as its output), or say why trackio cannot hold it."""
        payload = ev.payload if isinstance(ev.payload, dict) else {}
        files = list(payload.get("files") or [])
        if not files:
            return "artifact without files"
        problem = N.logical_path_problem([str(f.get("path") or "") for f in files])
        if problem:
            return problem
        entries = []
        for f in files:
            src = run.blob_path(str(f["sha256"]))
            if not src.is_file():
                return f"blob {str(f['sha256'])[:12]} of artifact file {f['path']!r} is missing"
            entries.append({"src": str(src), "path": f["path"]})
        key = ev.key or str(payload.get("name") or "artifact")
        atype = str(payload.get("type") or "file")
        req["artifacts"].append({
            "name": N.artifact_name(key), "type": atype, "files": entries,
            "metadata": {N.ARTIFACT_MARK: {"name": key, "type": atype, "ts_ms": ev.ts_ms,
                                           "step": ev.step, "event": lid}}})
        return None

    def _request(self, run: RunInfo,
                 batch: Sequence[Event]) -> tuple[dict[str, Any], dict[tuple[str, int], str]]:
        req = self._base(run)
        config = req["config"]
        media = MediaOut(req["project"], req["run"], run.blob_path)
        rejected: dict[tuple[str, int], str] = {}
        for ev in batch:
            ts = N.iso_from_ms(ev.ts_ms)
            lid = N.log_id(ev.file_id, ev.seq, stepless=ev.step is None)
            kind = str(ev.kind)
            if kind == Kind.METRIC:
                key = ev.key or ""
                value = _finite_or_marker(ev.value)
                if key.startswith(N.SYSTEM_PREFIX) and ev.step is None:
                    req["system"].append({"metrics": {key[len(N.SYSTEM_PREFIX):]: value},
                                          "ts": ts, "log_id": lid})
                else:
                    req["rows"].append({"metrics": {N.stored_key(key): value}, "step": ev.step,
                                        "ts": ts, "log_id": lid})
            elif kind == Kind.MEDIA:
                try:
                    values = media_values(media, ev.key or "", ev.step, ev.uid, ev.payload)
                except Refused as exc:
                    rejected[ev.uid] = f"trackio: {exc}"
                    continue
                req["rows"].append({"metrics": {N.stored_key(k): v for k, v in values.items()},
                                    "step": ev.step, "ts": ts, "log_id": lid})
            elif kind == Kind.PARAM:
                key = ev.key or ""
                if key in N.RESERVED_CONFIG or key.startswith(N.BRIDGE_CONFIG_PREFIX):
                    rejected[ev.uid] = (f"trackio: the config key {key!r} is reserved "
                                        "(trackio's own or bridge's)")
                else:
                    config[key] = ev.payload
            elif kind == Kind.TAG:
                config.setdefault(N.CFG_TAGS, {})[ev.key or ""] = (
                    ev.payload if isinstance(ev.payload, str) else json.dumps(ev.payload))
            elif kind == Kind.SUMMARY:
                config.setdefault(N.CFG_SUMMARY, {})[ev.key or ""] = ev.payload
            elif kind == Kind.NOTE:
                config[N.CFG_NOTES] = ev.payload
            elif kind == Kind.SYSTEM:
                config[N.CFG_SYSTEM] = ev.payload
            elif kind == Kind.ARTIFACT:
                problem = self._artifact(req, run, ev, lid)
                if problem:
                    rejected[ev.uid] = f"trackio: {problem}"
            elif kind == Kind.EVENT:
                req["alerts"].append({"title": ev.key or "", "text": json.dumps(ev.payload),
                                      "level": N.ALERT_LEVEL, "step": ev.step, "ts": ts,
                                      "alert_id": lid})
            else:
                why = _FILE_KINDS.get(kind, f"no place for {kind} events")
                rejected[ev.uid] = f"trackio: {why}"
        req["files"] = media.files
        return req, rejected
