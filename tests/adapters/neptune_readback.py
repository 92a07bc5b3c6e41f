"""Read Neptune's offline operation logs back into plain Python, with Neptune's own decoder.

An offline run directory is ``<.neptune>/offline/run__<uuid>__<pid>__<key>/`` holding
``data-<N>.log`` files of JSON lines ``{"obj": <operation>, "version": n, "at": t}``;
``neptune.internal.operation.Operation.from_dict`` turns each ``obj`` back into an
operation. Replaying the operations gives what ``neptune sync`` would send for that run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OfflineRun", "Point", "read_offline_runs", "runs_for"]


@dataclass(frozen=True)
class Point:
    step: float | None
    value: Any
    ts: float


@dataclass
class OfflineRun:
    """The replayed content of one offline run directory."""

    path: Path
    fields: dict[str, Any] = field(default_factory=dict)  # atoms: "a/b" -> value
    series: dict[str, list[Point]] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    files: dict[str, bytes] = field(default_factory=dict)  # "a/b" -> bytes at sync time
    file_ext: dict[str, str] = field(default_factory=dict)
    file_sources: dict[str, str] = field(default_factory=dict)  # "a/b" -> path in the op log
    op_types: list[str] = field(default_factory=list)

    def namespace(self, prefix: str) -> dict[str, Any]:
        """Atoms under ``prefix/`` as a nested dict (how Neptune shows a namespace)."""
        out: dict[str, Any] = {}
        for key, value in self.fields.items():
            if not key.startswith(prefix + "/"):
                continue
            node = out
            parts = key[len(prefix) + 1 :].split("/")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        return out


def _ops(run_dir: Path) -> list[Any]:
    from neptune.internal.operation import Operation

    logs = sorted(run_dir.glob("data-*.log"), key=lambda p: int(p.stem.split("-")[-1]))
    ops = []
    for log in logs:
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                ops.append(Operation.from_dict(json.loads(line)["obj"]))
    return ops


def read_run(run_dir: Path) -> OfflineRun:
    run = OfflineRun(path=run_dir)
    for op in _ops(run_dir):
        kind, path = type(op).__name__, "/".join(op.path)
        run.op_types.append(kind)
        if kind == "AssignDatetime":
            run.fields[path] = op.value
        elif kind.startswith("Assign"):
            run.fields[path] = op.value
        elif kind in ("LogFloats", "LogStrings"):
            run.series.setdefault(path, []).extend(Point(v.step, v.value, v.ts) for v in op.values)
        elif kind == "AddStrings" and path == "sys/tags":
            run.tags.update(op.values)
        elif kind == "RemoveStrings" and path == "sys/tags":
            run.tags.difference_update(op.values)
        elif kind == "DeleteAttribute":
            run.fields.pop(path, None)
            run.files.pop(path, None)
        elif kind == "UploadFile":
            src = Path(op.file_path) if op.file_path else run_dir / "upload_path" / op.tmp_file_name
            run.files[path] = src.read_bytes()
            run.file_ext[path] = op.ext
            run.file_sources[path] = str(src)
    return run


def read_offline_runs(neptune_dir: Path) -> list[OfflineRun]:
    """Every offline run directory under a ``.neptune`` folder, oldest first."""
    offline = Path(neptune_dir) / "offline"
    if not offline.is_dir():
        return []
    dirs = sorted(offline.iterdir(), key=lambda d: json.loads((d / "metadata.json").read_text())["createdAt"])
    return [read_run(d) for d in dirs]


def runs_for(neptune_dir: Path, run_id: str) -> list[OfflineRun]:
    """The offline directories that carry ``bridge/run_id == run_id``."""
    return [r for r in read_offline_runs(neptune_dir) if r.fields.get("bridge/run_id") == run_id]


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
