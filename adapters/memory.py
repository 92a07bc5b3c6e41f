"""An adapter that keeps what it is given in memory: the agent's tests use it.

Faults can be injected per call (``fail_next``) so the agent's retry, pause and
dead-letter paths are tested at a boundary bridge owns.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar, Sequence

from bridge.adapters.base import BaseAdapter, Event, ExportResult, Limits, RunInfo

__all__ = ["ExportResult", "MemoryAdapter", "STORE"]


# Shared by every instance in the process, so a test can read what a sync delivered.
STORE: dict[str, dict[str, Any]] = defaultdict(dict)


class MemoryAdapter(BaseAdapter):
    """Records runs and events per ``options["store"]`` (default ``"default"``)."""

    name: ClassVar[str] = "memory"
    limits: ClassVar[Limits] = Limits(max_events=500)

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.store = STORE[options.get("store", "default")]
        self.store.setdefault("runs", {})
        self.store.setdefault("events", defaultdict(list))
        self.store.setdefault("faults", [])  # ExportResult objects returned before accepting
        self.store.setdefault("reject", {})  # (kind, key) -> reason, refused for good
        self.store.setdefault("calls", [])

    def open_run(self, run: RunInfo) -> str:
        self.store["calls"].append(("open_run", run.run_id))
        self.store["runs"].setdefault(run.run_id, {"status": "RUNNING", "info": run})
        return f"mem-{run.run_id}"

    def export(self, run: RunInfo, batch: Sequence[Event]) -> ExportResult:
        self.store["calls"].append(("export", run.run_id, len(batch)))
        if self.store["faults"]:
            return self.store["faults"].pop(0)
        rejected = {}
        for ev in batch:
            reason = self.store["reject"].get((ev.kind, ev.key))
            if reason:
                rejected[ev.uid] = reason
            else:
                self.store["events"][run.run_id].append(ev)
        return ExportResult.success(rejected)

    def close_run(self, run: RunInfo, status: str, end_time_ms: int) -> None:
        self.store["calls"].append(("close_run", run.run_id, status))
        self.store["runs"].setdefault(run.run_id, {})
        self.store["runs"][run.run_id].update(status=status, end_ms=end_time_ms)

    def shutdown(self) -> None:
        self.store["calls"].append(("shutdown",))
