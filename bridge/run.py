"""The tracking API: ``init`` returns a :class:`Run`; every call records to the spool first.

The caller's thread validates cheaply and enqueues; :mod:`bridge.spool.writer` commits.
Bad input never raises into the training loop unless the run is ``strict``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, MutableMapping, Sequence

from bridge import exit_hooks, registry, writer_pool
from bridge.config import Settings, load, with_file_options
from bridge.errors import BridgeWarning, ConfigError, RunStateError, Terminated
from bridge.spool import blobs
from bridge.spool.events import Kind, artifact_payload
from bridge.spool.reader import find_run, max_step
from bridge.spool.writer import SpoolWriter
from bridge.system_info import record_system_info
from bridge.values import (MAX_TIMESTAMP_MS, Problem, check_key, clean_text, report, to_float,
                           to_json)

__all__ = ["Run", "init", "normalize_backends"]

_now = time.time_ns

_STATUSES = ("FINISHED", "FAILED", "KILLED")


def normalize_backends(backends: Any) -> list[dict]:
    """``["mlflow", {"name": "wandb", "mode": "offline"}]`` -> list of option dicts.

    Unknown names are an error here, at ``init``, not later at sync. So are credentials:
    an option named like one, or a URL holding a password (``http://user:pass@host``) or a
    secret query parameter, since the spec is stored in the spool and shown by the CLI.
    """
    from bridge.adapters.base import available_adapters, is_known_adapter
    from bridge.redact import is_secret_name, redact_text, url_has_credentials

    if backends is None:
        return []
    if isinstance(backends, (str, Mapping)):
        backends = [backends]
    out: list[dict] = []
    for b in backends:
        if isinstance(b, str):
            spec = {"name": b}
        elif isinstance(b, Mapping) and isinstance(b.get("name"), str):
            spec = dict(b)
        else:
            raise ConfigError(
                f"a backend is a name or a dict with a 'name', got {redact_text(repr(b))}")
        if not is_known_adapter(spec["name"]):
            raise ConfigError(f"unknown backend {spec['name']!r}; "
                              f"known: {', '.join(available_adapters())}")
        for k in spec:
            if is_secret_name(k) or any(s in k.lower() for s in ("key", "token", "secret",
                                                                  "password")):
                raise ConfigError(
                    f"backend option {k!r} looks like a credential: bridge never stores "
                    "credentials; set the vendor's own environment variable instead"
                )
        try:
            json.dumps(spec)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"backend options must be JSON values: {exc}") from exc
        for k, v in spec.items():
            # Same policy as credential-named options: the spec is stored in the spool's
            # runs table, so a password in a URL is refused, never stored (masked here).
            text = json.dumps(v, ensure_ascii=False)
            if url_has_credentials(text):
                raise ConfigError(
                    f"backend {spec['name']!r} option {k!r} has a credential in a URL "
                    f"({redact_text(text)}): bridge never stores credentials; remove it from "
                    "the URL and set the vendor's environment variables instead (MLflow: "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
                    "MLFLOW_TRACKING_TOKEN)"
                )
        out.append(spec)
    return out


class _Logged(MutableMapping):
    """A read view of what the run logged; setting an entry logs it, deleting is refused."""

    _what = "entries"

    def __init__(self, run: "Run") -> None:
        self._run = run
        self._data: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"{self._what} entries cannot be deleted once logged")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__.lstrip('_')}({self._data!r})"


class _Config(_Logged):
    """``run.config``: a dict whose every change is logged as a param."""

    _what = "config"

    def __setitem__(self, key: str, value: Any) -> None:
        self._run.log_param(key, value)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_data"][key]
        except KeyError:
            raise AttributeError(key) from None

    def update(self, other: Any = (), /, **kw: Any) -> None:  # type: ignore[override]
        self._run.log_params({**dict(other), **kw})


class _Summary(_Logged):
    """``run.summary``: final values shown on the run page (W&B's summary)."""

    _what = "summary"

    def __setitem__(self, key: str, value: Any) -> None:
        self._run._record(Kind.SUMMARY, "run.summary", key, value, store=self._data)

    def update(self, other: Any = (), /, **kw: Any) -> None:  # type: ignore[override]
        for k, v in {**dict(other), **kw}.items():
            self[k] = v


class Run:
    """One tracked run. Use :func:`bridge.init` to make one."""

    def __init__(self, *, run_id: str, project: str, name: str | None, notes: str | None,
                 group: str | None, backends: list[dict], settings: Settings,
                 writer: SpoolWriter, start_step: int, resumed: bool, node: str) -> None:
        self.id = run_id
        self.project = project
        self.name = name
        self.notes = notes
        self.group = group
        self.backends = backends
        self.dir = settings.dir
        self.settings = settings
        self.strict = settings.strict
        self.resumed = resumed
        self.node = node
        self.start_ms = _now() // 1_000_000
        self.status = "RUNNING"
        self.warnings = 0
        self.dropped = 0  # events the spool could not store (a full disk), set by finish()
        self.config = _Config(self)
        self.summary = _Summary(self)
        self.tags: dict[str, str] = {}
        self._step = start_step
        self._ok_keys: set[str] = set()
        self._writer = writer
        self._fast_log = getattr(writer, "fast_log", None)  # see log()
        self._finished = False
        self._sync = None  # background sync handle (bridge.agent.background)
        self._system_metrics = None  # bridge.system_metrics sampler, stopped by finish()
        self._writer.put_run(self._row())

    # -- for the writer pool (bridge.writer_pool): the run changes its own writer ----------

    def _use_writer(self, writer: SpoolWriter) -> None:
        """Write to ``writer`` from now on (a forked child's own), recording the run there."""
        self._writer = writer
        self._fast_log = getattr(writer, "fast_log", None)
        writer.put_run(self._row())

    def _detach_after_fork(self, placeholder: Any) -> None:
        """In a forked child: the parent's writer and background sync are the parent's."""
        self._writer = placeholder
        self._fast_log = None
        self._sync = None

    # -- identity ------------------------------------------------------------------------

    def _row(self) -> dict:
        return {"run_id": self.id, "project": self.project, "name": self.name,
                "notes": self.notes, "group_name": self.group,
                "backends": json.dumps(self.backends), "start_ms": self.start_ms}

    def __repr__(self) -> str:
        return f"<bridge.Run {self.project}/{self.name or self.id} {self.status}>"

    @property
    def step(self) -> int:
        """The step the next ``log()`` without ``step=`` will use."""
        return self._step

    # -- problems ------------------------------------------------------------------------

    def _problem(self, call: str, problem: str) -> None:
        self.warnings += 1
        self._writer.put_count(self.id, "warnings")
        report(call, problem, self.strict, stacklevel=5)

    def _artifact_problem(self, problem: str) -> None:
        """A problem the artifact thread found: warned (never raised: the call has returned,
        even with ``strict``) and counted like any other."""
        self.warnings += 1
        self._writer.put_count(self.id, "warnings")
        warnings.warn(f"bridge: log_artifact: {problem}", BridgeWarning, stacklevel=2)

    def _closed(self, call: str) -> bool:
        if self._finished:
            # Warned, and counted on this object only: the run's record in the spool is
            # final once finished (its writer may be closed by now).
            self.warnings += 1
            report(call, f"run {self.id} is finished; call ignored", self.strict, stacklevel=4)
            return True
        return False

    # -- metrics (the hot path) ------------------------------------------------------------

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        """Log a row of metrics (W&B style). Without ``step`` the run's step advances by one."""
        if step is None:
            step = self._step
            self._step = step + 1
        elif type(step) is int and 0 <= step < 1 << 62:
            if step >= self._step:
                self._step = step + 1
        else:
            step = self._bad_step("log", step)
            if step is None:
                return
        # The common case, every key seen before and every value a float, journaled in one
        # C call that reads the clock itself (bridge.spool.appender); False, nothing
        # written, sends it the long way.
        fast = self._fast_log
        if fast is not None and fast(self.id, step, data, self._ok_keys):
            return
        ts = _now() // 1_000_000
        ok = self._ok_keys
        items = []
        media = None
        try:
            for k, v in data.items():
                if type(v) is float and k in ok:
                    items.append((k, v))
                else:
                    m = self._slow_item("log", k, v, items, media_ok=True)
                    if m is not None:
                        media = media or []
                        media.append(m)
        except AttributeError:
            self._problem("log", f"expected a dict of metrics, got {type(data).__name__}")
            return
        if self._finished:
            self._closed("log")
            return
        if items:
            self._writer.put_metrics(self.id, step, ts, items)
        if media:
            for k, m in media:
                self._writer.put_media(self.id, k, step, ts, m)

    def _slow_item(self, call: str, key: Any, value: Any, items: list,
                   media_ok: bool = False) -> tuple[str, Any] | None:
        """Validate one entry: a metric goes to ``items``; media (``media_ok``) is returned
        as ``(key, Media)``; anything else is a counted problem."""
        try:
            check_key(key)
            try:
                items.append((key, to_float(value)))
                self._ok_keys.add(key)
                return None
            except Problem:
                if not media_ok:
                    raise
                from bridge.media import MediaError
                from bridge.media.convert import as_media

                if isinstance(value, str):
                    value, changed = clean_text(value)
                    if changed:
                        self._problem(call, f"{key!r:.80}: text is not valid Unicode (lone "
                                      "surrogates); each replaced by U+FFFD")
                try:
                    m = as_media(value)
                except MediaError as exc:
                    raise Problem(str(exc)) from None
                if m is None:
                    raise
                return (key, m)
        except Problem as exc:
            self._problem(call, f"{key!r:.80}: {exc}; not recorded")
        return None

    def log_media(self, key: str, value: Any, step: int | None = None,
                  timestamp: int | None = None) -> None:
        """Record one media value (an Image, a Histogram, a Table, a string...) at ``step``
        (stepless when None) and ``timestamp`` (ms; the call's time by default); the run's
        step does not advance. ``run.log({key: value}, step=...)`` is the usual way."""
        if self._closed("log_media"):
            return
        ts, step, ok = self._at(call="log_media", step=step, timestamp=timestamp)
        if not ok:
            return
        from bridge.media import MediaError
        from bridge.media.convert import as_media

        try:
            check_key(key)
            if isinstance(value, str):
                value, changed = clean_text(value)
                if changed:
                    self._problem("log_media", f"{key!r:.80}: text is not valid Unicode "
                                  "(lone surrogates); each replaced by U+FFFD")
            m = as_media(value)
            if m is None:
                raise Problem(f"{type(value).__name__} is not media (bridge.Image, "
                              "bridge.Histogram, bridge.Table, bridge.Audio, bridge.Video, "
                              "bridge.Html, bridge.Object3D or a string)")
        except (Problem, MediaError) as exc:
            self._problem("log_media", f"{key!r:.80}: {exc}; not recorded")
            return
        self._writer.put_media(self.id, key, step, ts, m)

    def _at(self, call: str, step: Any, timestamp: Any) -> tuple[int, int | None, bool]:
        """(timestamp ms, step, ok) of an MLflow-style call: a bad timestamp is replaced by
        the call's time, a bad step refuses the call (ok False); both are counted problems."""
        ts = _now() // 1_000_000
        if timestamp is not None:
            if type(timestamp) is int and 0 <= timestamp < MAX_TIMESTAMP_MS:
                ts = timestamp
            else:
                self._problem(call, "timestamp must be integer ms since the epoch before year "
                              f"10000, got {timestamp!r:.80}; the call's time is used")
        if step is not None and not (type(step) is int and 0 <= step < 1 << 62):
            step = self._bad_step(call, step)
            if step is None:
                return ts, None, False
        return ts, step, True

    def _bad_step(self, call: str, step: Any) -> int | None:
        try:
            if isinstance(step, bool):
                raise TypeError
            s = int(step.item()) if hasattr(step, "item") else int(step)
            if s != step or not 0 <= s < 1 << 62:
                raise ValueError
        except (TypeError, ValueError, AttributeError):
            self._problem(call, f"step must be a non-negative integer, got {step!r:.80}; "
                          "row not recorded")
            return None
        if s >= self._step:
            self._step = s + 1
        return s

    def log_metric(self, key: str, value: Any, step: int | None = None,
                   timestamp: int | None = None) -> None:
        """Log one metric (MLflow style). Without ``step`` it is stored stepless and the run's
        step does not advance; ``timestamp`` is in milliseconds since the epoch."""
        self.log_metrics({key: value}, step=step, timestamp=timestamp)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None,
                    timestamp: int | None = None) -> None:
        """Log several metrics at one step (MLflow style; the step does not auto-advance)."""
        if self._closed("log_metrics"):
            return
        ts, step, ok = self._at(call="log_metrics", step=step, timestamp=timestamp)
        if not ok:
            return
        items: list = []
        try:
            for k, v in metrics.items():
                self._slow_item("log_metrics", k, v, items)
        except AttributeError:
            self._problem("log_metrics", f"expected a dict, got {type(metrics).__name__}")
            return
        if items:
            self._writer.put_metrics(self.id, step, ts, items)

    # -- params, tags, summary, text ----------------------------------------------------

    def _record(self, kind: Kind, call: str, key: Any, value: Any,
                store: dict | None = None, step: int | None = None) -> bool:
        if self._closed(call):
            return False
        try:
            check_key(key)
        except Problem as exc:
            self._problem(call, f"{exc}; not recorded")
            return False
        payload = to_json(value, lambda p: self._problem(call, f"{key!r}: {p}"))
        if store is not None:
            store[key] = json.loads(payload)
        # kind.value: a plain str, which the journal's marshal takes as it is
        self._writer.put_event(self.id, kind.value, key, step, _now() // 1_000_000, None, payload)
        return True

    def log_param(self, key: str, value: Any) -> None:
        """Log a parameter; a dict value is nested config and stays nested in the spool."""
        self._record(Kind.PARAM, "log_param", key, value, store=self.config._data)

    def log_params(self, params: Mapping[str, Any]) -> None:
        try:
            items = list(params.items())
        except AttributeError:
            self._problem("log_params", f"expected a dict, got {type(params).__name__}")
            return
        for k, v in items:
            self._record(Kind.PARAM, "log_params", k, v, store=self.config._data)

    def set_tag(self, key: str, value: Any) -> None:
        """Set a tag; the value is stored as a string (as MLflow and Neptune do)."""
        if not isinstance(value, str):
            value = str(value)
        self._record(Kind.TAG, "set_tag", key, value, store=self.tags)

    def set_tags(self, tags: Mapping[str, Any] | Sequence[str]) -> None:
        """Set tags from a dict, or plain labels (W&B style) from a list: ``label -> ""``."""
        if isinstance(tags, Mapping):
            for k, v in tags.items():
                self.set_tag(k, v)
        elif isinstance(tags, (list, tuple, set)):
            for t in tags:
                self.set_tag(t, "")
        else:
            self._problem("set_tags", f"expected a dict or a list, got {type(tags).__name__}")

    def log_text(self, text: str, name: str) -> None:
        """Record a text file (e.g. ``"notes/eval.txt"``)."""
        if not isinstance(text, str):
            self._problem("log_text", f"text must be a string, got {type(text).__name__}; "
                          "stored as str()")
            text = str(text)
        self._record(Kind.TEXT, "log_text", name, text)

    def log_dict(self, dictionary: Any, name: str) -> None:
        """Record a JSON-serializable object as a file (e.g. ``"eval/report.json"``)."""
        self._record(Kind.DICT, "log_dict", name, dictionary)

    def log_event(self, name: str, payload: Any = None) -> None:
        """Record a free-form event (omega-ml's ``log_event``), e.g. ``("epoch_end", {...})``."""
        self._record(Kind.EVENT, "log_event", name, payload, step=self._step)

    def log_features(self, names: Sequence[str]) -> None:
        """Record the model's input feature names (Lab's ``log_features``)."""
        self._record(Kind.EVENT, "log_features", "features", list(names))

    # -- artifacts -------------------------------------------------------------------------

    def log_artifact(self, path: str | os.PathLike, name: str | None = None,
                     type: str = "file", copy: bool | None = None) -> None:
        """Record a file or directory; the caller pays a ``stat`` per file, no more.

        Hashing and copying into the spool (sha256-addressed, deduplicated) happen on the
        writer's artifact thread, and the event commits once the copy is durable; ``flush()``
        and ``finish()`` wait for it. ``copy=False`` records the path, size, mtime and sha256
        without a second copy: the sync checks the file is unchanged and dead-letters it, with
        the reason, if it changed or vanished. ``copy=None`` copies unless the artifact is
        larger than the ``artifact_reference_mb`` setting (0 = always copy).
        """
        if self._closed("log_artifact"):
            return
        from bridge.spool.artifacts import ArtifactJob, snapshot, stage

        src = Path(path)
        try:
            is_dir, files = snapshot(src)
            source = str(src.resolve())
        except OSError as exc:
            self._problem("log_artifact", f"{exc}; artifact not recorded")
            return
        art_name = name or src.name
        try:
            check_key(art_name)
        except Problem as exc:
            self._problem("log_artifact", f"{exc}; not recorded")
            return
        if copy is None:
            limit = self.settings.artifact_reference_mb * 1e6
            copy = not (limit > 0 and sum(f.size for f in files) > limit)
        if copy:
            try:  # hard links: a file deleted or replaced after this call is copied as it was
                files = stage(files, self.dir)
            except OSError:
                pass  # an unsafe or unwritable blob store: the copy will say so
        job = ArtifactJob(self.id, art_name, type, is_dir, source, files, bool(copy),
                          _now() // 1_000_000, on_problem=self._artifact_problem)
        try:
            self._writer.put_artifact(job)
        except OSError as exc:  # durability "commit"/"fsync": stored on this thread
            self._problem("log_artifact", f"{exc}; artifact not recorded")

    def log_model(self, model: Any, name: str) -> None:
        """Pickle a model into an artifact of type ``model`` (Lab's ``log_model``)."""
        if self._closed("log_model"):
            return
        import pickle

        try:
            data = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            self._problem("log_model", f"cannot pickle {type(model).__name__}: {exc}")
            return
        try:
            sha, size = blobs.store_bytes(self.dir, data)
        except OSError as exc:  # a full disk, an unsafe blob store
            self._problem("log_model", f"{exc}; model not recorded")
            return
        self._writer.put_blob(sha, size)
        self._record(Kind.ARTIFACT, "log_model", name,
                     artifact_payload(name, [{"path": f"{name}.pkl", "sha256": sha,
                                              "size": size}],
                                      type="model", is_dir=False, format="pickle"))

    # -- lifecycle -------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything logged so far is committed to the spool."""
        return self._writer.flush(timeout)

    def finish(self, status: str = "FINISHED", error: str | None = None,
               timeout: float | None = None) -> None:
        """End the run: record its status, flush, wait a bounded time for background sync."""
        if self._finished:
            return
        if status not in _STATUSES:
            raise ConfigError(f"status must be one of {_STATUSES}, got {status!r}")
        thread = getattr(self, "_system_thread", None)
        if thread is not None:
            thread.join(timeout=5)
        if self._system_metrics is not None:
            self._system_metrics.stop()
        self._fast_log = None  # a call after finish() goes the long way, which reports it
        self._finished = True
        self.status = status
        self._writer.put_finish(self.id, _now() // 1_000_000, status, error)
        stored = self._writer.flush()
        self.dropped = self._writer.dropped_by_run.get(self.id, 0)
        if self.dropped or not stored:
            left = "" if stored else (
                f"; the rest is not in the spool yet ({self._writer.last_error}) and is kept in "
                "memory, retried until the process exits")
            warnings.warn(f"bridge: run {self.id} finished with {self.dropped} events dropped "
                          f"(counted as 'dropped'){left}", BridgeWarning, stacklevel=2)
        registry.forget(self)
        if self._sync is not None:
            wait = self.settings.finish_timeout if timeout is None else timeout
            self._sync.finish(wait)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, (KeyboardInterrupt, Terminated)):
            self.finish("KILLED", error=exc_type.__name__)
        else:
            import traceback

            text = "".join(traceback.format_exception(exc_type, exc, tb))[-20_000:]
            self.finish("FAILED", error=text)

    def data(self, **filters: Any):
        """This run's events as a DataFrame (see :func:`bridge.data`)."""
        from bridge.query import data

        self.flush()
        return data(run=self.id, dir=self.dir, **filters)


def init(
    project: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | Sequence[str] | None = None,
    notes: str | None = None,
    group: str | None = None,
    backends: Sequence[str | Mapping[str, Any]] | None = None,
    run_id: str | None = None,
    resume: str | None = None,
    dir: str | os.PathLike | None = None,
    sync: str | None = None,
    durability: str | None = None,
    strict: bool | None = None,
    node: str | None = None,
    mode: str | None = None,
    system_metrics: bool | float | None = None,
    **settings: Any,
) -> Run:
    """Start (or resume) a run and make it the current one.

    ``backends``: names or ``{"name": ..., **options}``; ``sync``: "background" (default when
    backends are given) or "offline"; ``resume``: "allow" or "must" with ``run_id``;
    ``node``: this process's rank or host label (default: ``RANK``/``LOCAL_RANK`` or host).
    ``mode="disabled"`` (or ``BRIDGE_MODE=disabled``) returns a run whose every call is a
    no-op; ``system_metrics=True`` or seconds samples the machine into ``system/*`` series.
    Other keyword arguments are settings from ``bridge.toml`` (``flush_interval``, ...).
    """
    mode = mode if mode is not None else os.environ.get("BRIDGE_MODE") or None
    if mode not in (None, "enabled", "disabled"):
        raise ConfigError(f"mode must be 'enabled' or 'disabled', got {mode!r}")
    if mode == "disabled":
        from bridge.disabled import init as disabled_init

        return disabled_init(project=project, name=name, config=config,  # type: ignore[return-value]
                             tags=tags, notes=notes, group=group, run_id=run_id, dir=dir)
    from bridge.system_metrics import check_interval

    sample_every = check_interval(system_metrics)
    s = load(dir=dir, sync=sync, durability=durability, strict=strict, **settings)
    specs = normalize_backends(backends if backends is not None else list(s.backends))
    specs = [with_file_options(spec, s) for spec in specs]  # [backends.<name>] defaults
    if resume not in (None, "allow", "must", "never"):
        raise ConfigError(f"resume must be 'allow', 'must' or 'never', got {resume!r}")
    if run_id is not None:
        if not (isinstance(run_id, str) and len(run_id) == 32
                and all(c in "0123456789abcdef" for c in run_id)):
            raise ConfigError(f"run_id must be 32 lowercase hex characters, got {run_id!r}")
    elif resume == "must":
        raise ConfigError("resume='must' needs a run_id")
    s.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = find_run(s.dir, run_id) if run_id else None
    start_step = 0
    if existing is not None:
        if resume in (None, "never"):
            raise RunStateError(
                f"run {run_id} already exists in {s.dir}; pass resume='allow' to continue it"
            )
        project = project or existing.project
        name = name or existing.name
        notes = notes if notes is not None else existing.notes
        group = group or existing.group
        specs = specs or existing.backends
        start_step = max_step(existing.files, run_id) + 1
    elif resume == "must":
        raise RunStateError(f"resume='must': run {run_id} is not in {s.dir}")
    node = node if node is not None else _default_node()
    project, name, notes, group, node = (
        _identity_text(field, value, s.strict) for field, value in
        (("project", project), ("name", name), ("notes", notes), ("group", group), ("node", node)))
    writer = writer_pool.writer_for(s, node)
    import uuid

    run = Run(run_id=run_id or uuid.uuid4().hex, project=project or "default", name=name,
              notes=notes, group=group, backends=specs, settings=s, writer=writer,
              start_step=start_step, resumed=existing is not None, node=node)
    registry.register(run)
    exit_hooks.install()
    if notes is not None:
        run._record(Kind.NOTE, "init", "notes", notes)
    if config:
        try:
            run.log_params(dict(config))
        except (TypeError, ValueError):
            run._problem("init", f"config must be a dict, got {type(config).__name__}")
    if tags:
        run.set_tags(tags)
    run._system_thread = record_system_info(writer, run.id, run.start_ms)
    if sample_every is not None:
        from bridge.system_metrics import SystemMetricsSampler

        run._system_metrics = SystemMetricsSampler(run, sample_every).start()
    if specs and s.sync == "background":
        from bridge.agent.background import start_background_sync

        run._sync = start_background_sync(run)
    return run


def _identity_text(field: str, value: Any, strict: bool) -> Any:
    """A run's names must be text the spool can store (see :func:`bridge.values.clean_text`)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{field} must be a string, got {type(value).__name__} {value!r:.80}")
    cleaned, changed = clean_text(value)
    if changed:
        report("init", f"{field} {value!r:.80} is not valid Unicode (lone surrogates); "
               "each replaced by U+FFFD", strict, stacklevel=4)
    return cleaned


def _default_node() -> str:
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(var):
            return f"rank{os.environ[var]}"
    return os.uname().nodename

