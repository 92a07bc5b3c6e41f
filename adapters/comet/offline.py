"""Read Comet offline archives (``<key>-<random>.zip``) without comet_ml.

An archive holds ``experiment.json`` (``offline_id`` = the experiment key, project,
workspace, tags, ``start_time``/``stop_time`` in ms), ``messages.json`` (one JSON message
per line: ``parameter_msg``, ``metric_msg``, ``log_other``, ``system_info``,
``file_upload`` whose ``file_path`` names a zip member, …) and the members those uploads
name. Archives bridge's Comet adapter wrote also carry its ledger (``names.LEDGER_NAME``:
the bridge run id, the archive's write order). Messages are streamed, never loaded whole.

Member names come from a possibly hostile archive: they are only ever read from the zip,
never used as a path on disk (:func:`copy_member` writes to a name the caller chooses).
"""

from __future__ import annotations

import io
import json
import math
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from bridge.adapters.comet import names as N

__all__ = ["ArchiveHead", "copy_member", "decode_value", "find_archives", "iter_messages",
           "read_head"]

_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def decode_value(value: Any) -> Any:
    """Comet writes NaN and ±inf metric values as strings."""
    return _SPECIAL.get(value, value) if isinstance(value, str) else value


@dataclass(frozen=True)
class ArchiveHead:
    path: Path
    key: str
    meta: dict[str, Any]
    ledger: dict[str, Any] | None
    mtime: float

    @property
    def order(self) -> tuple[float, float, float, str]:
        """Write order: bridge's ``archive_seq``, else the experiment start, else mtime."""
        seq = float((self.ledger or {}).get(N.LEDGER_ARCHIVE_SEQ, -1))
        return (seq, float(self.meta.get("start_time") or 0), self.mtime, self.path.name)


def find_archives(location: Path) -> list[Path]:
    """A zip file, or the ``*.zip`` files of a directory (``.incomplete`` ones excluded)."""
    location = Path(location)
    if location.is_file():
        return [location]
    return sorted(p for p in location.glob(f"*{N.ARCHIVE_SUFFIX}") if p.is_file())


def read_head(path: Path) -> ArchiveHead:
    """The archive's ``experiment.json`` and ledger; raises ``BadZipFile`` or
    ``ValueError`` for an unfinished or foreign zip."""
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if N.EXPERIMENT_JSON not in names or N.MESSAGES_JSON not in names:
            raise zipfile.BadZipFile(f"{path.name}: no experiment.json/messages.json")
        meta = json.loads(zf.read(N.EXPERIMENT_JSON))
        ledger = json.loads(zf.read(N.LEDGER_NAME)) if N.LEDGER_NAME in names else None
    key = (ledger or {}).get(N.LEDGER_KEY) or meta.get("offline_id") or meta.get("experiment_key")
    if not key:
        raise ValueError(f"{path.name}: experiment.json names no experiment key")
    return ArchiveHead(Path(path), str(key), meta, ledger, Path(path).stat().st_mtime)


def iter_messages(zf: zipfile.ZipFile, only: str | None = None) -> Iterator[dict[str, Any]]:
    """The archive's messages in file order; undecodable lines are skipped. ``only``: a
    message type; lines that do not even contain it are not decoded (a run's description
    needs its few ``log_other`` messages, not its million metrics)."""
    with zf.open(N.MESSAGES_JSON) as raw:
        for line in io.TextIOWrapper(raw, encoding="utf-8"):
            if not line.strip() or (only is not None and only not in line):
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and isinstance(msg.get("payload"), dict):
                yield msg


def copy_member(zf: zipfile.ZipFile, member: str, target: Path) -> bool:
    """Copy one zip member's bytes to ``target``; False when the archive lacks it."""
    try:
        info = zf.getinfo(member)
    except KeyError:
        return False
    with zf.open(info) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return True
