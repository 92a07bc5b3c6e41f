"""What one W&B session writes: a batch and the run's carried state as rows, config, files.

Kept apart from the adapter, which only talks to the SDK: the plan is plain data, so the
adapter's translation can be tested without wandb.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

from bridge.adapters.wandb import names
from bridge.adapters.wandb.names import STEP_KEY

__all__ = ["SessionPlan", "points", "value_id"]


class SessionPlan:
    """What one W&B session will write, built from a batch and the carried state."""

    def __init__(self) -> None:
        self.initialized = False
        self.tags: list[str] = []
        self.config: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        self.auto_step: dict[str, int] = {}
        self.last: dict[str, float] = {}  # latest value per metric, for W&B's summary
        self.notes: str | None = None
        self.rows: list[dict[str, Any]] = []
        self.files: dict[str, str] = {}
        self.events: list[dict[str, Any]] = []
        self.events_name = ""
        self.artifacts: list[dict[str, Any]] = []
        self.media_failed: dict[tuple[str, int], str] = {}  # uid -> why W&B refused it
        # file/tensor media as run files: (path in the run, blob path or bytes)
        self.media_files: list[tuple[str, Any]] = []
        self._row_key: tuple[int, int] | None = None

    @classmethod
    def from_state(cls, state: dict) -> "SessionPlan":
        plan = cls()
        plan.load(state)
        return plan

    def load(self, state: dict) -> None:
        """Every session carries the whole run's config, tags and summary: an offline
        fragment cannot read the server, and the last uploaded one wins."""
        self.initialized = True
        self.tags = list(state.get("tags", []))
        self.config = json.loads(json.dumps(state.get("config", {})))
        self.summary = dict(state.get("summary", {}))
        self.auto_step = dict(state.get("auto_step", {}))
        self.notes = state.get("notes")
        self.last = dict(state.get("last", {}))

    def adds_nothing_to(self, state: dict) -> bool:
        """True when this session would only repeat what W&B already has."""
        return not (self.rows or self.files or self.events or self.artifacts
                    or self.media_files) and (
            self.tags == list(state.get("tags", []))
            and self.config == state.get("config", {})
            and self.summary == state.get("summary", {})
            and self.notes == state.get("notes")
        )

    def _row(self, key: str, step: int, ts_ms: int) -> dict[str, Any]:
        # One row per (step, time): the values of one log() call share a row; a key
        # seen twice (another DDP rank, a repeat) starts a new row, nothing is merged.
        row = self.rows[-1] if self.rows else None
        if row is None or self._row_key != (step, ts_ms) or key in row:
            row = names.history_row(step, ts_ms)
            self.rows.append(row)
            self._row_key = (step, ts_ms)
        return row

    def add_metric(self, key: str, step: int, ts_ms: int, value: float | None) -> None:
        row = self._row(key, step, ts_ms)
        value = float("nan") if value is None else float(value)
        row[key] = value
        if math.isfinite(value):
            self.last[key] = value

    def add_media(self, key: str, step: int, ts_ms: int, value: Any) -> None:
        """A media value (:class:`~bridge.adapters.wandb.media_out.MediaValue`) in the row
        of its step and time, beside the metrics of the same ``log`` call."""
        self._row(key, step, ts_ms)[key] = value


def value_id(value: float | None) -> str:
    return repr(float("nan") if value is None else float(value))


def points(row: dict[str, Any]) -> Iterable[tuple[str, int, int, str]]:
    """The points of a history row W&B holds: metric values and media (strings, media
    descriptors), each as (key, step, time, identity) to recognise a replayed batch."""
    from bridge.adapters.wandb.media_out import media_value_id

    step, ts_ms = row.get(STEP_KEY), names.row_ts_ms(row)
    if step is None or ts_ms is None:
        return []
    out = []
    for k, v in row.items():
        if k.startswith("_") or k == STEP_KEY:
            continue
        ident = value_id(v) if isinstance(v, (int, float)) else media_value_id(v)
        if ident is not None:
            out.append((k, int(step), ts_ms, ident))
    return out
