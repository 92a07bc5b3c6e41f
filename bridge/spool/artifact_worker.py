"""The writer's artifact thread: hashes and copies artifact files one job at a time, so a
1 GB checkpoint costs the training loop a ``stat``, not a 3.5 s copy.

A job's result is handed to ``done`` (the writer then queues its blobs and its event for the
next commit) and its failure to ``failed``; :meth:`ArtifactWorker.wait` blocks until the jobs
queued so far are handed over, which ``flush()`` and ``finish()`` use.
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Callable

from bridge.spool.artifacts import ArtifactJob, discard, store
from bridge.threads import start_thread

__all__ = ["ArtifactWorker"]

Done = Callable[[ArtifactJob, dict, list, list], None]
Failed = Callable[[ArtifactJob, BaseException], None]


class ArtifactWorker:
    """One thread, started on the first job, stopped by :meth:`close`."""

    def __init__(self, spool_dir: Path, done: Done, failed: Failed) -> None:
        self.spool_dir = Path(spool_dir)
        self._done = done
        self._failed = failed
        self._jobs: collections.deque[ArtifactJob] = collections.deque()
        self._cond = threading.Condition()
        self._busy = 0  # jobs queued or being stored
        self._bytes = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> tuple[int, int]:
        """(jobs, bytes) not handed over yet."""
        with self._cond:
            return self._busy, self._bytes

    def submit(self, job: ArtifactJob) -> None:
        with self._cond:
            self._jobs.append(job)
            self._busy += 1
            self._bytes += job.nbytes
            if self._thread is None or not self._thread.is_alive():
                self._thread = start_thread(self._loop, "bridge-spool-artifacts")
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every job submitted so far is handed over; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        done = self.wait(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return done

    def abandon(self) -> None:
        """In a forked child: the parent's jobs are the parent's."""
        with self._cond:
            for job in self._jobs:
                discard(job)
            self._jobs.clear()
            self._busy, self._bytes, self._closed = 0, 0, True
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._jobs or self._closed)
                if not self._jobs:
                    return
                job = self._jobs.popleft()
            try:
                payload, stored, problems = store(job, self.spool_dir)
            except BaseException as exc:  # a vanished file, a full disk: said, counted
                discard(job)
                self._failed(job, exc)
            else:
                self._done(job, payload, stored, problems)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._bytes -= job.nbytes
                    self._cond.notify_all()
