"""In-process background sync: deliver a run's events while training runs.

A daemon thread runs sync passes for the run every ``interval`` seconds (1 s). ``finish()``
asks for final passes until nothing is pending or the bound is reached, then leaves the rest
to ``bridge sync`` (the spool keeps it). Errors never reach the training loop.

Session pacing. Some backends cannot confirm a batch without ending a vendor session: the
W&B adapter writes each export as one ``wandb.init(resume=...)`` … ``finish()`` session
(offline: one ``offline-run-*`` fragment), the Comet adapter offline writes one archive per
export. An adapter says so with a true ``session_per_export`` attribute. Delivered every
second, such a backend got a session per second of training (3,600 fragments or archives an
hour, or a run resumed 3,600 times an hour online). While the run is RUNNING, those backends
are therefore delivered only every ``agent.session_interval`` seconds (default 300): each
delivery is still one ordinary pass, so cursors advance only after the backend confirmed
and the adapters' replay checks keep it exactly-once; what waits for the next delivery is
committed in the spool, so a killed process loses none of it (``bridge sync`` delivers it).
Every other backend (MLflow, Neptune, Comet online, which keeps its experiment open across
passes) is still delivered every pass. ``finish()`` delivers everything at once.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from typing import TYPE_CHECKING, Callable

from bridge.adapters.base import capability
from bridge.agent.sync import Syncer, SyncSummary, backend_label
from bridge.errors import BridgeWarning
from bridge.threads import start_thread

if TYPE_CHECKING:
    from bridge.run import Run

__all__ = ["BackgroundSync", "start_background_sync"]


class BackgroundSync:
    """``interval``: seconds between passes; ``session_interval``: seconds between
    deliveries to session-per-export backends while the run runs (default: the
    ``agent.session_interval`` setting; 0 = every pass); ``clock``: monotonic seconds
    (a benchmark compresses time with it)."""

    def __init__(self, run: "Run", interval: float = 1.0, session_interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run = run
        self.interval = interval
        if session_interval is None:
            session_interval = getattr(run.settings.agent, "session_interval", 0.0)
        self.session_interval = max(0.0, float(session_interval))
        self._clock = clock
        self._last_session = clock()  # the first paced delivery comes one interval in
        self._eager: list[str] | None = None  # labels delivered every pass
        self._paced: list[str] = []  # labels delivered every session_interval
        self.paced_passes = 0  # passes that delivered the paced backends (before finish)
        self._stop = threading.Event()
        self._final = threading.Event()
        self._done = threading.Event()
        self.last: SyncSummary | None = None
        self.error: str | None = None
        self._syncer = Syncer(run.dir, settings=run.settings.agent, runs=[run.id], stop=self._stop)
        self._thread = start_thread(self._loop, "bridge-background-sync")

    @property
    def paced_backends(self) -> list[str]:
        """Labels of the backends delivered every ``session_interval`` (after the first pass)."""
        return list(self._paced)

    def _classify(self) -> None:
        """Split the run's backends by whether each export costs a vendor session."""
        eager: list[str] = []
        paced: list[str] = []
        names: dict[str, str] = {}
        for raw in self.run.backends:
            spec = json.loads(json.dumps(raw))  # as the spool's run record holds it
            label = backend_label(spec)
            try:
                # The Syncer caches the adapter: the passes use this same instance.
                adapter = self._syncer._adapter(label, spec, 0)
                per_export = bool(capability(adapter, "session_per_export"))
            except Exception:  # cannot load: every pass reports why, as before
                per_export = False
            target = paced if per_export and self.session_interval > 0 else eager
            if label not in target:
                target.append(label)
            names[label] = str(spec.get("name"))
        # The Syncer's filter also matches a label against other specs' names: an eager label
        # that names a paced spec's vendor would deliver that spec every pass; pace it too.
        paced_names = {names[p] for p in paced}
        self._eager = [e for e in eager if e not in paced_names]
        self._paced = paced + [e for e in eager if e in paced_names]

    def _pass(self, labels: list[str] | None = None) -> SyncSummary | None:
        """One sync pass over ``labels`` (None: every backend of the run)."""
        try:
            # Only this thread uses the Syncer; its backend filter picks the run's own
            # specs by label (name or id), so a pass leaves the other backends' cursors.
            self._syncer.backend_filter = labels
            self.last = self._syncer.run_once()
            return self.last
        except Exception as exc:  # never into the training loop
            self.error = f"{type(exc).__name__}: {exc}"
            return None

    def _tick(self) -> None:
        if self._eager is None:
            self._classify()
        if self._paced and self._clock() - self._last_session >= self.session_interval:
            self._last_session = self._clock()
            self.paced_passes += 1
            self._pass(None)
        elif self._eager:
            self._pass(list(self._eager))

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if self._final.wait(self.interval):
                    break
                try:
                    self._tick()
                except Exception as exc:  # never into the training loop
                    self.error = f"{type(exc).__name__}: {exc}"
            # Final passes: the run is finished and flushed; drain what is left, everywhere.
            while not self._stop.is_set():
                summary = self._pass(None)
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
