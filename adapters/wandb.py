"""Weights & Biases backend: spool events -> W&B runs (online, or offline run dirs).

Why it is shaped this way (see docs/backends/wandb.md for the user-facing page):

* ``run.log`` only hands a row to the wandb-core service; wandb-core keeps the tail of
  its ``.wandb`` log in a 32 KiB buffer until the run finishes, so a sync process killed
  after ``run.log`` returned loses those rows. ``finish()`` is the one flush wandb
  offers. Every ``export`` therefore writes its batch as one W&B *session* of the run
  (``resume="allow"``; offline: one ``offline-run-*-<id>`` fragment) and finishes it
  before answering SUCCESS; the offline fragment is fsynced as well. The last batch of a
  run that has ended finishes its session with the run's exit code, so ``close_run`` adds
  no session; in-process background sync delivers this backend only every
  ``agent.session_interval`` while the run trains (``session_per_export``).
* A sync killed after ``finish()`` but before the agent saved its cursor replays the
  batch. ``open_run`` reads the fragments written since the last confirmed one with
  bridge's own ``.wandb`` reader: metric points already there are skipped, fragments
  without an exit record (a session killed mid-way) are renamed ``discarded-*`` so
  ``wandb sync`` never uploads them.
* Rows are logged against ``bridge/step`` (``define_metric("*", step_metric=...)``),
  so out-of-order steps and late DDP ranks are kept; W&B's ``_step`` only counts rows.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

from bridge.adapters.base import (
    AdapterError,
    Event,
    ExportResult,
    Limits,
    RunInfo,
    keep_private,
    require,
)

__all__ = ["WandbAdapter", "check_artifact_name", "check_metric_key", "check_tag"]

STEP_KEY = "bridge/step"
_OPTIONS = {"project", "entity", "mode", "dir", "group", "job_type", "spool_dir"}
_RUN_ID_FORBIDDEN = set(":;,#?/'")
_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_RESERVED_KEYS = {"_step", "_runtime", "_timestamp", "_wandb", STEP_KEY}
_EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "KILLED": 137}
_QUIET = dict(
    silent=True,
    console="off",
    save_code=False,
    disable_code=True,
    disable_git=True,
    disable_job_creation=True,
    x_disable_stats=True,
    x_disable_meta=True,
    x_disable_machine_info=True,
    x_save_requirements=False,
)


# -- limits W&B enforces only when it uploads ---------------------------------------


def wandb_project(project: str) -> str:
    """W&B project names allow no '/' (a Neptune ``workspace/project``): use '-' instead."""
    return project.replace("/", "-") if project else project


MAX_TAG_LENGTH = 64
# Config key holding the tags too long for a W&B label: {key: value}.
LONG_TAGS_CONFIG = "bridge.tags"


def check_tag(tag: str) -> str | None:
    """Why W&B would refuse this tag, or None."""
    if not tag or not tag.strip():
        return "W&B tags must not be empty"
    if len(tag) > MAX_TAG_LENGTH:
        return f"W&B tags are at most {MAX_TAG_LENGTH} characters (got {len(tag)})"
    return None


def check_artifact_name(name: str) -> str | None:
    """Why W&B would refuse this artifact name, or None."""
    if not name or len(name) > 128:
        return f"W&B artifact names are 1-128 characters (got {len(name or '')})"
    if not _ARTIFACT_NAME.match(name):
        return "W&B artifact names may only contain letters, digits, '-', '_' and '.'"
    return None


def check_metric_key(key: str | None) -> str | None:
    """Why W&B would refuse (or silently mangle) this history key, or None."""
    if not key or not key.strip():
        return "W&B metric keys must not be empty"
    if key in _RESERVED_KEYS or key.startswith("_"):
        return f"W&B reserves keys starting with '_' and {STEP_KEY!r}"
    if len(key) > Limits().max_key_length:
        return f"W&B metric keys are at most {Limits().max_key_length} characters"
    if any(c in key for c in "\n\r\t"):
        return "W&B metric keys must not contain control characters"
    return None


def _remote_id(run_id: str) -> str:
    if run_id and len(run_id) <= 64 and not (_RUN_ID_FORBIDDEN & set(run_id)):
        return run_id
    return uuid.uuid5(uuid.NAMESPACE_URL, f"bridge:{run_id}").hex


def _safe_relpath(name: str | None) -> str | None:
    if not name:
        return None
    path = Path(name)
    if path.is_absolute() or ".." in path.parts or name.startswith("~"):
        return None
    return path.as_posix()


# -- the adapter --------------------------------------------------------------------


class WandbAdapter:
    """Delivers bridge runs to W&B; one finished W&B session per confirmed batch."""

    name: ClassVar[str] = "wandb"
    # One batch is one session: 20,000 events keep background sync at one session per
    # ``agent.session_interval`` (300 s) up to ~65 events a second of training.
    limits: ClassVar[Limits] = Limits(
        max_events=20_000, max_metrics=20_000, max_params=1000, max_tags=1000,
        max_key_length=250,
    )
    # Each export is one W&B session (init … finish), online and offline: in-process
    # background sync delivers this backend only every ``agent.session_interval`` while the
    # run runs (see bridge.agent.background).
    session_per_export: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise AdapterError(f"wandb: unknown option(s) {', '.join(sorted(unknown))}")
        self.mode = options.get("mode", "online")
        if self.mode not in ("online", "offline"):
            raise AdapterError(f"wandb: mode must be 'online' or 'offline', not {self.mode!r}")
        self.project = options.get("project")
        self.entity = options.get("entity")
        self.group = options.get("group")
        self.job_type = options.get("job_type")
        spool = options.get("spool_dir")
        default_dir = Path(spool) / "wandb-out" if spool else Path.cwd()
        self.dir = Path(options.get("dir") or default_dir).absolute()
        self._isolate()
        self.wandb = require("wandb", "wandb")
        self._seen: dict[str, Counter] = {}  # run id -> metric points already in W&B

    # -- environment ------------------------------------------------------------

    def _isolate(self) -> None:
        """Keep wandb quiet and, offline, keep every file it writes under ``dir``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_DISABLE_CODE", "true")
        os.environ.setdefault("WANDB_DISABLE_GIT", "true")
        if self.mode == "offline":
            home = self.dir / ".wandb-home"
            for var, sub in (
                ("WANDB_CONFIG_DIR", "config"),
                ("WANDB_CACHE_DIR", "cache"),
                ("WANDB_DATA_DIR", "data"),
                ("WANDB_ARTIFACT_DIR", "artifacts"),
            ):
                os.environ.setdefault(var, str(home / sub))

    @property
    def wandb_dir(self) -> Path:
        return self.dir / "wandb"

    # -- contract ---------------------------------------------------------------

    def open_run(self, run: RunInfo) -> str:
        """No W&B call: reconcile with fragments a killed session left behind."""
        rid = _remote_id(run.run_id)
        st = run.state
        st.setdefault("tags", [])
        st.setdefault("config", {})
        st.setdefault("summary", {})
        st.setdefault("auto_step", {})
        if self.mode == "offline":
            self._seen[rid] = self._reconcile(rid, st.get("last_fragment"))
        else:
            self._seen[rid] = Counter()  # online: W&B's server holds what is delivered
        return rid

    def export(self, run: RunInfo, batch: Sequence[Event]) -> ExportResult:
        rid = _remote_id(run.run_id)
        if rid not in self._seen:
            self.open_run(run)
        st = run.state
        rejected: dict[tuple[str, int], str] = {}
        plan = _Plan()
        for ev in batch:
            reason = self._plan_event(run, st, plan, ev)
            if reason:
                rejected[ev.uid] = reason
        if not plan.initialized:
            plan.load(st)
        if plan.adds_nothing_to(st):  # e.g. a replay W&B already holds entirely
            st["auto_step"] = plan.auto_step
            return ExportResult.success(rejected)
        # The run has ended and this is the pass's last batch (the agent sends full batches
        # before it): this session also closes the run, and close_run needs none of its own.
        closing = run.status != "RUNNING" and len(batch) < self.limits.max_events
        code = _EXIT_CODES.get(run.status, 1) if closing else 0
        try:
            fragment = self._session(run, rid, plan, exit_code=code, final=closing)
        except Exception as exc:  # the SDK raises many types; nothing was confirmed
            return ExportResult.retry(f"wandb: {type(exc).__name__}: {exc}")
        st["tags"], st["config"], st["summary"] = plan.tags, plan.config, plan.summary
        st["auto_step"], st["notes"], st["last"] = plan.auto_step, plan.notes, plan.last
        if closing:
            st["closed_as"] = run.status
        else:
            st.pop("closed_as", None)
        if fragment:
            st["last_fragment"] = fragment
        return ExportResult.success(rejected)

    def close_run(self, run: RunInfo, status: str, end_time_ms: int) -> None:
        """Finish the W&B run with bridge's status as exit code (the end time is W&B's)."""
        if run.state.get("closed_as") == status:
            return  # the last export's session already finished the run with this status
        rid = _remote_id(run.run_id)
        plan = _Plan.from_state(run.state)
        fragment = self._session(
            run, rid, plan, exit_code=_EXIT_CODES.get(status, 1), final=True
        )
        if fragment:
            run.state["last_fragment"] = fragment

    def shutdown(self) -> None:
        self._seen.clear()
        if self.wandb.run is None:  # never stop a service the host program still uses
            self.wandb.teardown()

    # -- planning: events -> rows, config, files --------------------------------

    def _plan_event(self, run: RunInfo, st: dict, plan: "_Plan", ev: Event) -> str | None:
        if not plan.initialized:
            plan.load(st)
        kind, key = ev.kind, ev.key
        if kind == "metric":
            reason = check_metric_key(key)
            if reason:
                return reason
            step = ev.step
            if step is None:  # a series without steps: number its points 0, 1, 2 ...
                step = plan.auto_step.get(key, 0)
                plan.auto_step[key] = step + 1
            point = (key, int(step), int(ev.ts_ms), _value_id(ev.value))
            seen = self._seen.get(_remote_id(run.run_id))
            if seen and seen[point] > 0:
                seen[point] -= 1  # delivered by a session whose SUCCESS was lost
                return None
            plan.add_metric(key, int(step), ev.ts_ms, ev.value)
            return None
        if kind == "param":
            if not key or key.startswith("_"):
                return "W&B config keys must be non-empty and not start with '_'"
            plan.config[key] = ev.payload
        elif kind == "tag":
            plain = ev.payload in (None, "", key, True)
            tag = key if plain else f"{key}:{ev.payload}"
            reason = check_tag(tag)
            if reason and key and key.strip() and len(tag) > MAX_TAG_LENGTH:
                # Too long for a W&B label (a path, a commit hash with its key): keep it,
                # whole, in the config under LONG_TAGS_CONFIG, where it stays searchable.
                long_tags = dict(plan.config.get(LONG_TAGS_CONFIG) or {})
                long_tags[key] = True if plain else ev.payload
                plan.config[LONG_TAGS_CONFIG] = long_tags
                return None
            if reason:
                return reason
            if tag not in plan.tags:
                plan.tags.append(tag)
        elif kind == "summary":
            if not key or key.startswith("_"):
                return "W&B summary keys must be non-empty and not start with '_'"
            plan.summary[key] = ev.payload
        elif kind == "note":
            plan.notes = str(ev.payload or "")
        elif kind in ("text", "dict"):
            rel = _safe_relpath(key)
            if rel is None:
                return f"file name {key!r} must be a relative path inside the run"
            data = ev.payload if kind == "text" else json.dumps(ev.payload, indent=2)
            plan.files[rel] = str(data if data is not None else "")
        elif kind == "system":
            plan.files["bridge/system.json"] = json.dumps(ev.payload, indent=2, default=str)
        elif kind == "event":
            plan.events.append(
                {"name": key, "ts_ms": ev.ts_ms, "step": ev.step, "node": ev.node,
                 "payload": ev.payload}
            )
            plan.events_name = plan.events_name or f"bridge/events/{ev.file_id}-{ev.seq}.jsonl"
        elif kind == "artifact":
            return self._plan_artifact(run, plan, ev)
        else:
            return f"the wandb backend does not know event kind {kind!r}"
        return None

    def _plan_artifact(self, run: RunInfo, plan: "_Plan", ev: Event) -> str | None:
        payload = ev.payload or {}
        # W&B artifact names allow no '/': a path-like name (``data/weights``, as Neptune and
        # MLflow name files) becomes ``data-weights``; the logged name stays in the metadata.
        logged = payload.get("name") or ev.key or ""
        name = logged.strip("/").replace("/", "-")
        reason = check_artifact_name(name)
        if reason:
            return reason
        files = []
        for f in payload.get("files", []):
            rel = _safe_relpath(f.get("path"))
            if rel is None:
                return f"artifact file path {f.get('path')!r} is not a relative path"
            blob = run.blob_path(f["sha256"])
            if not blob.exists():
                return f"artifact file {rel!r} is missing from the spool blob store"
            files.append((rel, f["sha256"], blob))
        plan.artifacts.append(
            {"name": name, "type": payload.get("type") or "file", "files": files,
             "metadata": {"source": payload.get("source"), "bridge_run_id": run.run_id,
                          "bridge_name": logged}}
        )
        return None

    # -- one W&B session --------------------------------------------------------

    def _session(
        self, run: RunInfo, rid: str, plan: "_Plan", *, exit_code: int, final: bool
    ) -> str | None:
        """Start a W&B session of the run, write ``plan``, finish it; return the fragment."""
        if not plan.initialized:
            plan.load(run.state)
        wandb = self.wandb
        settings = wandb.Settings(x_update_finish_state=final, **_QUIET)
        wb = wandb.init(
            project=wandb_project(self.project or run.project),
            entity=self.entity,
            id=rid,
            name=run.name,
            notes=plan.notes if plan.notes is not None else run.notes,
            group=self.group or run.group,
            job_type=self.job_type,
            tags=list(plan.tags),
            config=plan.config,
            dir=str(self.dir),
            mode=self.mode,
            resume="allow",
            reinit="create_new",
            settings=settings,
        )
        try:
            wb.define_metric(STEP_KEY)
            wb.define_metric("*", step_metric=STEP_KEY)
            for row in plan.rows:
                wb.log(row)
            self._write_files(wb, plan)
            for art in plan.artifacts:
                wb.log_artifact(self._artifact(art))
            for key, value in plan.summary.items():
                wb.summary[key] = value
            for key, value in plan.last.items():
                wb.summary[key] = value
        except BaseException:
            wb.finish(exit_code=1)
            self._discard(Path(wb.settings.sync_dir))
            raise
        wb.finish(exit_code=exit_code)
        if self.mode != "offline":
            return None
        sync_file = Path(wb.settings.sync_file)
        _fsync(sync_file)
        keep_private(sync_file.parent)
        return sync_file.parent.name

    def _write_files(self, wb: Any, plan: "_Plan") -> None:
        files = dict(plan.files)
        if plan.events:
            files[plan.events_name] = "".join(
                json.dumps(e, default=str) + "\n" for e in plan.events
            )
        for rel, text in files.items():
            target = Path(wb.dir) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            wb.save(str(target), base_path=wb.dir, policy="now")

    def _artifact(self, art: dict) -> Any:
        artifact = self.wandb.Artifact(art["name"], type=art["type"], metadata=art["metadata"])
        for rel, sha, blob in art["files"]:
            source = blob
            if self.mode == "offline":  # `wandb sync` reads it later: keep a copy in dir
                source = self.dir / "blobs" / sha[:2] / sha
                if not source.exists():
                    source.parent.mkdir(parents=True, exist_ok=True)
                    tmp = source.with_suffix(".part")
                    shutil.copyfile(blob, tmp)
                    os.replace(tmp, source)
            artifact.add_file(str(source), name=rel, policy="immutable")
        return artifact

    # -- what earlier sessions left ---------------------------------------------

    def _reconcile(self, rid: str, last_confirmed: str | None) -> Counter:
        """Metric points in fragments newer than the last confirmed one; drop broken ones."""
        from bridge.importers.wandb_log import WandbLogError, read_run, session_dirs, session_key

        seen: Counter = Counter()
        done = session_key(last_confirmed) if last_confirmed else None
        for frag_dir in session_dirs(self.wandb_dir, rid):
            key = session_key(frag_dir.name)
            if done and key and (key[0], key[2]) <= (done[0], done[2]):
                continue
            path = frag_dir / f"run-{rid}.wandb"
            try:
                log = read_run(path)
            except (OSError, WandbLogError):
                log = None
            if log is None or log.exit_code is None or log.truncated:
                self._discard(frag_dir)
                continue
            for row in log.history:
                seen.update(_points(row))
        return seen

    def _discard(self, fragment_dir: Path) -> None:
        """Rename a half-written fragment so ``wandb sync`` never uploads it."""
        if self.mode != "offline" or not fragment_dir.exists():
            return
        target = fragment_dir.with_name(f"discarded-{fragment_dir.name}")
        n = 1
        while target.exists():
            target = fragment_dir.with_name(f"discarded{n}-{fragment_dir.name}")
            n += 1
        fragment_dir.rename(target)


# -- helpers ------------------------------------------------------------------------


class _Plan:
    """What one W&B session will write, built from a batch and the carried state."""

    def __init__(self) -> None:
        self.initialized = False
        self.tags: list[str] = []
        self.config: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        self.auto_step: dict[str, int] = {}
        self.last: dict[str, float] = {}  # latest value per metric, for W&B's summary
        self.notes: str | None = None
        self.rows: list[dict[str, Any]] = []
        self.files: dict[str, str] = {}
        self.events: list[dict[str, Any]] = []
        self.events_name = ""
        self.artifacts: list[dict[str, Any]] = []
        self._row_key: tuple[int, int] | None = None

    @classmethod
    def from_state(cls, state: dict) -> "_Plan":
        plan = cls()
        plan.load(state)
        return plan

    def load(self, state: dict) -> None:
        """Every session carries the whole run's config, tags and summary: an offline
        fragment cannot read the server, and the last uploaded one wins."""
        self.initialized = True
        self.tags = list(state.get("tags", []))
        self.config = json.loads(json.dumps(state.get("config", {})))
        self.summary = dict(state.get("summary", {}))
        self.auto_step = dict(state.get("auto_step", {}))
        self.notes = state.get("notes")
        self.last = dict(state.get("last", {}))

    def adds_nothing_to(self, state: dict) -> bool:
        """True when this session would only repeat what W&B already has."""
        return not (self.rows or self.files or self.events or self.artifacts) and (
            self.tags == list(state.get("tags", []))
            and self.config == state.get("config", {})
            and self.summary == state.get("summary", {})
            and self.notes == state.get("notes")
        )

    def add_metric(self, key: str, step: int, ts_ms: int, value: float | None) -> None:
        # One row per (step, time): the values of one log() call share a row; a key
        # seen twice (another DDP rank, a repeat) starts a new row, nothing is merged.
        row = self.rows[-1] if self.rows else None
        if row is None or self._row_key != (step, ts_ms) or key in row:
            row = {STEP_KEY: step, "_timestamp": ts_ms / 1000.0}
            self.rows.append(row)
            self._row_key = (step, ts_ms)
        value = float("nan") if value is None else float(value)
        row[key] = value
        if math.isfinite(value):
            self.last[key] = value


def _value_id(value: float | None) -> str:
    return repr(float("nan") if value is None else float(value))


def _points(row: dict[str, Any]) -> Iterable[tuple[str, int, int, str]]:
    step, ts = row.get(STEP_KEY), row.get("_timestamp")
    if step is None or ts is None:
        return []
    ts_ms = int(round(float(ts) * 1000))
    return [
        (k, int(step), ts_ms, _value_id(v))
        for k, v in row.items()
        if not k.startswith("_") and k != STEP_KEY and isinstance(v, (int, float))
    ]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
