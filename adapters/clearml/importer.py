"""Import ClearML offline sessions (``Task.set_offline(True)``): a session folder, its zip,
or any folder holding sessions (a ClearML cache dir's ``offline/``).

The session format is in :mod:`.names`; reading it is :mod:`.offline` (no clearml SDK
needed, except to parse the HOCON text of ``connect_configuration`` dicts, see below).

Mapping (documented in ``docs/importers-clearml.md``):

* the task id is the source id; ``project_name``, ``name``, ``comment`` (notes), ``parent``;
* hyperparameters are params ``<section>/<name>`` (``General/lr``, ``Args/batch``; nested
  dicts given to ``connect`` are already ``General/a/b``), values typed by ClearML's
  recorded type; ``connect_configuration`` objects are params
  ``Configuration/<name>/<path>`` (a dict, flattened with ``/``) or ``Configuration/<name>``
  (any other text, as written);
* tags are tags; the task type is the tag ``clearml.task_type``;
* scalars are metrics ``title/series`` with ``iter`` as the step and each event's own
  timestamp; ``report_single_value`` (title ``Summary``) are summaries named by the series;
* debug samples (``report_image``/``report_media``) are media events with their bytes, tables
  are table media, every other plot is a ``file`` media event holding its Plotly JSON;
* artifacts are artifacts with their files; the console is the text event ``console.log``;
  the script's requirements and diff are text events and its facts a system event.

An offline session records no status and no start/end time: the run starts at its first
event, ends at its last one and is FINISHED, or FAILED when the console ends in an uncaught
exception's traceback, unless ``task.json`` says otherwise. What is
not imported is a counted warning in ``warnings`` (and the ``bridge.importers.clearml``
logger), never dropped silently.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import tempfile
import warnings
from collections import Counter
from datetime import datetime, timezone
from itertools import zip_longest
from pathlib import Path
from typing import Any, ClassVar, Iterator

from bridge.adapters.base import flatten
from bridge.adapters.clearml import names as N
from bridge.adapters.clearml.offline import Session, find_sessions, open_session
from bridge.adapters.importing import (
    ImportError_,
    ImportEvent,
    MediaFile,
    SourceRun,
    artifact_event,
    media_event,
    resolve_source,
)

__all__ = ["ClearmlImporter"]

log = logging.getLogger("bridge.importers.clearml")

_OPTIONS = {"project"}


class ClearmlImporter:
    """ClearML offline sessions as bridge runs; see the module docstring."""

    name: ClassVar[str] = "clearml"

    def __init__(self, location: str | Path | None, **opts: Any) -> None:
        unknown = set(opts) - _OPTIONS
        if unknown:
            raise ImportError_(f"clearml: unknown option(s) {', '.join(sorted(unknown))}")
        if location is None:
            raise ImportError_("clearml: give an offline session folder or zip, or a folder "
                               "holding them")
        self.location = Path(location)
        if not self.location.exists():
            raise ImportError_(f"clearml: {self.location} does not exist")
        self.project = opts.get("project")
        self.warnings: list[str] = []

    # -- listing ------------------------------------------------------------------

    def runs(self) -> Iterator[SourceRun]:
        chosen: dict[str, Session] = {}
        for path in find_sessions(self.location):
            try:
                # A session symlinked into the location would import files from anywhere.
                resolve_source(path, [self.location])
                session = open_session(path)
            except (ImportError_, OSError, ValueError, KeyError) as exc:
                self._warn(f"{path.name} skipped: {exc}")
                continue
            if session.task_from is not None:
                self._warn(f"{path.name}: {N.TASK_FILE} cut short (its process died writing "
                           f"it); the task read from {session.task_from.name}, the events "
                           "and files from the folder")
            # A folder and the zip the SDK made of it are one session: the folder wins.
            if session.task_id not in chosen or not session.is_zip:
                chosen[session.task_id] = session
        for task_id in sorted(chosen):
            yield self._describe(chosen[task_id])

    def _describe(self, session: Session) -> SourceRun:
        task = session.task
        first, last, crashed = _scan(session)
        for a in _artifacts(task):  # artifact times are whole seconds: they only extend
            if isinstance(a.get(N.ARTIFACT_TIMESTAMP), (int, float)):
                ms = int(a[N.ARTIFACT_TIMESTAMP] * 1000)
                last = ms if last is None else max(last, ms)
        start = _ms(task.get(N.STARTED)) or _ms(task.get(N.CREATED)) or first or 0
        end = _ms(task.get(N.COMPLETED)) or _ms(task.get(N.LAST_UPDATE)) or last
        status = N.STATUSES.get(str(task.get(N.STATUS) or "").lower(),
                                "FAILED" if crashed else "FINISHED")
        extra = {N.TASK_TYPE_TAG: str(task[N.TASK_TYPE])} if task.get(N.TASK_TYPE) else {}
        comment = task.get(N.COMMENT)
        return SourceRun(
            source="clearml", source_id=session.task_id,
            project=self.project or str(task.get(N.PROJECT) or "clearml"),
            name=str(task[N.NAME]) if task.get(N.NAME) else None,
            notes=comment if isinstance(comment, str) and comment else None,
            start_ms=start, end_ms=end, status=status,
            parent_id=str(task[N.PARENT]) if task.get(N.PARENT) else None,
            handle=session, extra_tags=extra,
        )

    # -- events -------------------------------------------------------------------

    def events(self, run: SourceRun) -> Iterator[ImportEvent]:
        session: Session = run.handle
        task = session.task
        t0 = run.start_ms
        skipped: Counter[str] = Counter()
        yield from self._params(task, t0)
        for tag in task.get(N.TAGS) or []:
            yield ImportEvent("tag", str(tag), t0, payload="")
        yield from _script_events(task, t0)
        self._unknown_fields(task, session)
        with tempfile.TemporaryDirectory(prefix="bridge-clearml-") as tmp_dir:
            tmp = Path(os.path.realpath(tmp_dir))  # media and artifact files by real path
            yield from self._metric_events(session, t0, tmp, skipped)
            yield from self._console(session, t0)
            yield from self._artifacts(session, t0, tmp)
        for reason, n in sorted(skipped.items()):
            self._warn(f"{session.task_id}: {n} {reason}")

    def _params(self, task: dict[str, Any], t0: int) -> Iterator[ImportEvent]:
        for section, entries in (task.get(N.HYPERPARAMS) or {}).items():
            for name, entry in (entries or {}).items():
                if not isinstance(entry, dict):
                    continue
                key = N.param_key(str(section), str(entry.get("name") or name))
                yield ImportEvent("param", key, t0,
                                  payload=_typed(entry.get("value"), entry.get("type")))
        for name, entry in (task.get(N.CONFIGURATION) or {}).items():
            if not isinstance(entry, dict):
                continue
            base = N.param_key(N.CONFIG_PREFIX, str(entry.get("name") or name))
            tree = _config_tree(entry) if entry.get("type") == N.CONFIG_TYPE_DICT else None
            if tree:
                for key, value in flatten(tree, base, N.PARAM_SEP).items():
                    yield ImportEvent("param", key, t0, payload=value)
            else:
                yield ImportEvent("param", base, t0, payload=entry.get("value"))

    def _metric_events(self, session: Session, t0: int, tmp: Path,
                       skipped: Counter[str]) -> Iterator[ImportEvent]:
        # ClearML reuses a series' sample file names (``metrics.file_history_size``): only
        # the last event naming a file still has its bytes.
        last_use: dict[str, int] = {}
        for i, ev in enumerate(session.events(N.METRICS_FILE, self._warn)):
            if ev.get(N.F_TYPE) == N.EV_IMAGE and (ref := _sample_ref(session, ev)):
                last_use[ref] = i
        for i, ev in enumerate(session.events(N.METRICS_FILE, self._warn)):
            kind = ev.get(N.F_TYPE)
            ts = _int(ev.get(N.F_TIMESTAMP), t0)
            step = _int(ev.get(N.F_ITER), None)
            title, series = str(ev.get(N.F_METRIC, "")), str(ev.get(N.F_VARIANT, ""))
            if kind == N.EV_SCALAR:
                value = _float(ev.get(N.F_VALUE))
                if title == N.SUMMARY_TITLE and step == N.SUMMARY_ITER:
                    yield ImportEvent("summary", series, ts, payload=value)
                else:
                    yield ImportEvent("metric", N.metric_key(title, series), ts, step=step,
                                      value=value)
            elif kind == N.EV_IMAGE:
                event = self._sample(session, ev, i, last_use, tmp, ts, step)
                if event is not None:
                    yield event
            elif kind == N.EV_PLOT:
                event = _plot(ev, N.metric_key(title, series), ts, step, skipped)
                if event is not None:
                    yield event
            elif kind == N.EV_VECTOR:
                skipped["vector events (report_vector) not imported"] += 1
            else:
                skipped[f"events of type {kind!r} not imported"] += 1

    def _sample(self, session: Session, ev: dict[str, Any], i: int, last_use: dict[str, int],
                tmp: Path, ts: int, step: int | None) -> ImportEvent | None:
        key = N.metric_key(str(ev.get(N.F_METRIC, "")), str(ev.get(N.F_VARIANT, "")))
        ref = _sample_ref(session, ev)
        where = f"debug sample {key!r} at iteration {step}"
        if ref is None:
            self._warn(f"{where}: {ev.get(N.F_URL)!r} is not in the session; not imported")
            return None
        if last_use.get(ref) != i:
            self._warn(f"{where}: its file was overwritten by a later report (ClearML keeps "
                       "metrics.file_history_size files per series); not imported")
            return None
        try:
            local = session.data_file(ref, tmp, i)
        except ImportError_ as exc:
            self._warn(f"{where} refused: {exc}")
            return None
        if local is None:
            self._warn(f"{where}: {ref!r} is missing from the session; not imported")
            return None
        from bridge.spool.media import mime_for

        name = ref.rsplit("/", 1)[-1]
        mime = mime_for(name)
        kind = next((t for t in ("image", "audio", "video") if mime.startswith(t + "/")),
                    "html" if mime == "text/html" else "file")
        return media_event(key, step, ts, kind, [MediaFile(local, mime, name)],
                           source={"vendor": "clearml", "descriptor": {"type": N.EV_IMAGE}})

    def _console(self, session: Session, t0: int) -> Iterator[ImportEvent]:
        lines: list[str] = []
        last = t0
        for ev in session.events(N.LOG_FILE, self._warn):
            if ev.get(N.F_TYPE, N.EV_LOG) != N.EV_LOG or N.F_MSG not in ev:
                self._warn(f"{session.task_id}: a {N.LOG_FILE} entry of type "
                           f"{ev.get(N.F_TYPE)!r} not imported")
                continue
            lines.append(str(ev[N.F_MSG]))
            last = _int(ev.get(N.F_TIMESTAMP), last) or last
        if lines:
            yield ImportEvent("text", N.CONSOLE_KEY, last, payload="\n".join(lines) + "\n")

    def _artifacts(self, session: Session, t0: int, tmp: Path) -> Iterator[ImportEvent]:
        # Artifact uris are absolute paths below the folder the session was written in.
        prefix = os.path.join(str(session.task.get(N.OFFLINE_FOLDER) or ""), N.DATA_DIR) + "/"
        for n, a in enumerate(_artifacts(session.task)):
            name = str(a.get(N.ARTIFACT_KEY) or f"artifact-{n}")
            uri = str(a.get(N.ARTIFACT_URI) or "")
            ts = a.get(N.ARTIFACT_TIMESTAMP)
            # Whole seconds: not before the run's first event.
            ts_ms = max(int(ts * 1000), t0) if isinstance(ts, (int, float)) else t0
            if not uri.startswith(prefix):
                self._warn(f"artifact {name!r}: {uri!r} is not in the session; not imported")
                continue
            rel = uri[len(prefix):]
            try:
                local = session.data_file(rel, tmp, 100_000 + n)
                if local is None:
                    self._warn(f"artifact {name!r}: {rel!r} is missing from the session; "
                               "not imported")
                    continue
                yield artifact_event(name, [(rel.rsplit("/", 1)[-1], local)], ts_ms)
            except ImportError_ as exc:
                self._warn(f"artifact {name!r} refused: {exc}")

    def _unknown_fields(self, task: dict[str, Any], session: Session) -> None:
        for key, value in sorted(task.items()):
            if key not in N.KNOWN_FIELDS and value not in (None, "", [], {}):
                self._warn(f"{session.task_id}: task field {key!r} not imported")
        execution = task.get(N.EXECUTION) or {}
        for key, value in sorted(execution.items()):
            if key not in N.KNOWN_EXECUTION and value not in (None, "", [], {}):
                self._warn(f"{session.task_id}: task field 'execution.{key}' not imported")
        if execution.get("parameters"):
            self._warn(f"{session.task_id}: legacy 'execution.parameters' not imported")
        for model in task.get(N.OUTPUT_MODELS) or []:
            self._warn(f"{session.task_id}: output model "
                       f"{(model.get('init') or {}).get('name') or model.get('id')!r} "
                       "not imported")

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("clearml import: %s", message)


# -- helpers -----------------------------------------------------------------------------

_SDK_LOG_LINE = re.compile(N.SDK_LOG_LINE)


def _artifacts(task: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in (task.get(N.EXECUTION) or {}).get(N.ARTIFACTS) or []
            if isinstance(a, dict)]


def _scan(session: Session) -> tuple[int | None, int | None, bool]:
    """The first and last event times, and whether the console ends in an uncaught
    exception's traceback: the only trace an offline session keeps of a crash."""
    first = last = None
    # The console's trailing stderr reports: Python writes a traceback line by line, and the
    # SDK reports stderr in time slices, so one traceback may end up in several reports,
    # with the SDK's own log lines (info) between them.
    tail: list[str] = []
    sdk_line = _SDK_LOG_LINE.match
    for name in (N.LOG_FILE, N.METRICS_FILE):
        for ev in session.events(name, lambda _msg: None):  # warned once, in events()
            ts = ev.get(N.F_TIMESTAMP)
            if isinstance(ts, (int, float)):
                first = int(ts) if first is None else min(first, int(ts))
                last = int(ts) if last is None else max(last, int(ts))
            if name == N.LOG_FILE:
                msg = str(ev.get(N.F_MSG, ""))
                if str(ev.get(N.F_LEVEL, "")).lower() == N.ERROR_LEVEL:
                    tail.append(msg)
                elif not sdk_line(msg):
                    tail = []
    crashed = any(m.lstrip().startswith(N.TRACEBACK_START) for m in tail)
    return first, last, crashed


def _sample_ref(session: Session, ev: dict[str, Any]) -> str | None:
    """A debug sample's file below ``data/``: its ``key``, or its ``url`` in the session;
    None for a sample reported by a remote URL (``report_image(url=...)``)."""
    url = str(ev.get(N.F_URL) or "")
    if "://" in url and not url.startswith("file://"):
        return None
    if ev.get(N.F_KEY):
        return str(ev[N.F_KEY])
    prefix = os.path.join(str(session.task.get(N.OFFLINE_FOLDER) or ""), N.DATA_DIR) + "/"
    return url[len(prefix):] if url.startswith(prefix) else None


def _plot(ev: dict[str, Any], key: str, ts: int, step: int | None,
          skipped: Counter[str]) -> ImportEvent | None:
    text = ev.get(N.F_PLOT)
    try:
        plot = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        plot = None
    if not isinstance(plot, dict):
        skipped["plots whose Plotly JSON does not parse not imported"] += 1
        return None
    source = {"vendor": "clearml", "descriptor": {"type": N.EV_PLOT}}
    traces = plot.get("data") or []
    if len(traces) == 1 and isinstance(traces[0], dict) and traces[0].get("type") == "table":
        header = (traces[0].get("header") or {}).get("values") or []
        cells = (traces[0].get("cells") or {}).get("values") or []
        columns = [" ".join(map(str, h)) if isinstance(h, list) else str(h) for h in header]
        rows = [list(r) for r in zip_longest(*cells)]
        return media_event(key, step, ts, "table", data={"columns": columns, "rows": rows},
                           source=source)
    if (plot.get("layout") or {}).get("images"):
        skipped["plots embed images by link: the Plotly JSON is imported, the images "
                "are not"] += 1
    name = key.replace("/", "_") + ".plotly.json"
    return media_event(key, step, ts, "file",
                       [MediaFile(str(text).encode("utf-8"), "application/json", name)],
                       source=source)


def _script_events(task: dict[str, Any], t0: int) -> Iterator[ImportEvent]:
    script = task.get(N.SCRIPT) or {}
    facts = {f: script[f] for f in N.SCRIPT_FACTS if script.get(f)}
    if facts:
        yield ImportEvent("system", "system", t0, payload={"clearml_script": facts})
    pip = (script.get("requirements") or {}).get("pip")
    if pip:
        yield ImportEvent("text", N.REQUIREMENTS_KEY, t0, payload=str(pip))
    if script.get("diff"):
        yield ImportEvent("text", N.SCRIPT_CODE_KEY, t0, payload=str(script["diff"]))


def _typed(value: Any, type_name: Any) -> Any:
    """A hyperparameter's value as the type ClearML recorded (values are stored as text)."""
    if not isinstance(value, str):
        return value
    kind = str(type_name or "").lower().split("/")[0]  # "list/float": a list of floats
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return value.strip().lower() in ("true", "1", "yes")
        if kind == "nonetype" and value in ("", "None"):
            return None
        if kind in ("list", "tuple", "dict"):
            parsed = ast.literal_eval(value)
            parsed = list(parsed) if isinstance(parsed, tuple) else parsed
            json.dumps(parsed, allow_nan=False)
            return parsed
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    return value


def _config_tree(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A ``connect_configuration`` dict: its HOCON text parsed with the parser the SDK wrote
    it with; None (the text is kept as written) when clearml is missing or it does not parse."""
    text = entry.get("value")
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        from clearml.utilities.pyhocon import ConfigFactory  # the SDK's own HOCON parser
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():  # the vendored parser uses deprecated pyparsing names
            warnings.simplefilter("ignore")
            tree = ConfigFactory.parse_string(text).as_plain_ordered_dict()
        return json.loads(json.dumps(tree))
    except Exception:  # noqa: BLE001 - any parse failure keeps the text as written
        return None


def _ms(value: Any) -> int | None:
    """Milliseconds of a task time field (ISO text, as the server writes them)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1000)


def _int(value: Any, default: int | None) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else default


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
