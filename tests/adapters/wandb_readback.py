"""Read what the W&B adapter wrote offline back into plain Python, from W&B's own files.

A bridge run becomes several offline fragments of one W&B run id (one per confirmed
batch); ``wandb sync --append`` uploads them in order. This merges them the same way:
history rows concatenated, config/tags/summary/exit code from the last fragment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.adapters.wandb.log import RunLog, read_run
from bridge.adapters.wandb.names import RESERVED_KEYS

__all__ = ["ReadBack", "fragments", "read_back"]


@dataclass
class ReadBack:
    run_id: str
    fragments: list[RunLog]
    name: str | None = None
    notes: str | None = None
    group: str | None = None
    project: str | None = None
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # path -> bytes, last one wins
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    def points(self, key: str) -> list[tuple[int, float, Any]]:
        """(bridge/step, _timestamp, value) of one series, in row order."""
        return [
            (row["bridge/step"], row["_timestamp"], row[key])
            for row in self.history
            if key in row
        ]


def fragments(out_dir: str | Path, run_id: str) -> list[Path]:
    """The adapter's complete fragment dirs for ``run_id``, oldest first."""
    from bridge.adapters.wandb.log import find_run_logs

    return [p.parent for p in find_run_logs(Path(out_dir) / "wandb", run_id)]


def read_back(out_dir: str | Path, run_id: str) -> ReadBack:
    """Merge every offline fragment of ``run_id`` under the adapter's ``dir``."""
    logs = [read_run(d) for d in fragments(out_dir, run_id)]
    out = ReadBack(run_id=run_id, fragments=logs)
    for log in logs:
        out.name, out.notes, out.group = log.name, log.notes, log.group
        out.project, out.tags = log.project, list(log.tags)
        out.config = log.config
        out.history.extend(
            {k: v for k, v in row.items() if k not in ("_step", "_runtime")}
            for row in log.history
        )
        out.summary = {k: v for k, v in log.summary.items() if k not in RESERVED_KEYS}
        out.exit_code = log.exit_code
        files_dir = log.path.parent / "files"
        for rel in log.files:
            out.files[rel] = (files_dir / rel).read_bytes()
        out.artifacts.extend(log.artifacts)
    return out
