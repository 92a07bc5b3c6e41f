"""The spool writer: the caller enqueues, a writer thread commits batches.

One writer (and one SQLite file) per process and spool directory, so writers never
contend for a lock. The caller's thread only appends a tuple to a deque. The writer thread
wakes every ``flush_interval`` seconds, drains the deque and commits everything in one
``BEGIN IMMEDIATE … COMMIT`` using multi-row INSERT statements of up to 4096 rows: every
statement releases the GIL once, and a tight training loop makes a GIL re-acquisition cost
up to the interpreter's switch interval (5 ms), so few large statements keep up where
``executemany`` (one release per row) does not.

Durability (``durability=``):
- ``"journal"`` (default): the caller appends each call to a memory-mapped journal
  (:mod:`bridge.spool.segment`) instead of the queue, and the writer thread commits from
  there every ``flush_interval``; a SIGKILL loses no call that had returned: the next opener
  of the spool replays it (:mod:`bridge.spool.recover`). A media value is journaled as its
  pickle (one above ``MAX_JOURNALED_MEDIA_BYTES`` commits before it returns, as with
  ``"commit"``); an artifact's files are copied on the artifact thread, as with
  ``"buffered"``, so a kill during the copy loses that artifact (``flush()`` waits for it).
- ``"buffered"``: committed every ``flush_interval`` (50 ms). A SIGKILL loses what was not
  committed yet: in a loop that logs slower than SQLite commits (the usual training loop),
  the last flush interval; in a loop that logs faster than that, up to ``max_queue`` queued
  calls (measured in BENCHMARKS.md: a median of 150k events, 0.37 s, in a tight 2-key loop).
  ``flush()`` bounds it at any point; lower ``max_queue`` bounds it always.
- ``"commit"``: every call commits before it returns (SQLite ``synchronous=NORMAL``);
  survives a process crash.
- ``"fsync"``: every call commits with ``synchronous=FULL``; survives power loss.

The queue is bounded (``max_queue`` calls): when it is full the caller commits itself
(backpressure) rather than letting memory grow.
"""

from __future__ import annotations

import collections
import os
import pickle
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from bridge.errors import BridgeWarning, ConfigError
from bridge.spool import liveness
from bridge.spool.artifact_worker import ArtifactWorker
from bridge.spool.artifacts import ArtifactJob, discard as discard_artifact
from bridge.spool.artifacts import store as store_artifact
from bridge.spool.events import EVENT_COLUMNS, Kind, encode_float
from bridge.spool.schema import connect, create_schema, is_network_fs
from bridge.threads import start_thread

__all__ = ["DURABILITY", "SpoolWriter", "defer_if_committing"]

# A commit interrupted by an exception that a signal handler raised (SIGTERM, Ctrl-C) between
# its COMMIT and its bookkeeping would be retried and written twice; one interrupted while
# it pops the queue would lose calls. Handlers therefore ask ``defer_if_committing`` first:
# inside a commit on this thread, the interrupt is raised when the commit is done.
_guard = threading.local()


def defer_if_committing(interrupt: "Callable[[], None]") -> bool:
    """If this thread is inside a spool commit, run ``interrupt`` when it ends; True then."""
    if getattr(_guard, "depth", 0):
        if getattr(_guard, "deferred", None) is None:
            _guard.deferred = interrupt
        return True
    return False

DURABILITY = ("buffered", "commit", "fsync", "journal")

# Queue item tags.
_METRICS = 0  # (_METRICS, run_id, step, ts_ms, [(key, float), ...])
_EVENT = 1  # (_EVENT, run_id, kind, key, step, ts_ms, value, payload_json)
_RUN = 2  # (_RUN, run row dict) — insert or update the run's row in this file
_FINISH = 3  # (_FINISH, run_id, end_ms, status, error)
_COUNT = 4  # (_COUNT, run_id, column, n) — warnings / dropped counters
_BLOB = 5  # (_BLOB, sha256, size)
_MEDIA = 6  # (_MEDIA, run_id, key, step, ts_ms, bridge.media.Media) — encoded by the committer
_MEDIA_JOURNALED = 7  # (_MEDIA_JOURNALED, run_id, key, step, ts_ms, pickled Media) — journal

# Media not yet encoded holds the caller's pixels: past this many bytes in the queue, the
# caller encodes and commits itself (backpressure), so memory stays bounded.
MAX_QUEUED_MEDIA_BYTES = 256 << 20
# Encoding an image takes milliseconds: a commit encodes at most this many media calls, so
# the metrics logged meanwhile are committed between them instead of after a whole backlog.
MEDIA_PER_COMMIT = 8
# A media value whose pickle is larger than this is not journaled: with "journal" it is
# encoded and committed before log() returns, as with "commit" (a video, a large table).
MAX_JOURNALED_MEDIA_BYTES = 2 << 20
# Journal records decoded per transaction: decoded items are new objects, and a list of
# hundreds of thousands of them makes the garbage collector's passes the bulk of the work.
JOURNAL_BATCH = 8192
# Segments of journal a caller may run ahead of the commits before it commits itself
# (64 MB of 8 MB segments, ~500,000 calls of two metrics): a burst that size costs the loop
# no SQLite work, and a replay after a kill reads at most this much (about a second).
JOURNAL_AHEAD_SEGMENTS = 8

_COLS = f"({', '.join(EVENT_COLUMNS)})"
# Rows per statement: SQLite before 3.32 allows only 999 bound values per statement.
_CHUNKS = ((4096, 1024, 256, 64, 16, 4, 1) if sqlite3.sqlite_version_info >= (3, 32, 0)
           else (128, 32, 8, 2, 1))
_SQL = {
    n: f"INSERT INTO events {_COLS} VALUES " + ",".join(["(?,?,?,?,?,?,?)"] * n) for n in _CHUNKS
}
# Finite metrics, the bulk of the traffic: five bound values per row instead of seven.
_METRIC_SQL = {
    n: f"INSERT INTO events {_COLS} VALUES " + ",".join([f"(?,'{Kind.METRIC.value}',?,?,?,?,NULL)"] * n)
    for n in _CHUNKS
}

_network_fs_warned = False

# Errors of a value, not of the storage: binding a string with a lone surrogate, an integer
# past 64 bits, a type SQLite has no adapter for. Disk full and I/O errors are
# ``sqlite3.OperationalError`` and keep the batch for a retry instead.
_BAD_VALUE = (ValueError, OverflowError, TypeError, sqlite3.InterfaceError,
              sqlite3.ProgrammingError, sqlite3.DataError, sqlite3.IntegrityError)


class _Unwritten(Exception):
    """A storage error in the middle of isolating a bad value, with the calls not written."""

    def __init__(self, cause: Exception, items: list) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.items = items


def _file_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in os.uname().nodename)[:40]
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{host or 'host'}-{os.getpid()}-{os.urandom(4).hex()}"


class SpoolWriter:
    """Owns one spool file and the thread that commits to it."""

    _journal: Any = None  # bridge.spool.segment.Journal with durability "journal"
    _journal_mark: str | None = None  # journal position after the calls being committed
    # run.log's common case in one C call (Journal.fast_log), with the C appender only.
    fast_log: Callable[[str, int, Any, set], bool] | None = None

    def __init__(
        self,
        spool_dir: Path,
        *,
        durability: str = "journal",
        flush_interval: float = 0.05,
        max_queue: int = 100_000,
        node: str = "",
    ) -> None:
        if durability not in DURABILITY:
            raise ConfigError(f"durability must be one of {DURABILITY}, got {durability!r}")
        self.spool_dir = Path(spool_dir)
        self.durability = durability
        self.flush_interval = float(flush_interval)
        self.max_queue = int(max_queue)
        self.node = node
        self.file_id = _file_id()
        files = self.spool_dir / "spool"
        files.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = files / f"{self.file_id}.db"
        self.wal = not is_network_fs(self.spool_dir)
        if not self.wal:
            _warn_network_fs(self.spool_dir)
        old_umask = os.umask(0o077)
        try:
            self._conn = connect(
                self.path, wal=self.wal, synchronous="FULL" if durability == "fsync" else "NORMAL"
            )
            create_schema(
                self._conn,
                {
                    "file_id": self.file_id,
                    "node": node,
                    "host": os.uname().nodename,
                    "pid": str(os.getpid()),
                    "created_ms": str(int(time.time() * 1000)),
                    "journal": "wal" if self.wal else "delete",
                },
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        # While this writer lives, `bridge prune` leaves its file alone (bridge.spool.liveness).
        self._live_lock = liveness.hold(self.path)
        self._queue: collections.deque[Any] = collections.deque()
        # Backpressure: a caller that finds the queue full commits this many calls itself,
        # a short pause spread over the loop instead of one long stall.
        self._slice = max(256, min(4096, self.max_queue // 8))
        self._lock = threading.Lock()  # one committer at a time (thread or caller)
        self._wake = threading.Event()
        self._closed = False
        self._retry: list[Any] = []  # items of a failed commit, tried again next time
        self.committed_calls = 0
        self.dropped = 0
        self._dropped_pending: dict[str, int] = {}  # run id -> dropped, not yet in the file
        self.dropped_by_run: dict[str, int] = {}  # run id -> dropped since this writer started
        self._drop_warned = False
        self.last_error: str | None = None
        self._media_bytes = 0  # bytes held by queued media not encoded yet
        # Artifact files are hashed and copied on their own thread (bridge.spool.artifacts).
        self._artifacts = ArtifactWorker(self.spool_dir, self._artifact_done,
                                         self._artifact_failed)
        if durability == "journal":
            self._use_journal()
        self._thread = start_thread(self._loop, "bridge-spool-writer")

    def _use_journal(self) -> None:
        """Journal every plain queued item on the caller's thread (``durability="journal"``):
        the queue's ``append`` and the two hot calls become the journal's appender."""
        from bridge.spool.segment import Journal

        try:
            self._journal = Journal(self.path)
        except (OSError, ValueError) as exc:  # a full disk, a filesystem without shared maps
            warnings.warn(f"bridge: cannot create the journal beside {self.path} ({exc}); "
                          "this writer commits as durability='buffered' (a kill loses what "
                          "was not committed yet)", BridgeWarning, stacklevel=4)
            self.durability = "buffered"
            return
        q = self._queue = _JournalQueue()
        put, self.put_metrics = self._journal.appender(  # type: ignore[method-assign]
            self._journal_behind, self._journal_full)
        q.put = self._journal_put = put
        self.fast_log = self._journal.fast_log

        def put_event(run_id: str, kind: str, key: str | None, step: int | None, ts_ms: int,
                      value: float | None = None, payload: str | None = None) -> None:
            put((_EVENT, run_id, kind, key, step, ts_ms, value, payload))

        self.put_event = put_event  # type: ignore[method-assign]

    def _journal_full(self, item: tuple) -> None:
        """A call the journal had no room for (its next segment could not be made): kept in
        memory as with "buffered", committed, or counted as dropped if the disk stays full."""
        q = self._queue
        collections.deque.append(q, item)
        if len(q) >= self.max_queue:
            self.commit_pending(self._slice)

    def _journal_behind(self) -> None:
        """At a segment's end: a caller JOURNAL_AHEAD_SEGMENTS ahead of the commits commits
        itself (backpressure, as a full queue does in "buffered"), so the journal stays bounded.
        Media the writer is still encoding counts apart, bounded by bytes as "buffered"
        bounds it (MAX_QUEUED_MEDIA_BYTES): a loop logging images faster than PNG encodes
        them goes on while the writer catches up, instead of encoding them itself."""
        journal = self._journal
        ahead = journal.backlog() * journal.segment_bytes - min(self._media_bytes,
                                                                MAX_QUEUED_MEDIA_BYTES)
        if (ahead >= JOURNAL_AHEAD_SEGMENTS * journal.segment_bytes
                and not getattr(_guard, "depth", 0)):
            # A segment's worth, not the whole window: the loop pauses for one segment's
            # commit (~0.3 s of two-metric calls here), not the whole window's (~1.3 s).
            target = journal.backlog() - 1
            while journal.backlog() > target:
                before = self._journal_mark
                self.commit_pending(0)  # no queued call: JOURNAL_BATCH journal records
                if self._journal_mark == before:
                    break  # nothing read (a failing disk): the writer thread goes on

    # -- the caller's side -------------------------------------------------------------

    def put_metrics(self, run_id: str, step: int | None, ts_ms: int, items: list) -> None:
        """Enqueue one ``log()`` call's metrics (already validated floats)."""
        q = self._queue
        q.append((_METRICS, run_id, step, ts_ms, items))
        if self.durability != "buffered":
            self.commit_pending()
        elif len(q) >= self.max_queue:
            self.commit_pending(self._slice)

    def put_event(self, run_id: str, kind: str, key: str | None, step: int | None, ts_ms: int,
                  value: float | None = None, payload: str | None = None) -> None:
        self._queue.append((_EVENT, run_id, kind, key, step, ts_ms, value, payload))
        if self.durability != "buffered":
            self.commit_pending()
        elif len(self._queue) >= self.max_queue:
            self.commit_pending(self._slice)

    def put_media(self, run_id: str, key: str, step: int | None, ts_ms: int, media: Any) -> None:
        """Enqueue a media value (:class:`bridge.media.Media`); the committer encodes it,
        stores its blobs durably, then commits its event."""
        self._media_bytes += media.nbytes()
        if self._journal is not None and self._journal_media(run_id, key, step, ts_ms, media):
            if self._media_bytes > MAX_QUEUED_MEDIA_BYTES:
                self.commit_pending()
            return
        self._queue.append((_MEDIA, run_id, key, step, ts_ms, media))
        if self.durability != "buffered" or self._media_bytes > MAX_QUEUED_MEDIA_BYTES:
            self.commit_pending()
        elif len(self._queue) >= self.max_queue:
            self.commit_pending(self._slice)

    def _journal_media(self, run_id: str, key: str, step: int | None, ts_ms: int,
                       media: Any) -> bool:
        """Journal a media call as its pickle, so a kill loses it no more than a metric;
        False (the caller commits it now instead) when it does not pickle or is too large."""
        try:
            data = pickle.dumps(media, protocol=5)
        except Exception:
            return False
        if len(data) > MAX_JOURNALED_MEDIA_BYTES:
            return False
        self._journal_put((_MEDIA_JOURNALED, run_id, key, step, ts_ms, data))
        return True

    def put_artifact(self, job: ArtifactJob) -> None:
        """Queue an artifact: its files are hashed (and copied) on the artifact thread, and
        its event commits after its blobs are durable. With ``durability`` "commit" or
        "fsync" the call stores and commits before it returns, as every call does there
        (an ``OSError`` then reaches the caller)."""
        if self.durability in ("commit", "fsync"):
            try:
                payload, stored, problems = store_artifact(job, self.spool_dir)
            except BaseException:
                discard_artifact(job)
                raise
            self._artifact_done(job, payload, stored, problems)
            self.commit_pending()
        else:
            self._artifacts.submit(job)

    def _artifact_done(self, job: ArtifactJob, payload: dict, stored: list,
                       problems: list) -> None:
        from bridge.spool.events import encode_payload

        for sha, size in stored:
            self._queue.append((_BLOB, sha, size))
        self._queue.append((_EVENT, job.run_id, Kind.ARTIFACT.value, job.name, job.step,
                            job.ts_ms, None, encode_payload(payload)))
        for problem in problems:
            self._artifact_problem(job, f"{job.name!r}: {problem}; the spool holds the bytes "
                                        "read then")
        self._wake.set()

    def _artifact_failed(self, job: ArtifactJob, exc: BaseException) -> None:
        self._artifact_problem(job, f"{job.name!r}: {exc}; artifact not recorded")
        self._wake.set()

    def _artifact_problem(self, job: ArtifactJob, problem: str) -> None:
        """Warned and counted on the run (its ``on_problem``), else here."""
        if job.on_problem is not None:
            job.on_problem(problem)
            return
        warnings.warn(f"bridge: log_artifact: {problem}", BridgeWarning, stacklevel=3)
        self._queue.append((_COUNT, job.run_id, "warnings", 1))

    def pending_artifacts(self) -> tuple[int, int]:
        """(artifacts, bytes) logged and not stored yet."""
        return self._artifacts.pending

    def wait_artifacts(self, timeout: float | None = None) -> bool:
        """Block until the artifacts logged so far are stored and queued; visible: a wait
        longer than a second says what it waits for, once."""
        if self._artifacts.wait(min(1.0, timeout) if timeout is not None else 1.0):
            return True
        if timeout is not None and timeout <= 1.0:
            return False
        jobs, nbytes = self._artifacts.pending
        if jobs:
            warnings.warn(f"bridge: waiting for {jobs} artifact(s) ({nbytes / 1e6:.0f} MB) to be "
                          f"copied into the spool {self.spool_dir}", BridgeWarning, stacklevel=3)
        return self._artifacts.wait(None if timeout is None else max(0.0, timeout - 1.0))

    def put_run(self, row: dict) -> None:
        self._queue.append((_RUN, row))

    def put_finish(self, run_id: str, end_ms: int, status: str, error: str | None) -> None:
        # The run's artifacts commit before its end: an agent never closes a remote run
        # while one of its artifacts is still on its way into the spool.
        self.wait_artifacts()
        self._queue.append((_FINISH, run_id, end_ms, status, error))

    def put_count(self, run_id: str, column: str, n: int = 1) -> None:
        self._queue.append((_COUNT, run_id, column, n))

    def put_blob(self, sha256: str, size: int) -> None:
        self._queue.append((_BLOB, sha256, size))

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything enqueued so far is committed; False on timeout."""
        if not self.wait_artifacts(timeout):
            return False
        if self._closed or not self._thread.is_alive():
            self.commit_pending()
            return not self._queue
        marker = threading.Event()
        self._queue.append(marker)
        self._wake.set()
        return marker.wait(timeout) and not self._retry

    def close(self) -> None:
        """Commit what is left, stop the thread, close the file."""
        if self._closed:
            return
        self._artifacts.close()
        self._closed = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self.commit_pending()
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            if self._journal is not None:  # kept when calls are left: the next open replays
                self._journal.close(remove=not self._retry and not self._queue)
            liveness.release(self._live_lock)
            self._live_lock = None

    def abandon(self) -> None:
        """In a forked child: forget the parent's queue and thread without touching the file."""
        self._closed = True
        self._queue = collections.deque()
        self._artifacts.abandon()
        if self._journal is not None:
            self._journal.abandon()
        liveness.release(self._live_lock)  # the parent's own descriptor keeps its lock
        self._live_lock = None

    # -- the committing side -----------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.commit_pending()
            if self._journal is not None:
                try:
                    self._journal.prepare_spare()
                except OSError:
                    pass  # the caller makes the segment itself, and meets the error there

    def commit_pending(self, limit: int | None = None) -> None:
        """Drain the queue (or its first ``limit`` calls) and commit in one transaction."""
        _guard.depth = getattr(_guard, "depth", 0) + 1
        try:
            # A media backlog is committed a few media calls at a time (MEDIA_PER_COMMIT).
            while self._commit_pending(limit) and limit is None:
                pass
        finally:
            _guard.depth -= 1
            deferred = getattr(_guard, "deferred", None)
            if deferred is not None and not _guard.depth:
                _guard.deferred = None
                deferred()  # the signal that arrived meanwhile: raised now, nothing half-done

    def _commit_pending(self, limit: int | None) -> bool:
        """One transaction; True when it stopped early at MEDIA_PER_COMMIT media calls."""
        with self._lock:
            q = self._queue
            items = self._retry
            self._retry = []
            markers = []
            pop = q.popleft
            budget = -1 if limit is None else limit
            media = 0
            early = False
            try:
                while budget != 0:
                    budget -= 1
                    item = pop()
                    if type(item) is tuple:
                        items.append(item)
                        if item[0] == _MEDIA:
                            media += 1
                            if media >= MEDIA_PER_COMMIT:
                                early = True
                                break
                    else:
                        markers.append(item)
            except IndexError:
                pass
            if self._journal is not None:  # after the queue: all logged before its markers
                more, mark = self._journal.read(items, JOURNAL_BATCH)
                if mark is not None:
                    self._journal_mark = mark
                early = early or more
            if items:
                try:
                    deferred: list = []
                    if any(it[0] == _MEDIA_JOURNALED for it in items):
                        items = self._unjournal(items)
                    if any(it[0] == _MEDIA for it in items):
                        items = self._encode_media(items, deferred)
                    self._commit(items)
                    self._retry = deferred + self._retry
                except BaseException:  # SIGTERM/KeyboardInterrupt mid-commit: keep the batch
                    self._retry = items + self._retry
                    for m in markers:
                        q.appendleft(m)
                    raise
            if self._journal is not None and early and markers:
                # Journal records logged before these markers are still unread: the markers
                # wait for the transaction that reaches them (flush() returns only then).
                for m in reversed(markers):
                    q.appendleft(m)
                return early
            for m in markers:
                m.set()
            return early

    def _unjournal(self, items: list) -> list:
        """Journaled media calls back as media items (one that does not unpickle: counted)."""
        out = []
        for it in items:
            if it[0] != _MEDIA_JOURNALED:
                out.append(it)
                continue
            try:
                out.append((_MEDIA, it[1], it[2], it[3], it[4], pickle.loads(it[5])))
            except Exception as exc:
                self._reject((_EVENT, it[1], "media", it[2]), exc)
        return out

    def _encode_media(self, items: list, deferred: list) -> list:
        """Each media call becomes its blobs (stored and fsynced now, before the event can
        commit) and one event row; a value that cannot be encoded is dropped, counted; one
        whose blobs cannot be written (a full disk) goes to ``deferred``, retried later."""
        from bridge.spool import blobs
        from bridge.spool.events import encode_payload

        out: list = []
        for it in items:
            if it[0] != _MEDIA:
                out.append(it)
                continue
            _, run_id, key, step, ts, media = it
            self._media_bytes = max(0, self._media_bytes - media.nbytes())
            stored: list = []

            def store(data: bytes) -> tuple[str, int]:
                sha, size = blobs.store_bytes(self.spool_dir, data)
                stored.append((_BLOB, sha, size))
                return sha, size

            try:
                payload = encode_payload(media.payload(store, key.replace("/", "_")))
            except OSError as exc:  # a full disk: keep the call for the next commit
                if self.last_error is None:
                    warnings.warn(f"bridge: cannot store media {key!r} in {self.spool_dir}: "
                                  f"{exc} (kept in memory and retried)", BridgeWarning,
                                  stacklevel=2)
                self.last_error = f"bridge: cannot store media in {self.spool_dir}: {exc}"
                self._media_bytes += media.nbytes()
                deferred.append(it)
                continue
            except Exception as exc:  # an encoder refused the value
                self._reject((_EVENT, run_id, "media", key), exc)
                continue
            out.extend(stored)
            out.append((_EVENT, run_id, "media", key, step, ts, None, payload))
        return out

    def _write(self, items: list) -> None:
        """One transaction for ``items``; raises whatever SQLite or a binding raised."""
        # Segments of rows in call order: (True, finite metric rows of 5 values) or
        # (False, other rows of 7 values).
        segments: list[tuple[bool, list]] = []
        metric_rows: list[Any] = []
        event_rows: list[Any] = []
        other: list[Any] = []
        for it in items:
            tag = it[0]
            if tag == _METRICS:
                if event_rows:
                    segments.append((False, event_rows))
                    event_rows = []
                extend = metric_rows.extend
                _, run_id, step, ts, kv = it
                for key, val in kv:
                    if val - val == 0.0:  # finite
                        extend((run_id, key, step, ts, val))
                    else:
                        if metric_rows:
                            segments.append((True, metric_rows))
                            metric_rows = []
                            extend = metric_rows.extend
                        v, p = encode_float(val)
                        segments.append((False, [run_id, Kind.METRIC.value, key, step, ts, v, p]))
            elif tag == _EVENT:
                if metric_rows:
                    segments.append((True, metric_rows))
                    metric_rows = []
                event_rows.extend(it[1:])
            else:
                other.append(it)
        if metric_rows:
            segments.append((True, metric_rows))
        if event_rows:
            segments.append((False, event_rows))
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for it in other:
                if it[0] == _RUN:
                    self._write_run(it[1])
            for is_metric, rows in segments:
                self._insert_rows(rows, 5 if is_metric else 7)
            for it in other:
                tag = it[0]
                if tag == _FINISH:
                    conn.execute(
                        "UPDATE runs SET end_ms=?, status=?, error=? WHERE run_id=?",
                        (it[2], it[3], it[4], it[1]),
                    )
                elif tag == _COUNT:
                    conn.execute(
                        f"UPDATE runs SET {it[2]}={it[2]}+? WHERE run_id=?", (it[3], it[1])
                    )
                elif tag == _BLOB:
                    conn.execute("INSERT OR IGNORE INTO blobs (sha256, size) VALUES (?, ?)",
                                 (it[1], it[2]))
            pending = dict(self._dropped_pending)
            for run_id, n in pending.items():
                conn.execute("UPDATE runs SET dropped=dropped+? WHERE run_id=?", (n, run_id))
            mark = self._journal_mark
            if mark is not None:  # replay starts here: exact, whatever happens next
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('journal_pos', ?)",
                             (mark,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for run_id, n in pending.items():
            self._dropped_pending[run_id] -= n
        self._dropped_pending = {k: v for k, v in self._dropped_pending.items() if v}
        self.committed_calls += len(items)
        if mark is not None and self._journal is not None:
            self._journal.committed(mark)

    def _commit(self, items: list) -> None:
        try:
            try:
                self._write(items)
            except _BAD_VALUE:
                # A value SQLite cannot bind (validation at the call should have caught it):
                # it costs its own call, never the batch around it.
                self._write_isolating(items)
        except _Unwritten as exc:  # the disk failed while isolating: keep what is left
            self._on_error(exc.cause, exc.items)
            return
        except Exception as exc:  # disk full, I/O error
            self._on_error(exc, items)
            return
        if self.last_error is not None:
            warnings.warn(f"bridge: spool {self.path} is writable again "
                          f"({self.dropped} events dropped meanwhile)", BridgeWarning,
                          stacklevel=2)
            self.last_error = None
            self._drop_warned = False

    def _write_isolating(self, items: list) -> None:
        """Commit ``items`` in halves, down to single calls; a call that cannot be stored is
        dropped, counted on its run and named in a warning."""
        parts = [items]
        # The journal position moves once every part is in (a part alone would skip the rest).
        mark, self._journal_mark = self._journal_mark, None
        try:
            while parts:
                part = parts.pop(0)
                try:
                    self._write(part)
                except _BAD_VALUE as exc:
                    if len(part) == 1:
                        self._reject(part[0], exc)
                    else:
                        mid = len(part) // 2
                        parts[0:0] = [part[:mid], part[mid:]]
                except Exception as exc:
                    raise _Unwritten(exc, [it for p in [part, *parts] for it in p]) from exc
        finally:
            self._journal_mark = mark
        if mark is not None:
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) "
                               "VALUES ('journal_pos', ?)", (mark,))
            if self._journal is not None:
                self._journal.committed(mark)

    def _reject(self, item: tuple, exc: BaseException) -> None:
        tag = item[0]
        if tag == _METRICS:
            what, n = f"log() of {[k for k, _ in item[4]]!r:.120}", len(item[4])
        elif tag == _EVENT:
            what, n = f"{item[2]} {item[3]!r:.80}", 1
        else:
            what, n = f"run record {item!r:.120}", 0
        run_id = item[1] if tag in (_METRICS, _EVENT, _FINISH, _COUNT) else None
        if n and run_id is not None:
            self.dropped += n
            self._dropped_pending[run_id] = self._dropped_pending.get(run_id, 0) + n
            self.dropped_by_run[run_id] = self.dropped_by_run.get(run_id, 0) + n
        warnings.warn(f"bridge: the spool cannot store {what} ({type(exc).__name__}: {exc}); "
                      "not recorded, counted as dropped", BridgeWarning, stacklevel=2)

    def _insert_rows(self, flat: list, width: int) -> None:
        n_rows = len(flat) // width
        done = 0
        execute = self._conn.execute
        sqls = _METRIC_SQL if width == 5 else _SQL
        for chunk in _CHUNKS:
            sql = sqls[chunk]
            while n_rows - done >= chunk:
                pos = done * width
                execute(sql, flat[pos : pos + chunk * width])
                done += chunk

    def _write_run(self, row: dict) -> None:
        cols = ["run_id", "project", "name", "notes", "group_name", "backends", "start_ms"]
        values = [row.get(c) for c in cols]
        self._conn.execute(
            f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            "ON CONFLICT(run_id) DO UPDATE SET name=excluded.name, notes=excluded.notes, "
            "group_name=excluded.group_name, backends=excluded.backends, status='RUNNING', "
            "end_ms=NULL",
            values,
        )

    def _on_error(self, exc: Exception, items: list) -> None:
        """A failed commit (disk full, I/O error): keep the batch, bounded, and say so once.

        Run rows and counters are always kept; beyond ``max_queue`` logged calls the oldest
        are dropped and counted per run (written to ``runs.dropped`` by the next commit that
        succeeds, and shown by ``bridge status``).
        """
        message = f"bridge: cannot write to spool {self.path}: {exc}"
        if self.last_error is None:
            warnings.warn(message + " (events are kept in memory, bounded, and retried)",
                          BridgeWarning, stacklevel=2)
        self.last_error = message
        calls = [i for i, it in enumerate(items) if it[0] in (_METRICS, _EVENT)]
        excess = len(calls) - self.max_queue
        if excess > 0:
            drop = set(calls[:excess])
            for i in drop:
                it = items[i]
                n = len(it[4]) if it[0] == _METRICS else 1
                self.dropped += n
                self._dropped_pending[it[1]] = self._dropped_pending.get(it[1], 0) + n
                self.dropped_by_run[it[1]] = self.dropped_by_run.get(it[1], 0) + n
            if not self._drop_warned:
                self._drop_warned = True
                warnings.warn(f"bridge: spool {self.path} still unwritable; dropping the oldest "
                              "events beyond max_queue (counted per run as 'dropped')",
                              BridgeWarning, stacklevel=2)
            items = [it for i, it in enumerate(items) if i not in drop]
        self._retry = items


class _JournalQueue(collections.deque):
    """The queue of a journal writer: a plain item goes to the journal, which the committer
    reads after the queue; media and flush markers are queued."""

    put: Callable[[tuple], None]

    def append(self, item: Any) -> None:
        if type(item) is tuple and item[0] != _MEDIA:
            self.put(item)
        else:
            collections.deque.append(self, item)


def _warn_network_fs(path: Path) -> None:
    global _network_fs_warned
    if not _network_fs_warned:
        _network_fs_warned = True
        warnings.warn(
            f"bridge: spool {path} is on a network filesystem; using a rollback journal "
            "instead of WAL (WAL is unsafe there)",
            BridgeWarning,
            stacklevel=3,
        )

