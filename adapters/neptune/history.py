"""What earlier offline sessions of a bridge run already wrote, so a replay adds nothing twice.

The adapter reads Neptune's offline operation logs back when it opens a run: a sync killed
after the client wrote a batch but before the agent moved its cursor resends that batch,
and every point, value, upload and tag found here is recognised as already delivered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.adapters.neptune import names as N
from bridge.adapters.neptune.names import field as _path
from bridge.adapters.neptune.offline import iter_ops

__all__ = ["OpLogHistory", "read_history"]


@dataclass
class OpLogHistory:
    """What earlier sessions of one bridge run left in Neptune's offline operation logs."""

    points: dict[str, dict[int, Any]] = field(default_factory=dict)  # series -> step -> value
    stamps: dict[str, list[tuple[int, Any, int]]] = field(default_factory=dict)  # (ts_ms, v, step)
    fields: dict[str, tuple[str, Any]] = field(default_factory=dict)  # path -> fingerprint
    tags: set[str] = field(default_factory=set)
    dirs: list[Path] = field(default_factory=list)


def _belongs_to(run_dir: Path, run_id: str, scan: int = 200) -> bool:
    for i, op in enumerate(iter_ops(run_dir)):
        if op.get("path") == N.RUN_ID.split("/") and op.get("value") == run_id:
            return True
        if i >= scan:
            return False
    return False


def read_history(neptune_dir: Path, run_id: str) -> OpLogHistory:
    """Collect every series point, atom value, upload and tag that offline sessions of
    ``run_id`` wrote (directories not yet removed by ``neptune sync``)."""
    history = OpLogHistory()
    offline = neptune_dir / N.OFFLINE_DIR
    if not offline.is_dir():
        return history
    dirs = [d for d in offline.glob(N.RUN_DIR_GLOB) if d.is_dir() and _belongs_to(d, run_id)]
    dirs.sort(key=lambda d: (d / "metadata.json").stat().st_mtime if (d / "metadata.json").exists() else 0)
    for run_dir in dirs:
        history.dirs.append(run_dir)
        for op in iter_ops(run_dir):
            _apply(history, run_dir, op)
    return history


def _apply(history: OpLogHistory, run_dir: Path, op: dict[str, Any]) -> None:
    kind, path = op.get("type", ""), _path(*op.get("path", []))
    if kind in ("LogFloats", "LogStrings"):
        series = history.points.setdefault(path, {})
        stamps = history.stamps.setdefault(path, [])
        for point in op.get("values", []):
            step = int(point["step"])
            series[step] = point["value"]
            stamps.append((round(point["ts"] * 1000), point["value"], step))
    elif kind == "LogImages":  # a FileSeries value is known by the sha256 of its bytes
        series = history.points.setdefault(path, {})
        stamps = history.stamps.setdefault(path, [])
        for point in op.get("values", []):
            value = point.get("value")
            data = value.get("data") if isinstance(value, dict) else value
            try:
                digest = hashlib.sha256(base64.b64decode(data or "")).hexdigest()
            except (binascii.Error, ValueError, TypeError):
                continue
            step = int(point["step"])
            series[step] = digest
            stamps.append((round(point["ts"] * 1000), digest, step))
    elif kind.startswith("Assign"):
        history.fields[path] = (kind[len("Assign"):], op.get("value"))
    elif kind == "UploadFile":
        if op.get("file_path"):
            history.fields[path] = ("file", op["file_path"])
        elif op.get("tmp_file_name"):
            tmp = run_dir / "upload_path" / op["tmp_file_name"]
            if tmp.exists():
                history.fields[path] = ("content", hashlib.sha256(tmp.read_bytes()).hexdigest())
    elif kind == "DeleteAttribute":
        history.fields.pop(path, None)
    elif kind == "AddStrings" and path == N.SYS_TAGS:
        history.tags.update(op.get("values", []))
    elif kind == "RemoveStrings" and path == N.SYS_TAGS:
        history.tags.difference_update(op.get("values", []))
