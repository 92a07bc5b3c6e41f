"""Read Neptune 1.x offline operation logs without the Neptune client.

An offline run directory is ``<.neptune>/offline/run__<uuid>__<pid>__<key>/`` with
``metadata.json`` (``createdAt``) and ``data-<N>.log`` files of JSON lines
``{"obj": <operation>, "version": n, "at": t}``; an operation is what
``neptune.internal.operation.Operation.to_dict`` wrote (``type``, ``path`` and the
operation's fields). Replaying them in order gives what ``neptune sync`` would send.

Reading is two-pass so memory stays bounded: :func:`scan` replays every operation
except series points (atoms, tags, uploads; a series only contributes its step
precision), and :func:`series_points` streams the points afterwards.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bridge.adapters.neptune import names as N

__all__ = [
    "ImagePoint",
    "OfflineRun",
    "SeriesPoint",
    "bridge_run_id_of",
    "find_run_dirs",
    "image_points",
    "iter_ops",
    "scan",
    "series_points",
]


def bridge_run_id_of(run_dir: Path, scan_ops: int = 500) -> str | None:
    """The run id bridge's adapter writes (``names.RUN_ID``) at the start of every session."""
    for i, op in enumerate(iter_ops(run_dir)):
        if op.get("path") == N.RUN_ID.split("/") and isinstance(op.get("value"), str):
            return str(op["value"])
        if i >= scan_ops:
            break
    return None


@dataclass(frozen=True)
class SeriesPoint:
    path: str
    kind: str  # "float" or "string"
    step: float | None
    value: Any
    ts_ms: int


@dataclass(frozen=True)
class ImagePoint:
    """One value of a ``FileSeries`` (a ``LogImages`` operation): the image's bytes as the
    client stored them (empty when it refused an image over its size limit)."""

    path: str
    step: float | None
    ts_ms: int
    data: bytes | None  # None: the op log's base64 did not decode
    name: str | None
    description: str | None


@dataclass
class Upload:
    """A file field: the local file ``neptune sync`` would upload, or inline content."""

    path: str
    ext: str | None
    local: Path | None = None
    content: bytes | None = None


@dataclass
class OfflineRun:
    """Everything but series points of one or several offline dirs of one run."""

    dirs: list[Path]
    created_ms: int = 0
    fields: dict[str, tuple[str, Any]] = field(default_factory=dict)  # path -> (type, value)
    tags: list[str] = field(default_factory=list)
    uploads: dict[str, Upload] = field(default_factory=dict)
    series_types: dict[str, str] = field(default_factory=dict)  # path -> float|string
    step_places: int = 0  # decimal places the most precise series step needs
    last_ts_ms: int = 0

    def value(self, path: str, default: Any = None) -> Any:
        item = self.fields.get(path)
        return default if item is None else item[1]


def find_run_dirs(location: Path) -> list[Path]:
    """Offline run dirs under a data dir, a ``.neptune`` dir, its ``offline`` dir, or one
    run dir; oldest (``metadata.json`` ``createdAt``) first."""
    location = Path(location)
    if any(location.glob(N.OP_LOG_GLOB)):
        return [location]
    for base in (location / N.DATA_DIR_NAME / N.OFFLINE_DIR, location / N.OFFLINE_DIR, location):
        if base.is_dir():
            dirs = [d for d in base.iterdir() if d.is_dir() and any(d.glob(N.OP_LOG_GLOB))]
            if dirs:
                return sorted(dirs, key=lambda d: (_created_ms(d), d.name))
    return []


def _created_ms(run_dir: Path) -> int:
    from datetime import datetime

    try:
        meta = json.loads((run_dir / "metadata.json").read_text(encoding="utf-8"))
        return int(datetime.fromisoformat(str(meta["createdAt"]).replace("Z", "+00:00"))
                   .timestamp() * 1000)
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def iter_ops(run_dir: Path) -> Iterator[dict[str, Any]]:
    """Operations in version order; a torn last line (a killed writer) is skipped."""
    logs = sorted(run_dir.glob(N.OP_LOG_GLOB), key=lambda p: int(p.stem.split("-")[-1]))
    for log in logs:
        with log.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    op = json.loads(line)["obj"]
                except (ValueError, KeyError, TypeError):
                    continue
                if isinstance(op, dict):
                    yield op


def _path(op: dict[str, Any]) -> str:
    return "/".join(str(p) for p in op.get("path") or [])


def scan(dirs: list[Path]) -> OfflineRun:
    """Replay the non-series operations of ``dirs`` (one run, oldest dir first)."""
    run = OfflineRun(dirs=list(dirs), created_ms=min((_created_ms(d) for d in dirs), default=0))
    tags: dict[str, None] = {}
    for run_dir in dirs:
        for op in iter_ops(run_dir):
            kind, path = str(op.get("type", "")), _path(op)
            if kind in ("LogFloats", "LogStrings", "LogImages"):
                run.series_types.setdefault(path, {"LogFloats": "float", "LogStrings": "string",
                                                   "LogImages": "image"}[kind])
                for point in op.get("values") or []:
                    step = point.get("step")
                    if step is not None:
                        run.step_places = max(run.step_places, N.decimal_places(step))
                    run.last_ts_ms = max(run.last_ts_ms, int(round(float(point.get("ts") or 0) * 1000)))
            elif kind.startswith("Assign") and kind != "AssignArtifact":
                run.fields[path] = (kind[len("Assign"):].lower(), op.get("value"))
            elif kind == "UploadFile":
                local = None
                if op.get("file_path"):
                    local = Path(op["file_path"])
                elif op.get("tmp_file_name"):
                    local = run_dir / "upload_path" / str(op["tmp_file_name"])
                run.uploads[path] = Upload(path, op.get("ext"), local=local)
            elif kind == "UploadFileContent":
                data = base64.b64decode(op.get("file_content") or "")
                run.uploads[path] = Upload(path, op.get("ext"), content=data)
            elif kind == "AddStrings" and path == N.SYS_TAGS:
                tags.update(dict.fromkeys(op.get("values") or []))
            elif kind == "RemoveStrings" and path == N.SYS_TAGS:
                for v in op.get("values") or []:
                    tags.pop(v, None)
            elif kind == "ClearStringSet" and path == N.SYS_TAGS:
                tags.clear()
            elif kind == "DeleteAttribute":
                run.fields.pop(path, None)
                run.uploads.pop(path, None)
                run.series_types.pop(path, None)
            elif kind == "ClearImageLog":
                run.series_types.pop(path, None)
    run.tags = list(tags)
    return run


def series_points(dirs: list[Path]) -> Iterator[SeriesPoint]:
    """Stream every series point of ``dirs`` in log order."""
    for run_dir in dirs:
        for op in iter_ops(run_dir):
            kind = op.get("type")
            if kind not in ("LogFloats", "LogStrings"):
                continue
            path = _path(op)
            which = "float" if kind == "LogFloats" else "string"
            for point in op.get("values") or []:
                step = point.get("step")
                yield SeriesPoint(path, which, None if step is None else float(step),
                                  point.get("value"), int(round(float(point.get("ts") or 0) * 1000)))


def image_points(dirs: list[Path]) -> Iterator[ImagePoint]:
    """Stream every ``FileSeries`` value of ``dirs`` in log order, decoded one at a time."""
    for run_dir in dirs:
        for op in iter_ops(run_dir):
            if op.get("type") != "LogImages":
                continue
            path = _path(op)
            for point in op.get("values") or []:
                value = point.get("value")
                if isinstance(value, dict):
                    raw, name, description = value.get("data"), value.get("name"), value.get("description")
                else:  # an older client wrote the base64 text alone
                    raw, name, description = value, None, None
                try:
                    data: bytes | None = base64.b64decode(raw or "", validate=True)
                except (ValueError, TypeError):
                    data = None
                step = point.get("step")
                yield ImagePoint(path, None if step is None else float(step),
                                 int(round(float(point.get("ts") or 0) * 1000)), data,
                                 name if isinstance(name, str) else None,
                                 description if isinstance(description, str) else None)
