"""Neptune's rule for one series (steps strictly increase), shared by the adapter's metric
and media delivery: what was delivered, what a replay repeats, what Neptune would refuse."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Series"]


@dataclass
class Series:
    """Neptune's rule for one series: steps strictly increase. ``seen`` holds points that
    were delivered but may not be covered by the saved state (replay detection)."""

    last_step: int | None = None
    last_value: Any = None
    last_ts: int | None = None
    seen: dict[int, Any] = field(default_factory=dict)
    stamps: list[tuple[int, Any, int]] = field(default_factory=list)

    def to_state(self) -> list[Any]:
        return [self.last_step, self.last_value, self.last_ts]

    def classify(self, name: str, step: int | None, value: Any, ts_ms: int) -> tuple[str, Any]:
        """Return ("new", step), ("dup", step) or ("reject", reason); updates on "new"."""
        if step is None:  # a point logged without a step: Neptune's next step, made explicit
            for i, (ts, v, s) in enumerate(self.stamps):
                if ts == ts_ms and v == value:
                    del self.stamps[i]
                    return ("dup", s)
            step = 0 if self.last_step is None else self.last_step + 1
        if step in self.seen and self.seen[step] == value:
            if self.last_step is None or step > self.last_step:
                self.last_step, self.last_value, self.last_ts = step, value, ts_ms
            return ("dup", step)
        if self.last_step is not None and step <= self.last_step:
            if step == self.last_step and value == self.last_value:
                return ("dup", step)
            if step == self.last_step:
                return ("reject", f"Neptune keeps one value per step: step {step} of {name!r} "
                        f"was already delivered with value {self.last_value!r}")
            return ("reject", f"Neptune requires strictly increasing steps per series: step "
                    f"{step} of {name!r} is below the last delivered step {self.last_step}")
        self.last_step, self.last_value, self.last_ts = step, value, ts_ms
        return ("new", step)


# --------------------------------------------------------------------------- sessions
