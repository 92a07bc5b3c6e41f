"""The sync engine: replay each run's spool events to each of its backends.

For every (backend, run) the engine reads the events after the saved cursors (merged across
the run's writer files, streamed in chunks), exports them in batches sized to the adapter's
limits, retries transient failures, dead-letters what the backend refuses for good, and
advances the cursors only after the backend confirmed. Each backend runs in its own thread,
so a backend that keeps failing is paused for this pass without holding the others back.
A lease per run keeps two agents on one directory from delivering the same events; a shard
(:mod:`bridge.agent.shards`) delivers only its own runs and keeps its own state file.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from bridge.adapters.base import (
    AdapterError,
    AdapterState,
    BaseAdapter,
    Event,
    ExportResult,
    Outcome,
    RemoteRunLost,
    RunInfo,
    TransientError,
    capability,
    load_adapter,
)
from bridge.agent.references import check_references
from bridge.agent.retry import RetryPolicy, Stopped, TransientFailure, call_with_retries
from bridge.agent.shards import DEFAULT_STATE, Shard, check_layout
from bridge.agent.state import StateStore, holder_id, now_ms
from bridge.config import AgentSettings
from bridge.errors import SpoolError
from bridge.threads import start_thread
from bridge.spool.reader import (
    RunRecord,
    count_after,
    events_by_seq,
    iter_events,
    list_runs,
    max_seqs,
    open_file,
)

__all__ = ["PairResult", "SyncSummary", "Syncer", "backend_label"]

ProgressFn = Callable[[str, str, int, int], None]  # (backend, run_id, done, total)


def backend_label(spec: dict) -> str:
    """The name cursors and dead letters are kept under: ``id`` if given, else ``name``."""
    return str(spec.get("id") or spec["name"])


@dataclass
class PairResult:
    """What one pass did for one (backend, run)."""

    backend: str
    run_id: str
    delivered: int = 0
    dead: int = 0
    pending: int = 0
    closed: bool = False
    error: str | None = None
    remote_id: str | None = None
    skipped: str | None = None  # e.g. "leased by another agent"
    remote_lost: str | None = None  # the remote run was gone: this pass re-delivered the run


@dataclass
class SyncSummary:
    results: list[PairResult] = field(default_factory=list)
    file_errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when nothing is pending, nothing failed and every file was readable."""
        return not self.file_errors and all(
            r.pending == 0 and r.error is None and r.skipped is None for r in self.results
        )


class Syncer:
    """One or more sync passes over a spool directory."""

    def __init__(
        self,
        spool_dir: Path,
        *,
        settings: AgentSettings | None = None,
        backends: Iterable[str] | None = None,
        runs: Iterable[str] | None = None,
        stop: threading.Event | None = None,
        progress: ProgressFn | None = None,
        retry_dead: bool = False,
        dry_run: bool = False,
        backend_options: dict[str, dict] | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.spool_dir = Path(spool_dir)
        self.shard = shard if shard is not None and shard.count > 1 else None
        self.state_name = self.shard.file_name if self.shard else DEFAULT_STATE
        self.settings = settings or AgentSettings()
        self.backend_filter = list(backends) if backends else None
        self.run_filter = set(runs) if runs else None
        self.stop = stop or threading.Event()
        self.progress = progress
        self.retry_dead = retry_dead
        self.dry_run = dry_run
        self.backend_options = backend_options or {}  # [backends.<name>] of the config file
        self.holder = holder_id()
        self.policy = RetryPolicy(self.settings.retry_initial, self.settings.retry_max,
                                  self.settings.retry_attempts)
        self._adapters: dict[str, Any] = {}
        self._renewed: dict[str, float] = {}
        self._lock = threading.Lock()
        # Remote runs found to exist (monotonic time), and backends whose check failed in
        # this pass: see _check_due.
        self._checked: dict[tuple[str, str], float] = {}
        self._check_paused: set[str] = set()

    # A (backend, run) with nothing to deliver has its remote run checked (one request)
    # once per Syncer (each `bridge sync`) and then at most this often (`bridge agent`).
    CHECK_INTERVAL_S = 600.0
    # Remote runs lost again while their run is re-delivered: stop with an error after this.
    MAX_REDELIVERIES = 2

    # -- planning --------------------------------------------------------------------------

    def _runs(self, file_errors: list[str]) -> list[RunRecord]:
        errors: list = []
        records = list_runs(self.spool_dir, errors)
        file_errors.extend(f"{e.path}: {e.error}" for e in errors)
        if self.shard is not None:
            records = [r for r in records if self.shard.owns(r.run_id)]
        if self.run_filter is not None:
            records = [r for r in records if r.run_id in self.run_filter
                       or any(r.run_id.startswith(p) for p in self.run_filter if len(p) >= 6)]
        return records

    def _specs(self, rec: RunRecord) -> list[dict]:
        specs = [dict(b) for b in rec.backends]
        if self.backend_filter is not None:
            chosen = []
            for name in self.backend_filter:
                match = [s for s in specs if s["name"] == name or s.get("id") == name]
                chosen.extend(match or [{**self.backend_options.get(name, {}), "name": name}])
            specs = chosen
        return specs

    # -- one pass --------------------------------------------------------------------------

    def run_once(self) -> SyncSummary:
        """Deliver everything pending now; per backend in parallel threads."""
        summary = SyncSummary()
        self._check_paused.clear()
        check_layout(self.spool_dir, self.shard)  # ShardLayoutError: N changed, not resharded
        if self.shard is not None and not self.dry_run:  # a shard that ran binds its layout
            StateStore(self.spool_dir, self.state_name).close()
        records = self._runs(summary.file_errors)
        work: dict[str, list[tuple[dict, RunRecord]]] = {}
        for rec in records:
            for spec in self._specs(rec):
                work.setdefault(backend_label(spec), []).append((spec, rec))
        if not work:
            return summary
        leased: set[str] = set()
        lease_lock = threading.Lock()
        threads = []
        results: list[PairResult] = []

        def worker(label: str, items: queue.SimpleQueue, paused: list, slot: int) -> None:
            current: list[RunRecord] = []  # the run taken off the queue and not yet reported
            try:
                deliver_all(label, items, paused, slot, current)
            except Exception as exc:  # a bug or an unwritable state file: report, never hide
                error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, (sqlite3.Error, SpoolError)):
                    error = f"{self.state_name} unwritable: {exc}"
                left = list(current)
                while True:
                    try:
                        left.append(items.get_nowait()[1])
                    except queue.Empty:
                        break
                with lease_lock:
                    results.extend(PairResult(label, rec.run_id, error=error,
                                              pending=self._pending_or_all(label, rec))
                                   for rec in left)

        def deliver_all(label: str, items: queue.SimpleQueue, paused: list, slot: int,
                        current: list) -> None:
            store = StateStore(self.spool_dir, self.state_name)
            try:
                while not self.stop.is_set():
                    try:
                        spec, rec = items.get_nowait()
                    except queue.Empty:
                        break
                    current[:] = [rec]
                    with lease_lock:
                        ok = rec.run_id in leased or self.dry_run or store.acquire_lease(
                            rec.run_id, self.holder, self.settings.lease_seconds)
                        if ok:
                            leased.add(rec.run_id)
                    if not ok:
                        res = PairResult(label, rec.run_id, skipped="leased by another agent")
                        res.pending = self._pending(store, label, rec)
                    elif paused:
                        res = PairResult(label, rec.run_id, error=f"backend paused: {paused[0]}")
                        res.pending = self._pending(store, label, rec)
                    else:
                        try:
                            res = self._deliver(store, label, spec, rec, slot)
                        except sqlite3.DatabaseError as exc:
                            res = PairResult(label, rec.run_id, pending=-1,
                                             error=f"cannot read the spool: {exc} (a damaged "
                                                   "file: `bridge doctor --repair`)")
                        if res.error is not None and res.error.startswith("retries exhausted"):
                            paused.append(res.error)
                    with lease_lock:
                        results.append(res)
                    current.clear()
            finally:
                store.close()

        for label, items in work.items():
            pending_items: queue.SimpleQueue = queue.SimpleQueue()
            for item in items:
                pending_items.put(item)
            streams = 1
            if not self.dry_run and len(items) > 1:
                try:
                    first = self._adapter(label, items[0][0], 0)
                    streams = max(1, min(len(items), int(capability(first, "concurrent_runs"))))
                except AdapterError:
                    streams = 1  # _deliver reports the error per run
            paused: list = []  # shared by the label's streams: one failure pauses them all
            for slot in range(streams):
                t = start_thread(worker, f"bridge-sync-{label}-{slot}",
                                 args=(label, pending_items, paused, slot))
                threads.append(t)
        for t in threads:
            t.join()
        if leased and not self.dry_run:
            try:
                store = StateStore(self.spool_dir, self.state_name)
                try:
                    for run_id in leased:
                        store.release_lease(run_id, self.holder)
                finally:
                    store.close()
            except (sqlite3.Error, OSError) as exc:  # e.g. the disk filled during the pass
                summary.file_errors.append(
                    f"{self.spool_dir / self.state_name}: cannot release this agent's "
                    f"leases ({exc});"
                    f" they expire in {self.settings.lease_seconds:g} s")
        order = {(backend_label(s), r.run_id): i for i, (s, r) in
                 enumerate((s, r) for r in records for s in self._specs(r))}
        summary.results = sorted(results, key=lambda p: order.get((p.backend, p.run_id), 0))
        return summary

    def _pending(self, store: StateStore, label: str, rec: RunRecord) -> int:
        return count_after(rec.files, rec.run_id, store.cursors(label, rec.run_id))

    def _pending_or_all(self, label: str, rec: RunRecord) -> int:
        """Pending events after a failure; every event of the run when the cursors are
        unreadable (nothing can be shown as confirmed then), -1 if the spool is too."""
        try:  # read-only: the state file may be readable and not writable
            conn = open_file(self.spool_dir / self.state_name)
            try:
                cursors = dict(conn.execute(
                    "SELECT file_id, seq FROM cursors WHERE backend=? AND run_id=?",
                    (label, rec.run_id)).fetchall())
            finally:
                conn.close()
        except (SpoolError, sqlite3.Error, OSError):
            cursors = {}
        try:
            return count_after(rec.files, rec.run_id, cursors)
        except (SpoolError, sqlite3.Error, OSError):
            return -1

    def _adapter(self, label: str, spec: dict, slot: int = 0) -> Any:
        """One adapter per backend spec and stream (streams never share an SDK client)."""
        key = json.dumps(spec, sort_keys=True) + f"#{slot}"
        with self._lock:
            if key not in self._adapters:
                cls = load_adapter(spec["name"])
                opts = {k: v for k, v in spec.items() if k not in ("name", "id")}
                self._adapters[key] = cls(spool_dir=str(self.spool_dir), **opts)
            return self._adapters[key]

    def _deliver(self, store: StateStore, label: str, spec: dict, rec: RunRecord,
                 slot: int = 0, redelivery: int = 0) -> PairResult:
        res = PairResult(label, rec.run_id)
        cursors = store.cursors(label, rec.run_id)
        upto = max_seqs(rec.files, rec.run_id)
        total = count_after(rec.files, rec.run_id, cursors)
        remote_id, _, closed = store.remote(label, rec.run_id)
        res.remote_id = remote_id
        dead_letters = store.dead_letters(label, rec.run_id) if self.retry_dead else []
        finished = rec.status != "RUNNING"
        if self.dry_run:
            res.pending = total
            return res
        idle = total == 0 and not dead_letters and (closed or not finished)
        if idle and (remote_id is None or not self._check_due(label, spec, rec.run_id)):
            return res
        try:
            adapter = self._adapter(label, spec, slot)
        except AdapterError as exc:
            res.error = f"cannot load backend {label!r}: {exc}"
            res.pending = total
            store.record_error(label, rec.run_id, res.error)
            return res
        info = RunInfo(
            run_id=rec.run_id, project=rec.project, name=rec.name, notes=rec.notes,
            group=rec.group, start_ms=rec.start_ms, end_ms=rec.end_ms, status=rec.status,
            options={k: v for k, v in spec.items() if k not in ("name", "id")},
            blob_root=self.spool_dir / "blobs", remote_id=remote_id,
            state=AdapterState(store.adapter_state(label, rec.run_id)),
        )
        done = 0
        lost: RemoteRunLost | None = None
        try:
            if idle:  # everything delivered: is it still there?
                self._check_remote(adapter, info, label)
                return res
            new_remote = self._call(lambda: adapter.open_run(info))
            self._checked[(label, rec.run_id)] = time.monotonic()
            if new_remote != remote_id:
                store.save_remote(label, rec.run_id, str(new_remote),
                                  _url(adapter, info, new_remote))
                res.remote_id = str(new_remote)
                info = _with_remote(info, str(new_remote))
            if dead_letters:
                self._redeliver_dead(store, adapter, info, label, rec, dead_letters)
            batch: list[Event] = []
            limit = max(1, adapter.limits.max_events)
            for ev in iter_events(rec.files, rec.run_id, cursors, self.settings.chunk_size, upto):
                batch.append(ev)
                if len(batch) >= limit:
                    done += self._export(store, adapter, info, label, batch, res)[0]
                    batch = []
                    self._report(label, rec.run_id, done, total)
                    if self.stop.is_set():
                        raise Stopped()
            if batch:
                done += self._export(store, adapter, info, label, batch, res)[0]
                self._report(label, rec.run_id, done, total)
            if finished and not closed:
                end = rec.end_ms or now_ms()
                self._call(lambda: adapter.close_run(info, rec.status, end))
                store.mark_closed(label, rec.run_id)
                res.closed = True
        except RemoteRunLost as exc:
            lost = exc
        except Stopped:
            res.error = "stopped"
        except TransientFailure as exc:
            res.error = f"retries exhausted: {exc.reason}"
            store.record_error(label, rec.run_id, res.error)
        except AdapterError as exc:
            res.error = f"{type(exc).__name__}: {exc}"
            store.record_error(label, rec.run_id, res.error)
        except sqlite3.DatabaseError as exc:
            res.error = f"cannot read the spool: {exc} (a damaged file: `bridge doctor --repair`)"
            store.record_error(label, rec.run_id, res.error)
        if lost is not None:
            return self._redeliver_lost(store, label, spec, rec, slot, redelivery, lost)
        res.delivered = done - res.dead
        try:
            res.pending = count_after(rec.files, rec.run_id, store.cursors(label, rec.run_id))
        except sqlite3.DatabaseError:
            res.pending = -1  # unknown: a file cannot be read
        return res

    def _check_due(self, label: str, spec: dict, run_id: str) -> bool:
        """Whether an idle (backend, run)'s remote run should be checked in this pass."""
        if label in self._check_paused:
            return False
        last = self._checked.get((label, run_id))
        if last is not None and time.monotonic() - last < self.CHECK_INTERVAL_S:
            return False
        try:
            return bool(capability(load_adapter(spec["name"]), "checks_remote"))
        except AdapterError:
            return False

    def _check_remote(self, adapter: Any, info: RunInfo, label: str) -> None:
        """One attempt; RemoteRunLost goes up, a failure to check pauses checks this pass."""
        try:
            adapter.check_remote(info)
        except RemoteRunLost:
            raise
        except Exception:  # cannot tell now (server down): nothing changes, check next pass
            self._check_paused.add(label)
            return
        self._checked[(label, info.run_id)] = time.monotonic()

    def _redeliver_lost(self, store: StateStore, label: str, spec: dict, rec: RunRecord,
                        slot: int, redelivery: int, lost: RemoteRunLost) -> PairResult:
        """The remote run is gone: forget the delivery and deliver the whole run again.

        What was confirmed there may be missing now, so the cursors, the run map, the
        adapter's state and the dead letters of this (backend, run) are dropped together and
        the run goes again from its first event, into a new remote run (or one found by
        tag; MLflow ignores an identical point). Lost again and again: stop, with an error.
        """
        store.forget_delivery(label, rec.run_id)
        if redelivery >= self.MAX_REDELIVERIES:
            res = PairResult(label, rec.run_id, remote_lost=str(lost))
            res.error = (f"remote run lost again while re-delivering the run, stopped (the "
                         f"next sync delivers it from its first event): {lost}")
            store.record_error(label, rec.run_id, res.error)
            res.pending = self._pending(store, label, rec)
            return res
        res = self._deliver(store, label, spec, rec, slot, redelivery + 1)
        res.remote_lost = str(lost)
        return res

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run an adapter call; transient errors are retried, AdapterError is final."""

        def attempt() -> Any:
            try:
                return fn()
            except TransientError as exc:
                raise TransientFailure(str(exc), getattr(exc, "retry_after", None)) from exc
            except AdapterError:
                raise
            except Exception as exc:  # a vendor SDK's own exception: assume it may pass
                raise TransientFailure(f"{type(exc).__name__}: {exc}") from exc

        return call_with_retries(attempt, self.policy, self.stop)

    def _export(self, store: StateStore, adapter: Any, info: RunInfo, label: str,
                batch: list[Event], res: PairResult) -> tuple[int, dict]:
        refused = check_references(batch, info.references)
        sendable = [ev for ev in batch if ev.uid not in refused] if refused else batch

        def attempt() -> ExportResult:
            if not sendable:
                return ExportResult.success()
            try:
                result = adapter.export(info, sendable)
            except TransientError as exc:
                raise TransientFailure(str(exc), getattr(exc, "retry_after", None)) from exc
            except AdapterError:
                raise
            except Exception as exc:
                raise TransientFailure(
                    f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
                ) from exc
            if result.outcome is Outcome.RETRY:
                raise TransientFailure(result.reason or "backend asked to retry",
                                       result.retry_after)
            return result

        result = call_with_retries(attempt, self.policy, self.stop)
        if result.outcome is Outcome.PERMANENT:
            dead = {ev.uid: result.reason or "refused by the backend" for ev in sendable}
        else:
            uids = {ev.uid for ev in sendable}
            dead = {uid: reason for uid, reason in result.rejected.items() if uid in uids}
        dead.update(refused)
        cursors: dict[str, int] = {}
        for ev in batch:
            if ev.seq > cursors.get(ev.file_id, 0):
                cursors[ev.file_id] = ev.seq
        store.commit_batch(label, info.run_id, cursors, info.state, dead)
        self._renew_lease(store, info.run_id)
        res.dead += len(dead)
        return len(batch), dead

    def _redeliver_dead(self, store: StateStore, adapter: Any, info: RunInfo, label: str,
                        rec: RunRecord, letters: list) -> None:
        by_file = {f.file_id: f for f in rec.files}
        seqs: dict[str, list[int]] = {}
        for dl in letters:
            if dl.file_id in by_file:
                seqs.setdefault(dl.file_id, []).append(dl.seq)
        events: list[Event] = []
        for file_id, wanted in seqs.items():
            events.extend(events_by_seq(by_file[file_id], wanted))
        limit = max(1, adapter.limits.max_events)
        for i in range(0, len(events), limit):
            batch = events[i : i + limit]
            _, refused_again = self._export(store, adapter, info, label, batch,
                                            PairResult(label, rec.run_id))
            # Refused again: _export re-recorded them with the backend's new reason.
            store.resolve_dead(label, rec.run_id,
                               [ev.uid for ev in batch if ev.uid not in refused_again])

    def _renew_lease(self, store: StateStore, run_id: str) -> None:
        """Keep a long delivery's lease alive (renewed after a third of its life)."""
        now = time.monotonic()
        if now - self._renewed.get(run_id, now) >= self.settings.lease_seconds / 3:
            store.acquire_lease(run_id, self.holder, self.settings.lease_seconds)
            self._renewed[run_id] = now
        self._renewed.setdefault(run_id, now)

    def _report(self, label: str, run_id: str, done: int, total: int) -> None:
        if self.progress is not None:
            try:
                self.progress(label, run_id, done, total)
            except Exception:
                pass

    def shutdown(self) -> None:
        """Shut every adapter down (flushes vendor SDKs)."""
        with self._lock:
            adapters = list(self._adapters.values())
            self._adapters.clear()
        for a in adapters:
            try:
                a.shutdown()
            except Exception:
                pass


def _with_remote(info: RunInfo, remote_id: str) -> RunInfo:
    from dataclasses import replace

    return replace(info, remote_id=remote_id)


def _url(adapter: Any, info: RunInfo, remote_id: str) -> str | None:
    if not isinstance(adapter, BaseAdapter) and not hasattr(adapter, "run_url"):
        return None  # a third-party adapter without the base class or the method
    try:
        return adapter.run_url(info, remote_id)
    except Exception:  # a URL is a courtesy: never fail a delivery over it
        return None
