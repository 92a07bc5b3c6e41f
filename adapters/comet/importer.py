"""Import Comet experiments from offline archives (``comet upload``'s input) or, for a
``comet://workspace/project`` location, from Comet's REST API v2 through ``comet_ml.API``.

Every archive of one experiment key is merged, in write order: bridge's archives carry a
ledger with their write order; Comet's own are ordered by their ``start_time``, then file
time. Archives bridge's Comet adapter wrote are recognised by the names both sides take from
:mod:`bridge.adapters.comet.names` (the ledger's run id as the source id, bridge's others for
group, notes and status, bridge's asset metadata for artifacts and events), so
``bridge verify`` reads them back.
Comet's media (``log_image``/``log_figure`` uploads, 3-D histograms, audio, video, curves,
confusion matrices, tables, html, text samples) become media events with their steps
(:mod:`bridge.adapters.comet.media_in`); what cannot be read is a warning with its reason.
The REST path turns the API's answers into the archive message shapes and maps them with
the same code, so both paths make the same decisions (REST param values are strings, and
system details are not read).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, ClassVar, Iterator

from bridge.adapters.comet import names as N
from bridge.adapters.comet.media_in import MediaReader
from bridge.adapters.comet.offline import (
    ArchiveHead,
    copy_member,
    decode_value,
    find_archives,
    iter_messages,
    read_head,
)
from bridge.adapters.comet.sdk import load_comet_ml
from bridge.adapters.importing import (
    ImportError_,
    ImportEvent,
    SourceRun,
    artifact_event,
    resolve_source,
)

__all__ = ["CometImporter"]

log = logging.getLogger("bridge.importers.comet")

_OPTIONS = {"project"}


class CometImporter:
    """Comet offline archives as bridge runs; see the module docstring."""

    name: ClassVar[str] = "comet"

    def __init__(self, location: str | Path | None, **opts: Any) -> None:
        unknown = set(opts) - _OPTIONS
        if unknown:
            raise ImportError_(f"comet: unknown option(s) {', '.join(sorted(unknown))}")
        self.project = opts.get("project")
        self.warnings: list[str] = []
        self.rest: tuple[str, str] | None = None
        if isinstance(location, str) and location.startswith("comet://"):
            workspace, _, project = location[len("comet://"):].strip("/").partition("/")
            if not workspace or not project or "/" in project:
                raise ImportError_(f"comet: give comet://workspace/project, not {location!r}")
            self.rest = (workspace, project)
            return
        if location is None or str(location).startswith(("http://", "https://")):
            raise ImportError_("comet: give comet://workspace/project (REST API), or a "
                               "directory or zip of offline archives")
        self.location = Path(location)
        if not self.location.exists():
            raise ImportError_(f"comet: {self.location} does not exist")

    # -- listing ------------------------------------------------------------------

    def runs(self) -> Iterator[SourceRun]:
        if self.rest is not None:
            yield from self._rest_runs(*self.rest)
            return
        groups: dict[str, list[ArchiveHead]] = {}
        for path in find_archives(self.location):
            try:
                # A ``*.zip`` symlinked out of the directory would import another archive.
                path = resolve_source(path, [self.location])
                head = read_head(path)
            except (zipfile.BadZipFile, OSError, ValueError, ImportError_) as exc:
                self._warn(f"{path.name} skipped: {exc}")
                continue
            groups.setdefault(head.key, []).append(head)
        for key, heads in sorted(groups.items()):
            heads.sort(key=lambda h: h.order)
            yield self._describe(key, heads)

    def _describe(self, key: str, heads: list[ArchiveHead]) -> SourceRun:
        bridge_written = any(h.ledger for h in heads)
        others: dict[str, Any] = {}
        for h in heads:
            with zipfile.ZipFile(h.path) as zf:
                for msg in iter_messages(zf, only=N.MSG_OTHER):
                    if msg.get("type") == N.MSG_OTHER:
                        others[msg["payload"].get("key")] = msg["payload"].get("value")
        ledger_id = next((h.ledger.get(N.LEDGER_RUN_ID) for h in heads if h.ledger), None)
        source_id = ledger_id or (others.get(N.OTHER_RUN_ID) if bridge_written else None) or key
        status = others.get(N.OTHER_STATUS) if bridge_written else None
        starts = [int(h.meta["start_time"]) for h in heads if h.meta.get("start_time")]
        stops = [int(h.meta["stop_time"]) for h in heads if h.meta.get("stop_time")]
        notes = others.get(N.OTHER_NOTES) if bridge_written else None
        return SourceRun(
            source="comet", source_id=str(source_id),
            project=self.project or heads[-1].meta.get("project_name") or "comet",
            name=others.get(N.OTHER_NAME), notes=notes if isinstance(notes, str) else None,
            group=others.get(N.OTHER_GROUP) if bridge_written else None,
            start_ms=min(starts, default=0), end_ms=max(stops, default=None),
            status=status if status in N.FINAL_STATUSES else "FINISHED",
            handle=(heads, bridge_written, bool(others.get(N.OTHER_NESTED))),
        )

    # -- events -------------------------------------------------------------------

    def events(self, run: SourceRun) -> Iterator[ImportEvent]:
        if isinstance(run.handle, _RestHandle):
            yield from self._rest_events(run)
            return
        heads, bridge_written, nested = run.handle
        t0 = run.start_ms
        params: dict[str, Any] = {}
        summary: dict[str, Any] = {}
        system: dict[str, Any] = {}
        tags: dict[str, None] = {}
        grouped: dict[str, tuple[str, list[tuple[str, Path]]]] = {}
        with tempfile.TemporaryDirectory(prefix="bridge-comet-") as tmp_dir:
            # Members are copied out of the zip to names chosen here; real paths, because
            # artifact_event takes nothing reached through a symlink.
            tmp = os.path.realpath(tmp_dir)
            n = 0
            media = MediaReader(self._warn)  # see adapters/comet/media_in.py
            last_ts = t0  # html messages carry no time: the message before them gives it
            for head in heads:
                tags.update(dict.fromkeys(head.meta.get("tags") or []))
                with zipfile.ZipFile(head.path) as zf:
                    for msg in iter_messages(zf):
                        kind, p = msg.get("type"), msg["payload"]
                        if isinstance(p.get("local_timestamp"), (int, float)):
                            last_ts = int(p["local_timestamp"])
                        if kind in (N.MSG_HTML, N.MSG_HTML_OVERRIDE):
                            yield from media.html(p, last_ts, kind == N.MSG_HTML_OVERRIDE)
                        elif kind == N.MSG_METRIC:
                            m = p.get("metric") or {}
                            if m.get("metricName") in N.AUTO_METRICS:
                                continue
                            value = decode_value(m.get("metricValue"))
                            yield ImportEvent(
                                "metric", m.get("metricName"), int(p.get("local_timestamp") or t0),
                                step=m.get("step"),
                                value=float("nan") if value is None else float(value))
                        elif kind == N.MSG_PARAM:
                            _param(params, p, nested)
                        elif kind == N.MSG_OTHER:
                            _other(summary, p, bridge_written)
                        elif kind == N.MSG_SYSTEM:
                            info = p.get("system_info") or {}
                            system[str(info.get("key"))] = info.get("value")
                        elif kind == N.MSG_UPLOAD:
                            n += 1
                            local = Path(tmp) / f"member-{n}"
                            if not copy_member(zf, str(p.get("file_path")), local):
                                self._warn(f"{head.path.name}: upload {p.get('file_path')!r} "
                                           "is missing from the archive")
                                continue
                            yield from self._upload(p, local, t0, bridge_written, summary,
                                                    grouped, media)
            yield from media.finish()
            for key, value in params.items():
                yield ImportEvent("param", key, t0, payload=value)
            for key, value in summary.items():
                yield ImportEvent("summary", key, t0, payload=value)
            for tag in tags:
                yield ImportEvent("tag", tag, t0, payload="")
            if system:
                yield ImportEvent("system", "system", t0, payload=system)
            for name, (atype, files) in grouped.items():
                try:
                    yield artifact_event(name, files, t0, atype)
                except ImportError_ as exc:
                    self._warn(f"artifact {name!r} refused: {exc}")

    def _upload(self, p: dict[str, Any], local: Path, t0: int, bridge_written: bool,
                summary: dict[str, Any], grouped: dict[str, tuple[str, list[tuple[str, Path]]]],
                media: MediaReader) -> Iterator[ImportEvent]:
        extra = p.get("additional_params") or {}
        meta = p.get("metadata") or {}
        name = str(extra.get("fileName") or "")
        step = extra.get("step")
        ts = int(p.get("local_timestamp") or t0)
        upload_type = p.get("upload_type")
        as_media = media.upload(p, local, ts, bridge_written)
        if as_media is not None:  # images, histograms, text samples... (media_in.py)
            yield from as_media
            return
        if upload_type == N.UPLOAD_TEXT:  # a bridge event (media.upload left it)
            text = local.read_text(encoding="utf-8", errors="replace")
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text
            yield ImportEvent("event", meta[N.META_EVENT], int(meta.get(N.META_EVENT_TS) or ts),
                              step=step, payload=payload)
            return
        if bridge_written and meta.get(N.META_KIND) == N.KIND_OTHER:
            if meta.get(N.META_OTHER_KEY) not in N.BRIDGE_OTHERS:  # long notes: not a summary
                text = local.read_text(encoding="utf-8")
                summary[str(meta.get(N.META_OTHER_KEY))] = _maybe_json(text)
            return
        if bridge_written and N.META_ARTIFACT in meta:
            art = str(meta[N.META_ARTIFACT])
            rel = name[len(art) + 1:] if name.startswith(art + "/") else name
            entry = grouped.setdefault(art, (str(meta.get(N.META_ARTIFACT_TYPE) or "file"), []))
            entry[1].append((rel, local))
            return
        if bridge_written and upload_type == N.UPLOAD_ASSET:
            try:
                text = local.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                text = None
            if text is not None:
                if name.endswith(".json"):
                    try:
                        yield ImportEvent("dict", name, ts, step=step, payload=json.loads(text))
                        return
                    except ValueError:
                        pass
                yield ImportEvent("text", name, ts, step=step, payload=text)
                return
        if not name:
            self._warn(f"{upload_type or 'file'} upload without a file name (step {step}); "
                       "bridge does not know this kind of upload, skipped")
            return
        atype = "model" if upload_type == N.UPLOAD_MODEL else "file"
        art_name = str(extra.get("groupingName") or name) if atype == "model" else name
        try:
            yield artifact_event(art_name, [(name, local)], ts, atype, step=step)
        except ImportError_ as exc:
            self._warn(f"asset {name!r} refused: {exc}")

    # -- REST API -----------------------------------------------------------------

    def _rest_runs(self, workspace: str, project: str) -> Iterator[SourceRun]:
        """Experiments of one project. ``pattern=".*"`` makes comet_ml key its listing by
        experiment key: without a pattern it keys it by name, which drops experiments that
        share a name or have none."""
        api = _rest_api()
        try:
            experiments = api.get_experiments(workspace, project, pattern=".*")
        except Exception as exc:  # comet_ml raises its own and requests' errors
            raise ImportError_(f"comet: cannot list {workspace}/{project}: {exc}") from exc
        for exp in sorted(experiments, key=lambda e: str(e.id)):
            yield self._rest_describe(exp, project)

    def _rest_describe(self, exp: Any, project: str) -> SourceRun:
        meta = exp.get_metadata() or {}
        others = {str(o.get("name")): o.get("valueCurrent")
                  for o in exp.get_others_summary() or []}
        bridge_written = N.OTHER_RUN_ID in others
        key = str(meta.get("experimentKey") or exp.id)
        source_id = (others.get(N.OTHER_RUN_ID) if bridge_written else None) or key
        status = others.get(N.OTHER_STATUS) if bridge_written else None
        if status not in N.FINAL_STATUSES:
            status = ("RUNNING" if meta.get("running")
                      else "FAILED" if meta.get("hasCrashed") else "FINISHED")
        notes = others.get(N.OTHER_NOTES) if bridge_written else None
        end = meta.get("endTimeMillis")
        return SourceRun(
            source="comet", source_id=str(source_id),
            project=self.project or meta.get("projectName") or project,
            name=others.get(N.OTHER_NAME) or meta.get("experimentName"),
            notes=notes if isinstance(notes, str) else None,
            group=others.get(N.OTHER_GROUP) if bridge_written else None,
            start_ms=int(meta.get("startTimeMillis") or 0),
            end_ms=None if status == "RUNNING" or end is None else int(end),
            status=status,
            handle=_RestHandle(exp, others, bridge_written,
                               str(others.get(N.OTHER_NESTED)).lower() == "true"),
        )

    def _rest_events(self, run: SourceRun) -> Iterator[ImportEvent]:
        h: _RestHandle = run.handle
        exp, t0 = h.exp, run.start_ms
        yield from self._rest_metrics(exp, t0)
        params: dict[str, Any] = {}
        for p in exp.get_parameters_summary() or []:
            # The REST summary has no ``source``: curr_step/curr_epoch are taken as
            # comet_ml's own, as the archive path drops them.
            _param(params, {"param": {"paramName": p.get("name"),
                                      "paramValue": p.get("valueCurrent"),
                                      "source": "auto-logged"}}, h.nested)
        summary: dict[str, Any] = {}
        for key, value in h.others.items():
            _other(summary, {"key": key, "value": value}, h.bridge_written)
        grouped: dict[str, tuple[str, list[tuple[str, Path]]]] = {}
        with tempfile.TemporaryDirectory(prefix="bridge-comet-") as tmp_dir:
            tmp = os.path.realpath(tmp_dir)  # see events(): artifact files by real path
            media = MediaReader(self._warn)
            for n, asset in enumerate(exp.get_asset_list() or [], start=1):
                local = Path(tmp) / f"asset-{n}"
                if not _download(exp, asset, local):
                    self._warn(f"asset {asset.get('fileName')!r} could not be downloaded")
                    continue
                yield from self._upload(_upload_message(asset), local, t0, h.bridge_written,
                                        summary, grouped, media)
            yield from media.finish()
            for key, value in params.items():
                yield ImportEvent("param", key, t0, payload=value)
            for key, value in summary.items():
                yield ImportEvent("summary", key, t0, payload=value)
            for tag in dict.fromkeys(exp.get_tags() or []):
                yield ImportEvent("tag", str(tag), t0, payload="")
            for name, (atype, files) in grouped.items():
                try:
                    yield artifact_event(name, files, t0, atype)
                except ImportError_ as exc:
                    self._warn(f"artifact {name!r} refused: {exc}")

    def _rest_metrics(self, exp: Any, t0: int) -> Iterator[ImportEvent]:
        """One metric series at a time: comet_ml answers ``get_metrics(name)`` with the whole
        series in one response, so memory is bounded by the longest series, not the run."""
        names = dict.fromkeys(str(m.get("name")) for m in exp.get_metrics_summary() or [])
        for name in names:
            if name in N.AUTO_METRICS:
                continue
            for m in exp.get_metrics(name) or []:
                value = decode_value(m.get("metricValue"))
                try:
                    number = float("nan") if value is None else float(value)
                except (TypeError, ValueError):
                    self._warn(f"metric {name!r}: value {value!r} is not a number; skipped")
                    continue
                step = m.get("step")
                yield ImportEvent("metric", name, int(m.get("timestamp") or t0),
                                  step=None if step is None else int(step), value=number)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("comet import: %s", message)


class _RestHandle:
    """What ``events()`` needs back for one experiment read through the REST API."""

    def __init__(self, exp: Any, others: dict[str, Any], bridge_written: bool,
                 nested: bool) -> None:
        self.exp, self.others = exp, others
        self.bridge_written, self.nested = bridge_written, nested


def _rest_api() -> Any:
    """``comet_ml.API`` with the key from ``COMET_API_KEY`` only (never a config file)."""
    key = os.environ.get(N.API_KEY_ENV)
    if not key:
        raise ImportError_(f"comet: set {N.API_KEY_ENV} to read comet://workspace/project")
    return load_comet_ml().API(api_key=key, cache=False)


def _upload_message(asset: dict[str, Any]) -> dict[str, Any]:
    """An asset-list entry in the shape of an archive ``file_upload`` message, so both
    paths share one mapping."""
    meta = asset.get("metadata")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = {"metadata": meta}
    extra: dict[str, Any] = {"fileName": asset.get("fileName"), "step": asset.get("step")}
    folder = str(asset.get("dir") or "")
    if asset.get("type") == N.UPLOAD_MODEL and folder.startswith("models/"):
        extra["groupingName"] = folder[len("models/"):]
    return {"additional_params": extra, "metadata": meta if isinstance(meta, dict) else {},
            "upload_type": asset.get("type"), "local_timestamp": asset.get("createdAt")}


def _download(exp: Any, asset: dict[str, Any], local: Path) -> bool:
    """Stream one asset's bytes to ``local`` (never the asset's own name)."""
    try:
        response = exp.get_asset(asset["assetId"], return_type="response", stream=True)
        with local.open("wb") as out:
            for chunk in response.iter_content(chunk_size=1 << 20):
                out.write(chunk)
        response.close()
    except Exception as exc:  # a missing or refused asset skips that asset only
        log.debug("comet asset %s: %s", asset.get("assetId"), exc)
        return False
    return True


def _param(params: dict[str, Any], p: dict[str, Any], nested: bool) -> None:
    """``a|b|c`` names (Comet's flattened nested params) become ``a = {"b": {"c": v}}``
    when the experiment says it logged nested params; auto-logged step params are dropped."""
    param = p.get("param") or p.get("params") or {}
    name, value = str(param.get("paramName")), param.get("paramValue")
    if param.get("source") == "auto-logged" and name in N.AUTO_PARAMS:
        return
    if not nested or "|" not in name:
        params[name] = value
        return
    parts = name.split("|")
    node = params.get(parts[0])
    if not isinstance(node, dict):
        node = params[parts[0]] = {}
    for part in parts[1:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _other(summary: dict[str, Any], p: dict[str, Any], bridge_written: bool) -> None:
    key = str(p.get("key"))
    if key in N.COMET_OTHERS or key.startswith(N.SYS_OTHER_PREFIX) or (
            bridge_written and key in N.BRIDGE_OTHERS):
        return  # the SDK's own bookkeeping (e.g. sys.already_imported_modules), not the user's
    value = p.get("value")
    summary[key] = _maybe_json(value) if bridge_written else value
