"""In-process background sync: deliver a run's events while training runs.

A daemon thread runs sync passes for the run every ``interval`` seconds. ``finish()`` asks
for final passes until nothing is pending or the bound is reached, then leaves the rest to
``bridge sync`` (the spool keeps it). Errors never reach the training loop.
"""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING

from bridge.agent.sync import Syncer, SyncSummary
from bridge.errors import BridgeWarning
from bridge.threads import start_thread

if TYPE_CHECKING:
    from bridge.run import Run

__all__ = ["BackgroundSync", "start_background_sync"]


class BackgroundSync:
    def __init__(self, run: "Run", interval: float = 1.0) -> None:
        self.run = run
        self.interval = interval
        self._stop = threading.Event()
        self._final = threading.Event()
        self._done = threading.Event()
        self.last: SyncSummary | None = None
        self.error: str | None = None
        self._syncer = Syncer(run.dir, settings=run.settings.agent, runs=[run.id], stop=self._stop)
        self._thread = start_thread(self._loop, "bridge-background-sync")

    def _pass(self) -> SyncSummary | None:
        try:
            self.last = self._syncer.run_once()
            return self.last
        except Exception as exc:  # never into the training loop
            self.error = f"{type(exc).__name__}: {exc}"
            return None

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if self._final.wait(self.interval):
                    break
                self._pass()
            # Final passes: the run is finished and flushed; drain what is left.
            while not self._stop.is_set():
                summary = self._pass()
                if summary is None or summary.complete or not summary.results:
                    break
                if all(r.error or r.skipped for r in summary.results if r.pending):
                    break
        finally:
            self._syncer.shutdown()
            self._done.set()

    def finish(self, timeout: float) -> bool:
        """Drain within ``timeout`` seconds; True when everything was delivered."""
        self._final.set()
        finished = self._done.wait(timeout)
        if not finished:
            self._stop.set()
            self._done.wait(5)
        complete = bool(self.last and self.last.complete)
        if not complete:
            left = sum(r.pending for r in self.last.results) if self.last else None
            warnings.warn(
                f"bridge: run {self.run.id}: background sync did not finish within {timeout:.0f}s"
                f" ({left if left is not None else 'unknown'} events pending); they are safe in "
                f"the spool: run `bridge sync --dir {self.run.dir}`",
                BridgeWarning, stacklevel=3,
            )
        return complete


def start_background_sync(run: "Run") -> BackgroundSync:
    return BackgroundSync(run)
