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
  Every name and format both directions share is in :mod:`bridge.adapters.wandb.names`.
* In-process background sync shares the process with the user's own ``wandb``: quiet,
  no code and no git capture are ``wandb.Settings`` of each session, never environment
  variables; only offline wandb's directories, which it reads from the environment alone,
  are set for the length of one session and removed after it (``_offline_home``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

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
from bridge.adapters.wandb import names
from bridge.adapters.wandb.names import (
    MAX_METRIC_KEY,
    HISTORY_SKIP_KEYS,
    LONG_TAGS_CONFIG,
    MAX_TAG_LENGTH,
    STEP_KEY,
    check_artifact_name,
    check_tag,
    exit_code_of,
    remote_run_id,
    wandb_project,
)
from bridge.adapters.wandb.plan import SessionPlan, points, value_id

SERVICE_ENV = "WANDB_SERVICE"  # where wandb publishes its service's address

__all__ = ["WandbAdapter", "check_artifact_name", "check_metric_key", "check_tag"]

_OPTIONS = {"project", "entity", "mode", "dir", "group", "job_type", "spool_dir"}
# What keeps the SDK quiet and off the user's files, as run settings: nothing of it
# reaches the process environment or the host program's own W&B runs.
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


def check_metric_key(key: str | None) -> str | None:
    """Why W&B would refuse (or silently mangle) this history key, or None."""
    if not key or not key.strip():
        return "W&B metric keys must not be empty"
    if key in HISTORY_SKIP_KEYS or key.startswith("_"):
        return f"W&B reserves keys starting with '_' and {STEP_KEY!r}"
    if len(key) > MAX_METRIC_KEY:
        return f"W&B metric keys are at most {MAX_METRIC_KEY} characters"
    if any(c in key for c in "\n\r\t"):
        return "W&B metric keys must not contain control characters"
    return None


def _safe_relpath(name: str | None) -> str | None:
    if not name:
        return None
    path = Path(name)
    if path.is_absolute() or ".." in path.parts or name.startswith("~"):
        return None
    return path.as_posix()


# -- the adapter --------------------------------------------------------------------


class WandbAdapter(BaseAdapter):
    """Delivers bridge runs to W&B; one finished W&B session per confirmed batch."""

    name: ClassVar[str] = "wandb"
    # One batch is one session: 20,000 events keep background sync at one session per
    # ``agent.session_interval`` (300 s) up to ~65 events a second of training.
    limits: ClassVar[Limits] = Limits(max_events=20_000)
    # Each export is one W&B session (init … finish), online and offline: in-process
    # background sync delivers this backend only every ``agent.session_interval`` while the
    # run runs (see bridge.agent.background).
    session_per_export: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise AdapterError(f"wandb: unknown option(s) {', '.join(sorted(unknown))}")
        self.mode = options.get("mode", "online")
        if self.mode not in names.MODES:
            raise AdapterError(f"wandb: mode must be 'online' or 'offline', not {self.mode!r}")
        self.project = options.get("project")
        self.entity = options.get("entity")
        self.group = options.get("group")
        self.job_type = options.get("job_type")
        self.dir = Path(options.get("dir") or names.default_dir(options.get("spool_dir")))
        self.dir = self.dir.absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.wandb = require("wandb", "wandb")
        self._seen: dict[str, Counter] = {}  # run id -> metric points already in W&B

    # -- environment ------------------------------------------------------------

    @contextmanager
    def _offline_home(self) -> Iterator[None]:
        """Offline, keep wandb's own files (the wandb-core log, artifact staging) under
        ``dir`` for one session.

        Quiet, no code and no git capture are run settings (``_QUIET``). wandb reads its
        config, cache, data and artifact directories only from the environment (``wandb.env``;
        wandb-core inherits it when the service starts): those variables the user has not
        set point into ``<dir>/.wandb-home/`` during the session and are removed after it,
        unless someone else changed one meanwhile. Online nothing is set."""
        added: dict[str, str] = {}
        if self.mode == "offline":
            home = self.dir / names.OFFLINE_HOME
            for var, sub in names.OFFLINE_HOME_DIRS.items():
                if var not in os.environ:
                    added[var] = os.environ[var] = str(home / sub)
        try:
            yield
        finally:
            for var, value in added.items():
                if os.environ.get(var) == value:
                    del os.environ[var]

    @property
    def wandb_dir(self) -> Path:
        return self.dir / names.WANDB_SUBDIR

    # -- contract ---------------------------------------------------------------

    def open_run(self, run: RunInfo) -> str:
        """No W&B call: reconcile with fragments a killed session left behind."""
        rid = remote_run_id(run.run_id)
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
        rid = remote_run_id(run.run_id)
        if rid not in self._seen:
            self.open_run(run)
        st = run.state
        rejected: dict[tuple[str, int], str] = {}
        plan = SessionPlan()
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
        code = exit_code_of(run.status) if closing else 0
        try:
            fragment = self._session(run, rid, plan, exit_code=code, final=closing)
        except Exception as exc:  # the SDK raises many types; nothing was confirmed
            self._abandon_session(rid)
            return ExportResult.retry(f"wandb: {type(exc).__name__}: {exc}")
        rejected.update(plan.media_failed)  # media W&B refused while the session logged
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
        rid = remote_run_id(run.run_id)
        plan = SessionPlan.from_state(run.state)
        fragment = self._session(
            run, rid, plan, exit_code=exit_code_of(status), final=True
        )
        if fragment:
            run.state["last_fragment"] = fragment

    def shutdown(self) -> None:
        self._seen.clear()
        if self.wandb.run is None:  # never stop a service the host program still uses
            self.wandb.teardown()

    # -- planning: events -> rows, config, files --------------------------------

    def _plan_event(self, run: RunInfo, st: dict, plan: "SessionPlan", ev: Event) -> str | None:
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
            point = (key, int(step), int(ev.ts_ms), value_id(ev.value))
            seen = self._seen.get(remote_run_id(run.run_id))
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
            tag = names.tag_label(key, ev.payload)
            plain = tag == key
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
            plan.files[names.SYSTEM_FILE] = json.dumps(ev.payload, indent=2, default=str)
        elif kind == "event":
            plan.events.append(
                {"name": key, "ts_ms": ev.ts_ms, "step": ev.step, "node": ev.node,
                 "payload": ev.payload}
            )
            plan.events_name = plan.events_name or names.events_file(ev.file_id, ev.seq)
        elif kind == "artifact":
            return self._plan_artifact(run, plan, ev)
        elif kind == "media":
            return self._plan_media(run, plan, ev)
        elif kind == "model":  # MLflow 3 logged models (the MLflow plugin's): models_out.py
            from bridge.adapters.wandb.models_out import plan_model

            return plan_model(run, plan, ev, _safe_relpath)
        elif kind == "dataset":  # MLflow's dataset inputs: a dataset artifact, models_out.py
            from bridge.adapters.wandb.models_out import plan_dataset

            return plan_dataset(run, plan, ev, self.dir / "blobs")
        else:
            return f"the wandb backend does not know event kind {kind!r}"
        return None

    def _plan_media(self, run: RunInfo, plan: "SessionPlan", ev: Event) -> str | None:
        """A media value in the row of its step (see :mod:`~bridge.adapters.wandb.media_out`);
        skipped when a session whose SUCCESS was lost already delivered it."""
        from bridge.adapters.wandb.media_out import (
            MediaValue,
            check_media,
            media_value_id,
            run_files,
        )

        key = ev.key or ""
        reason = check_metric_key(key) or check_media(ev.payload, run.blob_path)
        if reason:
            return reason
        step = ev.step
        if step is None:  # a series without steps: numbered like metrics
            step = plan.auto_step.get(key, 0)
            plan.auto_step[key] = step + 1
        if ev.payload.get("type") in ("file", "tensor"):  # no W&B history type: run files
            if _safe_relpath(key) is None:
                return f"media key {key!r} must be a relative path to be a W&B run file"
            seen = self._seen.get(remote_run_id(run.run_id)) or Counter()
            plan.media_files.extend(
                (rel, content)
                for rel, content in run_files(ev.payload, key, int(step), int(ev.ts_ms),
                                              run.blob_path)
                if not seen[_file_point(rel)])  # saved by a session whose SUCCESS was lost
            return None
        value = MediaValue(ev.uid, key, ev.payload)
        point = (key, int(step), int(ev.ts_ms), media_value_id(value))
        seen = self._seen.get(remote_run_id(run.run_id))
        if seen and seen[point] > 0:
            seen[point] -= 1
            return None
        plan.add_media(key, int(step), int(ev.ts_ms), value)
        return None

    def _plan_artifact(self, run: RunInfo, plan: "SessionPlan", ev: Event) -> str | None:
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
        self, run: RunInfo, rid: str, plan: "SessionPlan", *, exit_code: int, final: bool
    ) -> str | None:
        """Start a W&B session of the run, write ``plan``, finish it; return the fragment."""
        if not plan.initialized:
            plan.load(run.state)
        inherited = os.environ.get(SERVICE_ENV)
        try:
            with self._offline_home():
                return self._write_session(run, rid, plan, exit_code=exit_code, final=final)
        finally:
            # Starting wandb's service writes its address to the environment, for child
            # processes to share it; a child bridge sync killed mid-session would then leave
            # the run "in use" in that shared service. The host's environment stays as it was.
            if inherited is None:
                os.environ.pop(SERVICE_ENV, None)

    def _write_session(
        self, run: RunInfo, rid: str, plan: "SessionPlan", *, exit_code: int, final: bool
    ) -> str | None:
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
        from bridge.adapters.wandb.media_out import SessionMedia

        media = SessionMedia(wandb, run.blob_path, self.dir / names.MEDIA_STAGING / rid)
        try:
            wb.define_metric(STEP_KEY)
            wb.define_metric("*", step_metric=STEP_KEY)
            for row in plan.rows:
                media.log(wb, row)
            plan.media_failed = media.failed
            self._write_files(wb, plan)
            for art in plan.artifacts:
                wb.log_artifact(self._artifact(art))
            for key, value in plan.summary.items():
                wb.summary[key] = value
            for key, value in plan.last.items():
                wb.summary[key] = value
        except BaseException:
            wb.finish(exit_code=1)
            media.cleanup()
            self._discard(Path(wb.settings.sync_dir))
            raise
        wb.finish(exit_code=exit_code)
        media.cleanup()  # W&B has copied every staged file into the run (or its staging)
        if self.mode != "offline":
            return None
        sync_file = Path(wb.settings.sync_file)
        _fsync(sync_file)
        keep_private(sync_file.parent)
        return sync_file.parent.name

    def _write_files(self, wb: Any, plan: "SessionPlan") -> None:
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
        for rel, content in plan.media_files:
            target = Path(wb.dir) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                shutil.copyfile(content, target)
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
        for uri, ref_name in art.get("references", ()):  # a dataset's URI, never read
            artifact.add_reference(uri, name=ref_name, checksum=False)
        return artifact

    # -- what earlier sessions left ---------------------------------------------

    def _reconcile(self, rid: str, last_confirmed: str | None) -> Counter:
        """Metric points in fragments newer than the last confirmed one; drop broken ones."""
        from bridge.adapters.wandb.log import WandbLogError, read_run, session_dirs
        from bridge.adapters.wandb.names import session_key

        seen: Counter = Counter()
        done = session_key(last_confirmed) if last_confirmed else None
        for frag_dir in session_dirs(self.wandb_dir, rid):
            key = session_key(frag_dir.name)
            if done and key and (key[0], key[2]) <= (done[0], done[2]):
                continue
            path = frag_dir / names.log_file_name(rid)
            try:
                log = read_run(path)
            except (OSError, WandbLogError):
                log = None
            if log is None or log.exit_code is None or log.truncated:
                self._discard(frag_dir)
                continue
            for row in log.history:
                seen.update(points(row))
            seen.update(_file_point(rel) for rel in log.files
                        if rel.startswith(names.MEDIA_FILES_DIR))
        return seen

    def _abandon_session(self, rid: str) -> None:
        """After a failed session: a run the SDK registered and never finished keeps its id
        "in use" in wandb's service, and every retry of the batch would fail on it. Finish it
        (its fragment set aside), or stop the service when the host program has no W&B run
        of its own, so the retry starts clean."""
        wandb = self.wandb
        current = getattr(wandb, "run", None)
        if current is not None and getattr(current, "id", None) == rid:
            try:
                current.finish(exit_code=1)
            except Exception:  # a finish that timed out: the teardown below clears it
                pass
            try:
                self._discard(Path(current.settings.sync_dir))
            except Exception:
                pass
            current = getattr(wandb, "run", None)
        if current is None:  # no run of the host program's own: a fresh service
            try:
                wandb.teardown()
            except Exception:  # the retry reports what still fails
                pass

    def _discard(self, fragment_dir: Path) -> None:
        """Rename a half-written fragment so ``wandb sync`` never uploads it."""
        if self.mode != "offline" or not fragment_dir.exists():
            return
        n = 0
        target = fragment_dir.with_name(names.discarded_name(fragment_dir.name, n))
        while target.exists():
            n += 1
            target = fragment_dir.with_name(names.discarded_name(fragment_dir.name, n))
        fragment_dir.rename(target)


# -- helpers ------------------------------------------------------------------------


def _file_point(rel: str) -> tuple[str, int, int, str]:
    """A media run file (``file``/``tensor`` events) among the points a fragment holds."""
    return (rel, -1, -1, "file")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
