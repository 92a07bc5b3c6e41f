"""Comet backend: spool events become a Comet experiment whose key is the bridge run id.

Offline (``mode="offline"``) is the mode bridge can prove: every ``export`` call writes one
Comet offline archive ``<key>-<random>.zip`` and returns SUCCESS only once that archive is
on disk and holds what was logged. Comet writes an offline archive only when an experiment
ends, so an archive per export call is the only way a SIGKILL between two calls loses
nothing. Each archive is opened with Comet's ``get_or_create`` resume strategy, so
``comet upload`` creates the experiment from whichever archive comes first and appends the
others to it. Each archive also carries a ledger (``names.LEDGER_NAME``, ignored by Comet's
uploader) naming the spool events it holds: a sync killed after the archive was written
but before the agent saved its cursor recognises them on the next run and skips them.
The last batch of a run that has ended carries the closing status in its archive, so
``close_run`` writes no archive of its own; in-process background sync delivers offline
only every ``agent.session_interval`` while the run trains (``session_per_export``).

Online (``mode="online"``) streams one experiment per sync session through Comet's
``get_or_create`` start and confirms a batch when ``Experiment.flush()`` says the data
reached the server.

Metric points go through Comet's own ``MetricMessage`` with the spool timestamp, the only
way to keep per-point time (the public ``log_metric`` stamps the time of the call).

Media events (images, histograms, tables, audio, video, html, curves, text points) become
Comet's own media calls with their steps: :mod:`bridge.adapters.comet.media`.

Every name bridge writes into Comet comes from :mod:`bridge.adapters.comet.names`, which the
importer reads with; comet_ml is imported through :mod:`bridge.adapters.comet.sdk`, which
leaves no process setting behind.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
import zipfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

from bridge.adapters.base import (
    ARTIFACT,
    DICT,
    EVENT,
    METRIC,
    NOTE,
    PARAM,
    SUMMARY,
    SYSTEM,
    TAG,
    TEXT,
    AdapterError,
    BaseAdapter,
    Event,
    ExportResult,
    Kind,
    Limits,
    RunInfo,
    keep_private,
)
from bridge.adapters.comet import names as N
from bridge.adapters.comet.media import MediaRefused, MediaSender, media_refusal
from bridge.adapters.comet.models_out import (
    ModelRefused,
    model_refusal,
    note_models,
    write_dataset,
    write_model,
)
from bridge.adapters.comet.sdk import load_comet_ml

__all__ = ["CometAdapter"]

_CLOSE = "bridge:close"  # file_id of the status event close_run writes (not a spool event)
_OPTIONS = frozenset({"workspace", "project", "mode", "offline_directory", "epoch_metric", "spool_dir"})


# --- the ledger: which spool events an archive holds -------------------------------------


def _make_ledger(run: RunInfo, key: str, archive_seq: int, uids: Iterable[tuple[str, int]]) -> dict:
    return N.make_ledger(run.run_id, key, archive_seq, uuid.uuid4().hex, uids)


def _read_archive(path: Path) -> tuple[dict | None, dict[str, int]]:
    """(ledger, message counts per type) of a complete archive; raises if it is not one."""
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if N.EXPERIMENT_JSON not in names or N.MESSAGES_JSON not in names:
            raise zipfile.BadZipFile("no experiment.json/messages.json: an unfinished archive")
        meta = json.loads(zf.read(N.EXPERIMENT_JSON))
        if meta.get("customer_error_reported"):
            raise zipfile.BadZipFile(f"comet_ml reported: {meta.get('customer_error_message')}")
        counts: Counter[str] = Counter()
        for line in zf.read(N.MESSAGES_JSON).decode("utf-8").splitlines():
            if line.strip():
                counts[json.loads(line).get("type", "")] += 1
        ledger = json.loads(zf.read(N.LEDGER_NAME)) if N.LEDGER_NAME in names else None
    return ledger, dict(counts)


def _check_archive(path: Path, archive_id: str, writer: _Writer) -> str | None:
    """Why the archive comet_ml wrote does not hold the batch, or None when it does."""
    try:
        found, counts = _read_archive(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return f"archive {path.name} is incomplete: {exc}"
    if found is None or found.get(N.LEDGER_ARCHIVE_ID) != archive_id:
        return f"archive {path.name} does not hold this batch"
    if (counts.get(N.MSG_METRIC, 0) != writer.metrics or counts.get(N.MSG_UPLOAD, 0) != writer.uploads
            or counts.get(N.MSG_HTML, 0) != writer.html):
        return (
            f"archive {path.name} holds {counts}, expected {writer.metrics} metrics, "
            f"{writer.uploads} files and {writer.html} html messages"
        )
    return None


def _quarantine(path: Path) -> None:
    """Rename an unfinished archive so ``comet upload *.zip`` never sends half a batch."""
    if path.exists():
        os.replace(path, path.with_name(path.name + N.INCOMPLETE_SUFFIX))


class _Replay:
    """Events a killed session wrote into archives the agent never confirmed."""

    def __init__(self) -> None:
        self.owner: dict[tuple[str, int], int] = {}
        self.left: Counter[int] = Counter()

    def add(self, archive_seq: int, uids: set[tuple[str, int]]) -> None:
        for uid in uids:
            if uid not in self.owner:
                self.owner[uid] = archive_seq
                self.left[archive_seq] += 1

    def delivered(self, uid: tuple[str, int]) -> bool:
        return uid in self.owner

    def confirm(self, uids: Iterable[tuple[str, int]]) -> None:
        for uid in uids:
            seq = self.owner.pop(uid, None)
            if seq is not None:
                self.left[seq] -= 1

    def watermark(self, next_seq: int) -> int:
        """Archives below this number hold nothing the agent could hand over again."""
        return min([s for s, n in self.left.items() if n > 0], default=next_seq)


@dataclass
class _RunCtx:
    key: str
    replay: _Replay = field(default_factory=_Replay)
    next_seq: int = 0
    experiment: Any = None  # the open online experiment


# --- translating events into comet_ml calls ----------------------------------------------


def _metric_epochs(batch: Sequence[Event], epoch_metric: str | None, carried: Any) -> dict[int, int]:
    """step -> epoch, from the ``epoch_metric`` series logged at that step."""
    epochs: dict[int, int] = {}
    if isinstance(carried, list) and len(carried) == 2:
        epochs[int(carried[0])] = int(carried[1])
    if not epoch_metric:
        return epochs
    for ev in batch:
        if ev.kind == METRIC and ev.key == epoch_metric and ev.step is not None:
            v = ev.value
            if v is not None and math.isfinite(v) and float(v).is_integer():
                epochs[ev.step] = int(v)
    return epochs


@contextmanager
def _at_step(exp: Any, step: int | None) -> Iterator[None]:
    """Give one asset its step. Passing ``step=`` to comet_ml would make it the experiment's
    current step for every later asset and log an extra step parameter (``names.AUTO_PARAMS``)."""
    exp.curr_step = step
    try:
        yield
    finally:
        exp.curr_step = None


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class _Refused(Exception):
    """comet_ml returned nothing for an asset: it will not take it (e.g. over its size limit)."""


class _Writer:
    """Logs one batch into one comet_ml experiment and counts what it asked Comet to keep."""

    def __init__(self, comet: Any, exp: Any, run: RunInfo, epochs: dict[int, int]) -> None:
        self.comet = comet
        self.exp = exp
        self.run = run
        self.epochs = epochs
        self.metrics = 0  # metric_msg lines the archive must hold
        self.uploads = 0  # file_upload lines the archive must hold
        self.html = 0  # html lines the archive must hold
        self.refused: dict[tuple[str, int], str] = {}  # uid -> why comet_ml would not take it

    def header(self, key: str) -> None:
        run, exp = self.run, self.exp
        if run.name:
            exp.set_name(run.name)
        if key != run.run_id:
            exp.log_other(N.OTHER_RUN_ID, run.run_id)
        if run.group:
            exp.log_other(N.OTHER_GROUP, run.group)
        if run.notes:
            self.other(N.OTHER_NOTES, run.notes, ".md")

    def write(self, ev: Event) -> None:
        try:
            getattr(self, "_" + ev.kind)(ev)
        except (_Refused, ModelRefused) as exc:
            self.refused[ev.uid] = str(exc)

    def other(self, key: str, value: Any, suffix: str = ".json") -> None:
        """An "other", or an asset when Comet would truncate the value."""
        text = _json_text(value) if not isinstance(value, (int, float, bool)) else None
        if text is not None and len(text) > N.MAX_OTHER:
            meta = {N.META_KIND: N.KIND_OTHER, N.META_OTHER_KEY: key}
            self._asset_data(text, f"{key}{suffix}", None, meta)
        else:
            self.exp.log_other(key, value if text is None or isinstance(value, str) else text)

    def _metric(self, ev: Event) -> None:
        epoch = self.epochs.get(ev.step) if ev.step is not None else None
        message_cls = getattr(self.comet.messages, "MetricMessage", None)
        enqueue = getattr(self.exp, "_enqueue_message", None)
        if message_cls is None or enqueue is None:  # SDK changed: keep the point, lose its time
            with _at_step(self.exp, ev.step):
                self.exp.log_metric(ev.key, ev.value, epoch=epoch)
        else:
            message = message_cls(timestamp=ev.ts_ms)
            message.set_metric(ev.key, ev.value, step=ev.step, epoch=epoch)
            enqueue(message)
        self.metrics += 1

    def _param(self, ev: Event) -> None:
        if isinstance(ev.payload, Mapping) and ev.payload:
            self.exp.log_parameters({ev.key: ev.payload})  # Comet flattens to "a|b|c"
        else:
            self.exp.log_parameter(ev.key, _json_text(ev.payload) if ev.payload == {} else ev.payload)

    def _tag(self, ev: Event) -> None:
        if ev.payload in (None, "", ev.key):
            self.exp.add_tags([ev.key])
        else:
            self.other(ev.key, ev.payload)

    def _summary(self, ev: Event) -> None:
        self.other(ev.key, ev.payload)

    def _system(self, ev: Event) -> None:
        facts = ev.payload if isinstance(ev.payload, Mapping) else {ev.key: ev.payload}
        for k, v in facts.items():
            self.exp.log_system_info(str(k), v if isinstance(v, (int, float, str)) else _json_text(v))

    def _note(self, ev: Event) -> None:
        self.other(N.OTHER_NOTES, ev.payload, ".md")

    def _text(self, ev: Event) -> None:
        self._asset_data(str(ev.payload), ev.key, ev.step, None)

    def _dict(self, ev: Event) -> None:
        self._asset_data(json.dumps(ev.payload, ensure_ascii=False, indent=2), ev.key, ev.step, None)

    def _event(self, ev: Event) -> None:
        meta = {N.META_EVENT: ev.key, N.META_EVENT_TS: ev.ts_ms}
        with _at_step(self.exp, ev.step):
            result = self.exp.log_text(_json_text(ev.payload), metadata=meta)
        if result is None:
            raise _Refused(f"comet_ml refused text sample {ev.key!r}")
        self.uploads += 1

    def _media(self, ev: Event) -> None:
        sender = MediaSender(self.exp, self.run)  # see adapters/comet/media.py
        try:
            sender.send(ev)
        except MediaRefused as exc:
            raise _Refused(str(exc)) from None
        finally:
            self.uploads += sender.uploads
            self.html += sender.html

    def _artifact(self, ev: Event) -> None:
        p = ev.payload
        files = p.get("files") or []
        name = p.get("name") or ev.key
        nested = bool(p.get("is_dir")) or len(files) > 1
        for f in files:
            file_name = f"{name}/{f['path']}" if nested else f["path"]
            meta = {
                N.META_ARTIFACT: name,
                N.META_ARTIFACT_TYPE: p.get("type"),
                N.META_SHA256: f["sha256"],
                N.META_SOURCE: p.get("source"),
            }
            blob = str(self.run.blob_path(f["sha256"]))
            if p.get("type") == "model":
                result = self.exp.log_model(name, blob, file_name=file_name, metadata=meta)
            else:
                with _at_step(self.exp, ev.step):
                    result = self.exp.log_asset(blob, file_name=file_name, metadata=meta)
            if result is None:
                raise _Refused(f"comet_ml refused asset {file_name!r} of artifact {name!r}")
            self.uploads += 1

    def _model(self, ev: Event) -> None:  # MLflow 3 logged models: models_out.py
        write_model(self, ev)

    def _dataset(self, ev: Event) -> None:  # MLflow dataset inputs: models_out.py
        write_dataset(self, ev)

    def _asset_data(self, data: str, name: str, step: int | None, meta: dict | None) -> None:
        with _at_step(self.exp, step):
            result = self.exp.log_asset_data(data.encode("utf-8"), name=name, metadata=meta)
        if result is None:
            raise _Refused(f"comet_ml refused asset {name!r} (too large?)")
        self.uploads += 1


_KINDS = frozenset({METRIC, PARAM, TAG, SUMMARY, SYSTEM, NOTE, TEXT, DICT, EVENT, ARTIFACT, Kind.MEDIA,
                    Kind.MODEL, Kind.DATASET})


def _refusal(ev: Event, run: RunInfo) -> str | None:
    """Why Comet cannot keep this event as it is (it becomes a dead letter), or None."""
    if ev.kind not in _KINDS:
        return f"comet adapter does not know event kind {ev.kind!r}"
    if ev.kind in (METRIC, PARAM, SUMMARY, TAG) and (not ev.key or len(ev.key) > N.MAX_KEY):
        return f"Comet names are 1-{N.MAX_KEY} characters; got {len(ev.key or '')}"
    if ev.kind == METRIC and ev.value is None:
        return "metric without a value"
    if ev.kind == Kind.MEDIA:
        return media_refusal(ev, run)
    if ev.kind == Kind.MODEL:
        return model_refusal(ev, run)
    if ev.kind == ARTIFACT:
        if run.blob_root is None:
            return "the run has no blob store"
        for f in (ev.payload or {}).get("files") or []:
            if not run.blob_path(f["sha256"]).is_file():
                return f"blob {f['sha256']} of {f.get('path')!r} is missing from the spool"
    return None


# --- the adapter -------------------------------------------------------------------------


class CometAdapter(BaseAdapter):
    """Delivers bridge runs to Comet; see the module docstring for the delivery model."""

    name: ClassVar[str] = "comet"
    # Batches stay under comet upload's per-archive sampling size (15 000 points per name).
    limits: ClassVar[Limits] = Limits(max_events=10_000)

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise AdapterError(
                f"comet: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_OPTIONS))}"
            )
        self.mode = options.get("mode", "online")
        if self.mode not in ("online", "offline"):
            raise AdapterError(f"comet: mode must be 'online' or 'offline', not {self.mode!r}")
        self.workspace: str | None = options.get("workspace")
        self.project: str | None = options.get("project")
        self.epoch_metric: str | None = options.get("epoch_metric", N.EPOCH_METRIC)
        self.comet = load_comet_ml()
        directory = options.get("offline_directory") or os.environ.get(N.OFFLINE_DIR_ENV)
        if self.mode == "offline" and not directory:
            raise AdapterError("comet: mode='offline' needs offline_directory")
        self.offline_directory = Path(directory).expanduser().resolve() if directory else None
        if self.mode == "online" and not os.environ.get(N.API_KEY_ENV):
            raise AdapterError("comet: online mode reads the API key from COMET_API_KEY, which is not set")
        self._runs: dict[str, _RunCtx] = {}
        # Offline, each export writes one archive: in-process background sync delivers this
        # backend only every ``agent.session_interval`` while the run runs. Online, one
        # experiment stays open across exports (confirmed by ``flush()``): every pass.
        self.session_per_export = self.mode == "offline"

    # -- contract --------------------------------------------------------------------------

    def open_run(self, run: RunInfo) -> str:
        ctx = self._runs.get(run.run_id)
        if ctx is None:
            ctx = self._runs[run.run_id] = _RunCtx(key=N.experiment_key_for(run.run_id))
            ctx.next_seq = int(run.state.get("next_archive", 0))
            if self.mode == "offline":
                self._recover(run, ctx)
            else:
                ctx.experiment = self._start(run, ctx, online=True)
                _Writer(self.comet, ctx.experiment, run, {}).header(ctx.key)
        return ctx.key

    def export(self, run: RunInfo, batch: Sequence[Event]) -> ExportResult:
        ctx = self._runs.get(run.run_id) or self._runs[self._open(run)]
        note_models(run.state, batch)  # model records, replayed events included: models_out.py
        again = [ev.uid for ev in batch if ctx.replay.delivered(ev.uid)]
        fresh = [ev for ev in batch if not ctx.replay.delivered(ev.uid)]
        rejected = {ev.uid: r for ev in fresh if (r := _refusal(ev, run)) is not None}
        todo = [ev for ev in fresh if ev.uid not in rejected]
        epochs = _metric_epochs(todo, self.epoch_metric, run.state.get("epoch_at_step"))
        # Offline, the run has ended and this is the pass's last batch (the agent sends full
        # batches before it): its archive also carries the closing status, so close_run
        # writes no archive of its own.
        closing = (self.mode == "offline" and bool(todo) and run.status != "RUNNING"
                   and len(batch) < self.limits.max_events)
        if todo:
            try:
                if self.mode == "offline":
                    extra = [_closing_event(run, run.status, run.end_ms)] if closing else []
                    outcome = self._write_archive(run, ctx, [*todo, *extra], epochs)
                else:
                    outcome = self._stream(run, ctx, todo, epochs)
            except Exception as exc:  # the SDK raised: nothing of this batch is confirmed
                outcome = f"comet_ml failed: {exc!r}"
            if isinstance(outcome, str):
                return ExportResult.retry(outcome)
            rejected.update(outcome)
            stepped = [e.step for e in todo if e.step is not None and e.step in epochs]
            if stepped:
                run.state["epoch_at_step"] = [max(stepped), epochs[max(stepped)]]
            if closing:
                run.state["closed_as"] = run.status
            else:
                run.state.pop("closed_as", None)
        ctx.replay.confirm(again)
        run.state["next_archive"] = ctx.replay.watermark(ctx.next_seq)
        return ExportResult.success(rejected)

    def close_run(self, run: RunInfo, status: str, end_time_ms: int) -> None:
        ctx = self._runs.get(run.run_id) or self._runs[self._open(run)]
        if self.mode == "online":
            exp, ctx.experiment = ctx.experiment, None
            if exp is not None:
                exp.log_other(N.OTHER_STATUS, status)
                exp.end()
            return
        if run.state.get("closed_as") == status:  # the last export's archive carries it
            run.state["next_archive"] = ctx.replay.watermark(ctx.next_seq)
            return
        outcome = self._write_archive(run, ctx, [_closing_event(run, status, end_time_ms)], {})
        if isinstance(outcome, str):
            raise AdapterError(f"comet: could not write the closing archive: {outcome}")
        run.state["next_archive"] = ctx.replay.watermark(ctx.next_seq)

    def shutdown(self) -> None:
        for ctx in self._runs.values():
            if ctx.experiment is not None:
                ctx.experiment.end()
                ctx.experiment = None
        self._runs.clear()

    # -- offline ---------------------------------------------------------------------------

    def _open(self, run: RunInfo) -> str:
        self.open_run(run)
        return run.run_id

    def _archives(self, key: str) -> list[Path]:
        assert self.offline_directory is not None
        if not self.offline_directory.is_dir():
            return []
        archives = self.offline_directory.glob(f"{key}*{N.ARCHIVE_SUFFIX}")
        return sorted(p for p in archives if p.name[len(key)] in "-.")

    def _recover(self, run: RunInfo, ctx: _RunCtx) -> None:
        """Learn which events unconfirmed archives hold; set unfinished archives aside."""
        for path in self._archives(ctx.key):
            try:
                ledger, _ = _read_archive(path)
            except (zipfile.BadZipFile, OSError, ValueError):
                _quarantine(path)
                continue
            if ledger is None or ledger.get(N.LEDGER_RUN_ID) != run.run_id:
                continue
            seq = int(ledger.get(N.LEDGER_ARCHIVE_SEQ, 0))
            ctx.next_seq = max(ctx.next_seq, seq + 1)
            if seq >= int(run.state.get("next_archive", 0)):
                ctx.replay.add(seq, N.ledger_uids(ledger))

    def _write_archive(
        self, run: RunInfo, ctx: _RunCtx, events: Sequence[Event], epochs: dict[int, int]
    ) -> dict[tuple[str, int], str] | str:
        """Write one archive holding ``events``.

        Returns the events comet_ml refused once the archive is on disk and holds the
        rest, or why it does not (the archive is then set aside, nothing is confirmed).
        """
        before = set(self._archives(ctx.key))
        exp = self._start(run, ctx, online=False)
        writer = _Writer(self.comet, exp, run, epochs)
        failure = ledger = None
        try:
            writer.header(ctx.key)
            for ev in events:
                writer.write(ev)
            kept = [ev.uid for ev in events if ev.uid not in writer.refused and ev.file_id != _CLOSE]
            ledger = _make_ledger(run, ctx.key, ctx.next_seq, kept)
            Path(exp.tmpdir, N.LEDGER_NAME).write_text(json.dumps(ledger), encoding="utf-8")
        except Exception as exc:  # the SDK raised: the archive would hold part of the batch
            failure = f"comet_ml failed: {exc!r}"
        finally:
            exp.end()
        written = [p for p in self._archives(ctx.key) if p not in before]
        if failure or ledger is None or len(written) != 1:
            for p in written:
                _quarantine(p)
            return failure or f"expected one new archive in {self.offline_directory}, found {len(written)}"
        problem = _check_archive(written[0], ledger[N.LEDGER_ARCHIVE_ID], writer)
        if problem:
            _quarantine(written[0])
            return problem
        keep_private(written[0])
        ctx.next_seq += 1
        return writer.refused

    # -- online ----------------------------------------------------------------------------

    def _stream(
        self, run: RunInfo, ctx: _RunCtx, events: Sequence[Event], epochs: dict[int, int]
    ) -> dict[tuple[str, int], str] | str:
        if ctx.experiment is None:
            ctx.experiment = self._start(run, ctx, online=True)
        writer = _Writer(self.comet, ctx.experiment, run, epochs)
        for ev in events:
            writer.write(ev)
        if not ctx.experiment.flush():
            return "comet_ml could not flush the batch to the server"
        return writer.refused

    # -- comet_ml session ------------------------------------------------------------------

    def _start(self, run: RunInfo, ctx: _RunCtx, online: bool) -> Any:
        """Start an experiment without ending one the host program runs itself."""
        comet = self.comet
        cfg = dict(N.QUIET_CONFIG)
        if not online:
            assert self.offline_directory is not None
            self.offline_directory.mkdir(parents=True, exist_ok=True)
            cfg["offline_directory"] = str(self.offline_directory)
        previous = comet.get_global_experiment()
        comet.config.set_global_experiment(None)
        try:
            exp = comet.start(
                workspace=self.workspace,
                project_name=self.project or run.project,
                experiment_key=ctx.key,
                mode="get_or_create",
                online=online,
                experiment_config=comet.ExperimentConfig(**cfg),
            )
        finally:
            comet.config.set_global_experiment(previous)
        _hush(exp, offline=not online)
        if not online and run.start_ms:
            exp.start_time = run.start_ms  # experiment.json's start_time (used on creation)
        return exp


def _closing_event(run: RunInfo, status: str, end_time_ms: int | None) -> Event:
    """The run's final status as Comet's ``names.OTHER_STATUS`` other (not a spool event)."""
    end = end_time_ms if end_time_ms is not None else int(time.time() * 1000)
    return Event(_CLOSE, 0, run.run_id, SUMMARY, N.OTHER_STATUS, None, end, payload=status)


def _hush(exp: Any, offline: bool) -> None:
    """Keep comet_ml from logging on its own: the ``names.PROCESS_DURATION`` metric at end() and
    the step parameter it adds whenever an asset or metric carries a step (bridge
    sets each item's step itself, see :func:`_at_step`). Also stop its writer thread
    idling a full second before each offline archive is written."""
    log_metric = exp._log_metric

    def _set_step(step: Any, *args: Any, **kwargs: Any) -> None:
        return None

    exp._set_step = _set_step

    def _log_metric(name: Any, *args: Any, **kwargs: Any) -> None:
        if name != N.PROCESS_DURATION:
            log_metric(name, *args, **kwargs)

    exp._log_metric = _log_metric
    streamer = getattr(exp, "streamer", None)
    if offline and streamer is not None and hasattr(streamer, "queue_timeout"):
        streamer.queue_timeout = 0.02
