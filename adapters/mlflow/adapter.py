"""MLflow backend: a tracking server (``http://…``) or an embedded sqlite store.

The adapter speaks to a tracking server through bridge's own REST client
(``rest``: no MLflow import in the sync process) and to any other store through
``mlflow.MlflowClient``; both are used the same way, and neither through MLflow's fluent
API (no process-wide active run). Each export turns the batch into as few ``log_batch`` requests
as MLflow's limits allow, then uploads files. Replays are harmless: MLflow's SQL store
ignores a metric point identical in (key, value, step, timestamp), an identical param,
and a tag or artifact written again with the same content; so at-least-once delivery
from the agent is exactly-once in effect. The mapping is documented in
``docs/backends/mlflow.md``; the names and formats are in ``names``.

No process-wide setting is changed: the REST client is given its timeout (and never
retries by itself); ``MlflowClient`` over HTTP, which reads its retry count and timeout only
from environment variables, gets them for each call through ``sdk_env.ScopedClient`` (set
when unset, removed after the call, and not at all in a user's process running an
in-process background sync); the embedded store makes no HTTP request and needs neither.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar, Iterator, Mapping, NoReturn, Sequence

from bridge.adapters.base import (
    AdapterError,
    BaseAdapter,
    Event,
    ExportResult,
    Limits,
    RemoteRunLost,
    RunInfo,
    TransientError,
    flatten,
    require,
)
from bridge.adapters.mlflow import media, names
from bridge.adapters.mlflow.embedded import create_whole
from bridge.adapters.mlflow.names import (
    GROUP_TAG,
    MLFLOW_PARENT_TAG,
    NOTE_TAG,
    PARENT_TAGS,
    RUN_ID_TAG,
    RUN_STATUSES,
)

__all__ = ["MlflowAdapter", "RetryableError"]

# MLflow's own limits (mlflow/utils/validation.py).
MAX_ENTITIES_PER_REQUEST = 1000
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_REASON = 2000  # MLflow's messages can quote a whole 6000-char param value
MAX_SYSTEM_TAGS = 20
# A child run whose parent is not in MLflow yet waits for it (the agent syncs runs in
# parallel): at most this many retries, each after about this many seconds.
MAX_PARENT_WAITS = 5
PARENT_WAIT_SECONDS = 0.5

DEFAULT_HTTP_TIMEOUT_S = "30"
# What ``MlflowClient`` over HTTP is given for each call (unless the user set them): the
# agent owns retries, and MLflow's own (up to 7, with backoff) would block a sync for
# minutes while a server is down, and hide the outage from the agent.
SDK_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": DEFAULT_HTTP_TIMEOUT_S}

# Error codes that say "try again later" (the data itself is fine). Authentication and
# unknown endpoints are configuration problems: retrying keeps the data until they are
# fixed, where a dead letter would drop it.
_RETRYABLE_CODES = frozenset({
    "INTERNAL_ERROR",
    "TEMPORARILY_UNAVAILABLE",
    "REQUEST_LIMIT_EXCEEDED",
    "DEADLINE_EXCEEDED",
    "ABORTED",
    "RESOURCE_EXHAUSTED",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "CUSTOMER_UNAUTHORIZED",
    "ENDPOINT_NOT_FOUND",
    "IO_ERROR",
})  # fmt: skip
# Error codes where MLflow refuses what was sent: find the offending entity and reject it.
_ENTITY_CODES = frozenset(
    {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE", "MALFORMED_REQUEST"}
)
_SCALARS = (str, int, float, bool)
MISSING = "RESOURCE_DOES_NOT_EXIST"
# MLflow's local artifact repository refuses a bad path with a bare MlflowException (no
# error code, so INTERNAL_ERROR): recognise the refusal by its message.
_BAD_PATH = re.compile(r"^Invalid (artifact )?path\b")
_HTTP_STATUS = re.compile(r"too many (\d{3}) error responses|error code (\d{3}) != 200")


class RetryableError(TransientError):
    """A transient failure in ``open_run``/``close_run``: the agent retries later.

    Any other :class:`AdapterError` from those calls is permanent (bad configuration, a
    deleted run or experiment): retrying without a change cannot succeed.
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason, retry_after)
        self.reason = reason


@dataclass(frozen=True)
class _Failure:
    """How an MLflow error should be handled."""

    retryable: bool
    reason: str
    retry_after: float | None = None
    entity: bool = False  # MLflow refused something in the request: isolate the offender
    code: str = ""  # MLflow's error code


class _Abort(Exception):
    """Stop the export: the batch is retried (``retryable``) or refused as a whole."""

    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class _Unsendable(Exception):
    """An artifact file that can never be sent (bytes missing from the spool, bad path)."""


@dataclass
class _Item:
    """One MLflow entity of a ``log_batch`` request and the events it carries."""

    kind: str  # "metric" | "param" | "tag"
    key: str
    value: Any
    step: int = 0
    ts_ms: int = 0
    uids: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class _FileOp:
    """An artifact write that belongs to some events."""

    uids: list[tuple[str, int]]
    action: str  # "text" | "dict" | "artifact" | "events" | "tag" | "media" | "tables"
    #            | "model" | "dataset" (payload: the event; models_out.py)
    path: str
    payload: Any = None


def _clip(text: str, limit: int = MAX_REASON) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(exc: BaseException) -> float | None:
    """A ``Retry-After`` header found on any response in the exception chain, in seconds."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        headers = getattr(getattr(cur, "response", None), "headers", None)
        value = headers.get("Retry-After") if headers is not None else None
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(value)
                    return max(0.0, when.timestamp() - time.time())
                except (TypeError, ValueError):
                    return None
        cur = cur.__cause__ or cur.__context__
    return None


def classify(exc: BaseException) -> _Failure:
    """Map an exception from the MLflow client to retry / reject / refuse-the-batch."""
    message = _clip(str(exc))
    if isinstance(exc, OSError):  # local artifact store: disk full, permissions, ...
        return _Failure(True, f"{type(exc).__name__}: {message}")
    code = getattr(exc, "error_code", None) or "INTERNAL_ERROR"
    http: str | None = None
    if getattr(exc, "http_status", None):  # bridge's REST client
        http = str(exc.http_status)  # type: ignore[attr-defined]
    else:  # MlflowClient says it in the message only
        status = _HTTP_STATUS.search(message)
        http = next((g for g in status.groups() if g), None) if status else None
    if http is not None and (http in ("408", "429") or http.startswith("5")):
        return _Failure(True, f"HTTP {http}: {message}", _retry_after(exc), code=code)
    if http is None and _BAD_PATH.match(message):
        code = "INVALID_PARAMETER_VALUE"  # a refusal of the path, not an internal error
    if code in _RETRYABLE_CODES:
        return _Failure(True, message, _retry_after(exc), code=code)
    if "must be in the 'active' state" in message:
        return _Failure(False, message, code=code)  # deleted in MLflow: nothing will land
    if not message.startswith(code):  # the REST client prefixes the code, the SQL store not
        message = f"{code}: {message}"
    if code in _ENTITY_CODES:
        return _Failure(False, message, entity=True, code=code)
    return _Failure(False, message, code=code)


def _artifact_name(path: Any, *, file: bool) -> str | None:
    """A file or folder name inside the run's artifact folder, normalized, or ``_Unsendable``.

    The same rule for both clients, checked before MLflow is called: a name is relative
    and never climbs out (no ``..`` component, with ``/`` or ``\\`` as separator; not
    absolute, POSIX or Windows); empty and ``.`` components are dropped (``./a//b.txt`` is
    ``a/b.txt``). MLflow's own checks differ by store (the embedded store answers a bad path
    with an error that looks transient), so a bad name is refused here, as a dead letter.
    """
    if path is None or path == "":
        if file:
            raise _Unsendable("an empty file name")
        return None
    if not isinstance(path, str):
        raise _Unsendable(f"the artifact name {path!r} is not a string")
    if any(ord(c) < 32 for c in path):
        raise _Unsendable(f"the artifact name {path!r} holds control characters")
    if path.startswith(("/", "\\")) or PureWindowsPath(path).is_absolute():
        raise _Unsendable(f"the artifact name {path!r} is absolute; names are relative "
                          "to the run's artifact folder")
    if ".." in re.split(r"[/\\]", path):
        raise _Unsendable(f"the artifact name {path!r} leaves the run's artifact folder "
                          "('..')")
    parts = [p for p in PurePosixPath(path).parts if p not in ("", ".")]
    if not parts:
        if file:
            raise _Unsendable(f"the artifact name {path!r} names no file")
        return None
    if file and path.endswith(("/", "\\")):
        raise _Unsendable(f"the artifact name {path!r} names a folder, not a file")
    return "/".join(parts)


# A text event's payload as a file: the summary's encoding (strings as is, else JSON).
_json_text = names.encode_summary


def _stringify(value: Any) -> str:
    """Param and tag values as ``mlflow.log_param`` stores them (``str()``)."""
    return value if isinstance(value, str) else str(value)


class MlflowAdapter(BaseAdapter):
    """Deliver bridge runs to MLflow through ``MlflowClient``.

    Options: ``tracking_uri`` (default: an embedded store ``sqlite:///<spool_dir>/mlflow.db``
    with artifacts in ``<spool_dir>/mlartifacts``), ``experiment`` (default: the run's
    project; created when missing), ``client`` (``"auto"``: bridge's own REST client for an
    ``http(s)://`` server, ``MlflowClient`` for any other URI; ``"mlflow"`` forces
    ``MlflowClient``) and ``spool_dir`` (always passed by the agent).
    """

    name: ClassVar[str] = "mlflow"
    checks_remote: ClassVar[bool] = True  # one runs/get per delivered run (check_remote)
    limits: ClassVar[Limits] = Limits(max_events=MAX_ENTITIES_PER_REQUEST)
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"tracking_uri", "experiment", "spool_dir", "client"})

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - self.OPTIONS)
        if unknown:
            raise AdapterError(
                f"unknown mlflow option(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(self.OPTIONS))}"
            )
        spool_dir = options.get("spool_dir")
        self.spool_dir = Path(spool_dir) if spool_dir else None
        self.experiment = options.get("experiment") or None
        tracking_uri = options.get("tracking_uri") or None
        self.embedded = tracking_uri is None
        if tracking_uri is None:
            if self.spool_dir is None:
                raise AdapterError("mlflow: set tracking_uri, or spool_dir for the embedded store")
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            tracking_uri = names.embedded_tracking_uri(self.spool_dir)
        self.tracking_uri: str = tracking_uri
        # Runs synced at once by the agent (one client each): a server handles requests in
        # parallel, a SQLite store serializes its writers.
        self.concurrent_runs = 1
        http = tracking_uri.startswith(("http://", "https://"))
        client = options.get("client") or "auto"
        if client not in ("auto", "rest", "mlflow"):
            raise AdapterError(f"mlflow: client must be 'auto', 'rest' or 'mlflow', not {client!r}")
        if client == "rest" and not http:
            raise AdapterError(f"mlflow: client='rest' needs an http(s) tracking_uri, not {tracking_uri!r}")
        if http:
            self.concurrent_runs = 4
        self.client_kind = "rest" if http and client != "mlflow" else "mlflow"
        self.client: Any
        if self.client_kind == "rest":
            # A server speaks REST: no MLflow import (about 230 MB and a second of start-up).
            from bridge.adapters.mlflow import rest

            timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", DEFAULT_HTTP_TIMEOUT_S))
            self._exc_type: type[BaseException] = rest.MlflowRestError
            self._entities: Any = rest
            self.client = rest.MlflowRestClient(tracking_uri, timeout=timeout,
                                                sdk_env=SDK_HTTP_ENV)
        else:
            self._mlflow = require("mlflow", "mlflow")
            self._exc_type = require("mlflow.exceptions", "mlflow").MlflowException
            self._entities = require("mlflow.entities", "mlflow")
            if self.embedded:
                create_whole(names.embedded_db(self.spool_dir), self._mlflow)
            self.client = self._mlflow.MlflowClient(tracking_uri=tracking_uri)
            if http:
                from bridge.adapters.mlflow.sdk_env import ScopedClient

                self.client = ScopedClient(self.client, SDK_HTTP_ENV)
        self._experiments: dict[str, str] = {}
        self._remote: dict[str, str] = {}
        self._parents: dict[str, str] = {}  # parent's bridge id -> its MLflow run id
        self._parent_waits: dict[str, int] = {}  # parent's bridge id -> retries spent on it

    # -- runs --------------------------------------------------------------------------
    def open_run(self, run: RunInfo) -> str:
        """Find the MLflow run of this bridge run (by remote id, then by tag) or create it.

        A remote id the agent mapped before must still name this run: when it does not
        (the store was wiped or replaced, the run purged), :class:`RemoteRunLost`.
        """
        for attempt in (0, 1):
            try:
                remote = self._open(run)
                break
            except self._exc_type as exc:
                if attempt == 0 and _code(exc) == MISSING and self._experiments:
                    # An experiment id cached before the store was wiped: look it up again.
                    self._experiments.clear()
                    self._parents.clear()
                    continue
                raise self._as_error(exc, f"mlflow: cannot open run {run.run_id}") from exc
            except OSError as exc:
                raise RetryableError(f"mlflow: cannot open run {run.run_id}: {exc}") from exc
        self._remote[run.run_id] = remote
        run.state["mlflow_run_id"] = remote
        return remote

    def close_run(self, run: RunInfo, status: str, end_time_ms: int) -> None:
        """Set MLflow's status and end time (bridge's statuses are MLflow's names)."""
        if status not in RUN_STATUSES:
            raise AdapterError(f"mlflow: unknown run status {status!r}")
        remote = self._remote_id(run)
        try:
            self.client.set_terminated(remote, status=status, end_time=int(end_time_ms))
        except self._exc_type as exc:
            if _code(exc) == MISSING and self._gone(remote):
                self._lost(run, remote, "no longer exists")
            raise self._as_error(exc, f"mlflow: cannot close run {remote}") from exc

    def check_remote(self, run: RunInfo) -> None:
        """One ``runs/get``: the mapped MLflow run still exists and is this bridge run's.

        Raises :class:`RemoteRunLost` when it is gone, :class:`RetryableError` when MLflow
        cannot say now. A run deleted (not purged) in MLflow still exists: not lost.
        """
        remote = self._mapped(run)
        if not remote:
            return
        try:
            found = self.client.get_run(remote)
        except self._exc_type as exc:
            failure = classify(exc)
            if failure.retryable:
                raise RetryableError(f"mlflow: cannot check run {remote}: {failure.reason}",
                                     failure.retry_after) from exc
            self._lost(run, remote, f"cannot be read ({failure.reason})")
        except OSError as exc:
            raise RetryableError(f"mlflow: cannot check run {remote}: {exc}") from exc
        self._check_owner(run, found)

    def _mapped(self, run: RunInfo) -> str | None:
        return self._remote.get(run.run_id) or run.remote_id or run.state.get("mlflow_run_id")

    def _gone(self, remote: str) -> bool | None:
        """Whether MLflow says the run does not exist (None: it cannot say now)."""
        try:
            self.client.get_run(remote)
        except self._exc_type as exc:
            if _code(exc) == MISSING:
                return True
            return None if classify(exc).retryable else False
        except OSError:
            return None
        return False

    def _check_owner(self, run: RunInfo, found: Any) -> None:
        owner = found.data.tags.get(RUN_ID_TAG, run.run_id)
        if owner != run.run_id:
            self._lost(run, found.info.run_id, f"now belongs to bridge run {owner}")

    def _lost(self, run: RunInfo, remote: str, why: str) -> NoReturn:
        """Forget what this adapter knew about the run, then raise :class:`RemoteRunLost`."""
        self._remote.pop(run.run_id, None)
        run.state.pop("mlflow_run_id", None)
        self._experiments.clear()  # a wiped store has new experiment ids too
        self._parents.clear()
        raise RemoteRunLost(
            f"mlflow: run {remote} that bridge run {run.run_id} was delivered to {why} "
            "(the tracking store was wiped or replaced, or the run purged)"
        )

    def shutdown(self) -> None:
        close = getattr(self.client, "close", None)
        if self.client_kind == "rest" and close is not None:
            close()
        self._remote.clear()
        self._experiments.clear()

    def _as_error(self, exc: BaseException, context: str) -> AdapterError:
        failure = classify(exc)
        if failure.retryable:
            return RetryableError(f"{context}: {failure.reason}", failure.retry_after)
        return AdapterError(f"{context}: {failure.reason}")

    def _remote_id(self, run: RunInfo) -> str:
        return self._mapped(run) or self.open_run(run)

    def _experiment_id(self, run: RunInfo) -> str:
        name = self.experiment or run.project or "Default"
        if name in self._experiments:
            return self._experiments[name]
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if self.embedded and self.spool_dir is not None:
                location = names.embedded_artifacts(self.spool_dir.resolve()).as_uri()
            try:
                exp_id = self.client.create_experiment(name, artifact_location=location)
            except self._exc_type as exc:
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = self.client.get_experiment_by_name(name)  # created meanwhile by a peer
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise AdapterError(
                f"mlflow: experiment {name!r} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {exp_id}) or choose another name"
            )
        self._experiments[name] = exp_id
        return exp_id

    def _open(self, run: RunInfo) -> str:
        exp_id = self._experiment_id(run)
        found = self._known_run(run) or self._find_run(exp_id, run)
        if found is None:
            tags = {RUN_ID_TAG: run.run_id}
            if run.notes:
                tags[NOTE_TAG] = run.notes
            if run.group:
                tags[GROUP_TAG] = run.group
            created = self.client.create_run(
                exp_id, start_time=run.start_ms or None, tags=tags, run_name=run.name
            )
            # Two machines may create the run at once: both then keep the same one (the
            # oldest, ties broken by id) and the other deletes the copy it made.
            found = self._find_run(exp_id, run) or created
            if found.info.run_id != created.info.run_id:
                self.client.delete_run(created.info.run_id)
            return found.info.run_id
        if found.info.lifecycle_stage == "deleted":
            raise AdapterError(
                f"mlflow: run {found.info.run_id} (bridge run {run.run_id}) is deleted in "
                f"MLflow; restore it (mlflow runs restore --run-id {found.info.run_id}) to sync"
            )
        tags = found.data.tags
        update = {}
        if run.notes and tags.get(NOTE_TAG) != run.notes:
            update[NOTE_TAG] = run.notes
        if run.group and tags.get(GROUP_TAG) != run.group:
            update[GROUP_TAG] = run.group
        if RUN_ID_TAG not in tags:
            update[RUN_ID_TAG] = run.run_id
        if update:
            entities = self._entities
            self.client.log_batch(
                found.info.run_id, tags=[entities.RunTag(k, v) for k, v in update.items()]
            )
        return found.info.run_id

    def _known_run(self, run: RunInfo) -> Any:
        remote = self._mapped(run)
        if not remote:
            return None
        try:
            found = self.client.get_run(remote)
        except self._exc_type as exc:
            failure = classify(exc)
            if failure.retryable:
                raise
            # Not on this server (a wiped or new store, another tracking URI): what was
            # delivered there is not here, so the whole run must be delivered again.
            self._lost(run, remote, f"cannot be read ({failure.reason})")
        self._check_owner(run, found)
        return found

    def _waiting_for_parent(self, run: RunInfo, batch: Sequence[Event]) -> str | None:
        """The bridge id of a parent this batch names that MLflow does not hold yet, while
        it may still arrive: the agent syncs several runs at once, and a child delivered
        before its parent would lose its nesting. After MAX_PARENT_WAITS retries (a parent
        that is not delivered here at all) the run goes on; ``bridge.parent_run_id`` keeps
        the link."""
        for ev in batch:
            if (ev.kind == "tag" and ev.key in PARENT_TAGS and _is_bridge_id(ev.payload)
                    and ev.payload != run.run_id
                    and self._parent_remote(run, ev.payload) is None):
                waits = self._parent_waits.get(ev.payload, 0)
                if waits < MAX_PARENT_WAITS:
                    self._parent_waits[ev.payload] = waits + 1
                    return ev.payload
        return None

    def _parent_remote(self, run: RunInfo, bridge_id: str) -> str | None:
        """The MLflow id of a parent run given by its bridge id (synced before its child)."""
        if bridge_id in self._parents:
            return self._parents[bridge_id]
        try:
            runs = self.client.search_runs(
                [self._experiment_id(run)], filter_string=names.run_filter(bridge_id),
                max_results=1)
        except self._exc_type:
            return None
        remote = runs[0].info.run_id if runs else None
        if remote is not None:
            self._parents[bridge_id] = remote
        return remote

    def _find_run(self, exp_id: str, run: RunInfo) -> Any:
        view_all = self._entities.ViewType.ALL
        runs = self.client.search_runs(
            [exp_id],
            filter_string=names.run_filter(run.run_id),
            run_view_type=view_all,
            max_results=50,
        )
        if not runs:
            return None
        return min(
            runs,
            key=lambda r: (
                r.info.lifecycle_stage != "active", r.info.start_time or 0, r.info.run_id
            ),
        )

    # -- export ------------------------------------------------------------------------
    def export(self, run: RunInfo, batch: Sequence[Event]) -> ExportResult:
        """Deliver one batch: entities by ``log_batch``, then files as artifacts."""
        try:
            remote = self._remote_id(run)
        except RetryableError as exc:
            return ExportResult.retry(exc.reason, exc.retry_after)
        except RemoteRunLost:
            raise
        except AdapterError as exc:
            return ExportResult.permanent(str(exc))
        waiting = self._waiting_for_parent(run, batch)
        if waiting is not None:
            return ExportResult.retry(f"mlflow: parent run {waiting} is not in MLflow yet; the "
                                      "run waits for it so that it nests under it",
                                      retry_after=PARENT_WAIT_SECONDS)
        rejected: dict[tuple[str, int], str] = {}
        items, ops = self._translate(run, batch, rejected)
        try:
            for chunk in _chunks(items):
                self._send(remote, chunk, rejected)
            ops.extend(self._long_values(items, rejected))
            if ops:
                self._write_files(run, remote, ops, rejected)
        except _Abort as stop:
            if stop.failure.code == MISSING and not stop.failure.retryable:
                gone = self._gone(remote)
                if gone:  # the run itself, not something in the batch: never dead letters
                    self._lost(run, remote, "no longer exists")
                if gone is None:
                    return ExportResult.retry(f"{stop.failure.reason} (cannot check the run)")
            if stop.failure.retryable:
                return ExportResult.retry(stop.failure.reason, stop.failure.retry_after)
            return ExportResult.permanent(stop.failure.reason)
        return ExportResult.success(rejected)

    def _translate(
        self, run: RunInfo, batch: Sequence[Event], rejected: dict[tuple[str, int], str]
    ) -> tuple[list[_Item], list[_FileOp]]:
        items: list[_Item] = []
        params: dict[tuple[str, str], _Item] = {}
        tags: dict[str, _Item] = {}
        ops: list[_FileOp] = []
        events: list[Event] = []
        tables: list[str] = []  # table files written by this batch's media ops
        table_uids: list[tuple[str, int]] = []

        def tag(key: str, value: Any, ev: Event) -> None:
            item = tags.pop(key, None)
            uids = (item.uids if item else []) + [ev.uid]
            tags[key] = _Item("tag", key, _stringify(value), uids=uids)  # last value wins

        for ev in batch:
            kind = ev.kind
            if kind == "metric":
                if ev.value is None or not ev.key:
                    rejected[ev.uid] = "metric without a key or a value"
                    continue
                step = 0 if ev.step is None else int(ev.step)
                point = _Item("metric", ev.key, float(ev.value), step, int(ev.ts_ms), [ev.uid])
                items.append(point)
            elif kind == "param":
                key = ev.key or ""
                nested = isinstance(ev.payload, Mapping)
                values = flatten(ev.payload, key) if nested else {key: ev.payload}
                for key, value in values.items():
                    text = _stringify(value)
                    item = params.get((key, text))
                    if item is None:
                        params[(key, text)] = item = _Item("param", key, text)
                        items.append(item)
                    item.uids.append(ev.uid)
            elif kind == "tag":
                tag(ev.key or "", ev.payload, ev)
                if ev.key in PARENT_TAGS and _is_bridge_id(ev.payload):
                    parent = self._parent_remote(run, ev.payload)
                    if parent is not None:  # nest under the parent's MLflow run in the UI
                        tag(MLFLOW_PARENT_TAG, parent, ev)
            elif kind == "note":
                tag(NOTE_TAG, ev.payload or "", ev)
            elif kind == "summary":
                tag(names.summary_tag(ev.key or ""), names.encode_summary(ev.payload), ev)
            elif kind == "system":
                facts = ev.payload if isinstance(ev.payload, Mapping) else {"value": ev.payload}
                name = names.system_file(ev.node)
                ops.append(_FileOp([ev.uid], "dict", name, dict(facts)))
                scalars = [(k, v) for k, v in facts.items() if isinstance(v, _SCALARS)]
                for k, v in scalars[:MAX_SYSTEM_TAGS]:
                    tag(names.system_tag(str(k)), v, ev)
            elif kind == "text":
                ops.append(_FileOp([ev.uid], "text", ev.key or "text.txt", _json_text(ev.payload)))
            elif kind == "dict":
                ops.append(_FileOp([ev.uid], "dict", ev.key or "dict.json", ev.payload))
            elif kind == "event":
                events.append(ev)
            elif kind == "artifact":
                # "folder" (the MLflow plugin's artifact_path; None: the root) when present
                folder = (ev.payload or {}).get("folder", ev.key) if isinstance(
                    ev.payload, Mapping) else ev.key
                ops.append(_FileOp([ev.uid], "artifact", folder or "", ev.payload))
            elif kind == "media":  # files in MLflow's own layouts (see media.py)
                reason = media.check(ev.payload)
                if reason:
                    rejected[ev.uid] = reason
                    continue
                ops.append(_FileOp([ev.uid], "media", ev.key or "",
                                   {"event": ev, "tables": tables}))
                if media.is_image(ev.payload):
                    tag(names.LOGGED_IMAGES_TAG, "True", ev)  # MLflow's UI shows its image grid
                elif ev.payload["type"] == "table":
                    table_uids.append(ev.uid)
            elif kind in ("model", "dataset"):  # the MLflow plugin's (see models_out.py)
                ops.append(_FileOp([ev.uid], kind, ev.key or "", ev))
            else:
                rejected[ev.uid] = f"mlflow: event kind {kind!r} has no MLflow mapping"
        items.extend(tags.values())
        if table_uids:  # after the tables' files: the tag that lists them
            ops.append(_FileOp(table_uids, "tables", names.LOGGED_ARTIFACTS_TAG, tables))
        if events:
            ops.append(_FileOp([e.uid for e in events], "events", names.EVENTS_FILE, events))
        return items, ops

    def _send(self, remote: str, chunk: list[_Item], rejected: dict[tuple[str, int], str]) -> None:
        """One ``log_batch`` request; on a refusal, halve until the offender is alone."""
        ent = self._entities
        metrics = [ent.Metric(i.key, i.value, i.ts_ms, i.step) for i in chunk if i.kind == "metric"]
        params = [ent.Param(i.key, i.value[:MAX_PARAM_VALUE]) for i in chunk if i.kind == "param"]
        tags = [ent.RunTag(i.key, i.value[:MAX_TAG_VALUE]) for i in chunk if i.kind == "tag"]
        try:
            self.client.log_batch(remote, metrics=metrics, params=params, tags=tags)
            return
        except self._exc_type as exc:
            failure = classify(exc)
        if failure.retryable or not failure.entity:
            raise _Abort(failure)
        if len(chunk) == 1:
            for uid in chunk[0].uids:
                rejected[uid] = f"{chunk[0].kind} {chunk[0].key!r}: {failure.reason}"
            return
        half = len(chunk) // 2
        self._send(remote, chunk[:half], rejected)
        self._send(remote, chunk[half:], rejected)

    def _long_values(
        self, items: list[_Item], rejected: Mapping[tuple[str, int], str]
    ) -> Iterator[_FileOp]:
        """Params and tags MLflow truncates: keep the full value beside them."""
        for item in items:
            limit = {"param": MAX_PARAM_VALUE, "tag": MAX_TAG_VALUE}.get(item.kind)
            if limit is None or len(item.value) <= limit or any(u in rejected for u in item.uids):
                continue
            path = names.long_value_file(item.kind, item.key)
            yield _FileOp(list(item.uids), "text", path, item.value)
            note = f"{len(item.value)} characters, truncated to {limit}; full value in {path}"
            marker = names.truncated_tag(item.kind, item.key)
            yield _FileOp(list(item.uids), "tag", marker, note)

    def _write_files(
        self, run: RunInfo, remote: str, ops: list[_FileOp], rejected: dict[tuple[str, int], str]
    ) -> None:
        spool = self.spool_dir
        tmp_parent = spool if spool is not None and spool.is_dir() else None
        with tempfile.TemporaryDirectory(prefix="bridge-mlflow-", dir=tmp_parent) as tmp:
            for n, op in enumerate(ops):
                try:
                    self._write_file(run, remote, op, Path(tmp) / str(n))
                except self._exc_type as exc:
                    failure = classify(exc)
                    if failure.retryable or not failure.entity:
                        raise _Abort(failure) from exc
                    for uid in op.uids:
                        rejected[uid] = f"{op.path}: {failure.reason}"
                except _Unsendable as exc:
                    for uid in op.uids:
                        rejected[uid] = f"{op.path}: {_clip(str(exc))}"
                except OSError as exc:
                    raise _Abort(classify(exc)) from exc

    def _write_file(self, run: RunInfo, remote: str, op: _FileOp, tmp: Path) -> None:
        if op.action in ("text", "dict", "events", "artifact"):
            op.path = _artifact_name(op.path, file=op.action != "artifact") or ""
        if op.action == "text":
            self.client.log_text(remote, op.payload, op.path)
        elif op.action == "dict":
            self.client.log_dict(remote, op.payload, op.path)
        elif op.action == "tag":
            self.client.set_tag(remote, op.path, op.payload)
        elif op.action == "media":
            ev = op.payload["event"]
            try:
                staged = media.write(self.client, remote, ev.key or "media", ev.step,
                                     int(ev.ts_ms), ev.payload, run.blob_path, tmp)
            except media.Unsendable as exc:
                raise _Unsendable(str(exc)) from exc
            if staged.table:
                op.payload["tables"].append(staged.table)
        elif op.action in ("model", "dataset"):
            from bridge.adapters.mlflow import models_out

            try:
                if op.action == "model":
                    models_out.deliver_model(self, run, remote, op.payload, tmp)
                else:
                    models_out.deliver_dataset(self, run, remote, op.payload)
            except models_out.Unsendable as exc:
                raise _Unsendable(str(exc)) from exc
            except models_out.sdk_error() as exc:  # MLflow's client, also beside REST
                failure = classify(exc)
                if failure.retryable or not failure.entity:
                    raise _Abort(failure) from exc
                raise _Unsendable(failure.reason) from exc
        elif op.action == "tables":
            if op.payload:
                media.merge_logged_tables(self.client, remote, op.payload)
        elif op.action == "events":
            self.client.log_text(remote, self._merged_events(remote, op.payload, tmp), op.path)
        elif op.action == "artifact":
            payload = op.payload or {}
            stage = tmp / "stage"
            for f in payload.get("files", []):
                try:
                    rel = Path(_artifact_name(f.get("path"), file=True) or "")
                except _Unsendable as exc:
                    raise _Unsendable(f"unsafe file path {f.get('path')!r}: {exc}") from exc
                try:
                    src = run.blob_path(f["sha256"])
                except AdapterError as exc:
                    raise _Unsendable(str(exc)) from exc
                if not src.is_file():
                    raise _Unsendable(f"{f['path']!r} (sha256 {f['sha256']}) is missing from the spool")
                dest = stage / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dest)  # same filesystem as the spool: no copy
                except OSError:
                    shutil.copyfile(src, dest)
            if stage.exists():
                self.client.log_artifacts(remote, str(stage), artifact_path=op.path or None)

    def _merged_events(self, remote: str, events: list[Event], tmp: Path) -> str:
        """``bridge/events.jsonl`` as stored plus these events, once each, in time order."""
        lines: dict[tuple[str, int], dict[str, Any]] = {}
        listed = self.client.list_artifacts(remote, names.ARTIFACT_FOLDER)
        if any(f.path == names.EVENTS_FILE for f in listed):
            tmp.mkdir(parents=True, exist_ok=True)
            local = self.client.download_artifacts(remote, names.EVENTS_FILE, str(tmp))
            for line in Path(local).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    lines[(rec["file_id"], rec["seq"])] = rec
        for ev in events:
            lines[ev.uid] = {
                "name": ev.key, "ts_ms": ev.ts_ms, "step": ev.step, "payload": ev.payload,
                "node": ev.node, "file_id": ev.file_id, "seq": ev.seq,
            }  # fmt: skip
        ordered = sorted(lines.values(), key=lambda r: (r["ts_ms"], r["file_id"], r["seq"]))
        return "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in ordered)


def _code(exc: BaseException) -> str:
    return getattr(exc, "error_code", None) or ""


def _is_bridge_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(
        c in "0123456789abcdef" for c in value)


def _chunks(items: list[_Item]) -> Iterator[list[_Item]]:
    """Split entities into ``log_batch`` requests within MLflow's limits, in order.

    MlflowClient would split an oversized request itself, silently and non-atomically;
    sizing requests here keeps one call = one request, and a request never carries the
    same param or tag key twice (MLflow refuses duplicate keys in one request).
    """
    chunk: list[_Item] = []
    counts = {"metric": 0, "param": 0, "tag": 0}
    caps = {"metric": 1000, "param": 100, "tag": 100}
    keys: set[tuple[str, str]] = set()
    for item in items:
        full = counts[item.kind] >= caps[item.kind] or len(chunk) >= MAX_ENTITIES_PER_REQUEST
        clash = item.kind != "metric" and (item.kind, item.key) in keys
        if chunk and (full or clash):
            yield chunk
            chunk, keys = [], set()
            counts = dict.fromkeys(counts, 0)
        chunk.append(item)
        counts[item.kind] += 1
        if item.kind != "metric":
            keys.add((item.kind, item.key))
    if chunk:
        yield chunk
