"""Open Comet offline archives (``<key>-<random>.zip``) back into plain Python.

Reads Comet's own files: ``experiment.json`` (key, project, tags, times, resume strategy)
and ``messages.json`` (one JSON message per line: ``parameter_msg``, ``metric_msg``,
``log_other``, ``system_info``, ``file_upload`` whose ``file_path`` names a member of the
zip), plus the ``bridge-ledger.json`` the Comet adapter adds.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Archive", "Asset", "Point", "decode_value", "merged", "read_archive", "read_archives"]

_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def decode_value(value: Any) -> Any:
    """Comet writes NaN and ±inf metric values as strings."""
    return _SPECIAL.get(value, value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Point:
    name: str
    value: float
    step: int | None
    epoch: int | None
    timestamp: int


@dataclass(frozen=True)
class Asset:
    file_name: str
    data: bytes
    step: int | None
    upload_type: str
    metadata: dict
    grouping: str | None = None  # the model name of a model-element


@dataclass
class Archive:
    path: Path
    meta: dict
    ledger: dict | None
    types: list[str] = field(default_factory=list)  # message types, in file order
    params: dict[str, Any] = field(default_factory=dict)
    param_sources: dict[str, str] = field(default_factory=dict)
    metrics: list[Point] = field(default_factory=list)
    others: dict[str, Any] = field(default_factory=dict)
    system_info: dict[str, Any] = field(default_factory=dict)
    assets: list[Asset] = field(default_factory=list)

    @property
    def tags(self) -> list[str]:
        return list(self.meta.get("tags", []))

    @property
    def seq(self) -> int:
        return int((self.ledger or {}).get("archive_seq", -1))


def read_archive(path: Path) -> Archive:
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        meta = json.loads(zf.read("experiment.json"))
        ledger = json.loads(zf.read("bridge-ledger.json")) if "bridge-ledger.json" in names else None
        out = Archive(path=Path(path), meta=meta, ledger=ledger)
        for line in zf.read("messages.json").decode("utf-8").splitlines():
            if not line.strip():
                continue
            msg = json.loads(line)
            kind, payload = msg["type"], msg["payload"]
            out.types.append(kind)
            if kind == "parameter_msg":
                param = payload.get("param") or payload.get("params")
                out.params[param["paramName"]] = param["paramValue"]
                out.param_sources[param["paramName"]] = param.get("source", "")
            elif kind == "metric_msg":
                m = payload["metric"]
                out.metrics.append(
                    Point(m["metricName"], decode_value(m["metricValue"]), m.get("step"),
                          m.get("epoch"), payload["local_timestamp"])
                )
            elif kind == "log_other":
                out.others[payload["key"]] = payload["value"]
            elif kind == "system_info":
                out.system_info[payload["system_info"]["key"]] = payload["system_info"]["value"]
            elif kind == "file_upload":
                extra = payload.get("additional_params", {})
                out.assets.append(
                    Asset(
                        file_name=extra.get("fileName"),
                        data=zf.read(payload["file_path"]),
                        step=extra.get("step"),
                        upload_type=payload.get("upload_type"),
                        metadata=payload.get("metadata") or {},
                        grouping=extra.get("groupingName"),
                    )
                )
    return out


def read_archives(directory: Path, key: str) -> list[Archive]:
    """Every complete archive of one experiment key, in the order they were written."""
    found = [read_archive(p) for p in sorted(Path(directory).glob(f"{key}-*.zip"))]
    return sorted(found, key=lambda a: a.seq)


def merged(archives: list[Archive]) -> Archive:
    """What Comet holds after uploading the archives in order (last value wins)."""
    out = Archive(path=Path("."), meta={"tags": []}, ledger=None)
    for a in archives:
        out.types += a.types
        out.params.update(a.params)
        out.param_sources.update(a.param_sources)
        out.metrics += a.metrics
        out.others.update(a.others)
        out.system_info.update(a.system_info)
        out.assets += a.assets
        out.meta["tags"] = sorted(set(out.meta["tags"]) | set(a.tags))
    return out
