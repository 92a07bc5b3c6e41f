"""Artifacts logged by reference (``log_artifact(copy=False)``), checked before each export.

A file still holding the logged bytes is handed to the adapter through
``RunInfo.references`` (``RunInfo.blob_path`` then returns the user's file); one that changed
or vanished makes its event a dead letter with that reason, so a backend never receives
different bytes under the logged sha256. The rest of the batch goes on.
"""

from __future__ import annotations

from typing import Any, MutableMapping, Sequence

from bridge.adapters.base import Event
from bridge.spool.artifacts import check_reference

__all__ = ["check_references"]


def check_references(batch: Sequence[Event],
                     references: MutableMapping[str, Any]) -> dict[tuple[str, int], str]:
    """Dead-letter reasons for the batch's by-reference artifacts that no longer match;
    fills ``references`` (sha256 -> path) with those that do."""
    refused: dict[tuple[str, int], str] = {}
    for ev in batch:
        if ev.kind != "artifact" or not isinstance(ev.payload, dict):
            continue
        files = [f for f in ev.payload.get("files") or () if isinstance(f, dict) and f.get("ref")]
        for f in files:
            problem = check_reference(f)
            if problem is not None:
                refused[ev.uid] = problem
                break
            references[f["sha256"]] = f["ref"]["path"]
    return refused
