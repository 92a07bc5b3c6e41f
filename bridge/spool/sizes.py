"""Bytes on disk: per run (its events' share of its files, its blobs) and for the spool.

A run alone in its files (one run per writer process, the common case) is charged the whole
files; runs sharing a file share its bytes in proportion to their events. A blob is counted
once per run that references it, so blobs shared by runs appear under each of them; the
spool total counts each blob once.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from bridge.spool.blobs import blob_path
from bridge.spool.prune import FileRuns, scan_files

__all__ = ["DiskUsage", "RunSize", "disk_usage", "human_bytes", "run_sizes", "space_warnings"]


@dataclass(frozen=True)
class RunSize:
    events: int  # bytes of the run's share of its spool files
    blobs: int  # bytes of the blobs its events reference

    @property
    def total(self) -> int:
        return self.events + self.blobs


def run_sizes(spool_dir: Path, files: list[FileRuns] | None = None) -> dict[str, RunSize]:
    """Each run's bytes on disk, from one scan of the writer files."""
    files = files if files is not None else scan_files(spool_dir)
    events: dict[str, int] = {}
    refs: dict[str, set[str]] = {}
    for fr in files:
        total = sum(fr.events.values())
        for run_id in fr.runs:
            share = fr.bytes if total == 0 or len(fr.runs) == 1 else (
                fr.bytes * fr.events.get(run_id, 0) // total)
            events[run_id] = events.get(run_id, 0) + share
        for run_id, shas in fr.refs.items():
            refs.setdefault(run_id, set()).update(shas)
    sizes: dict[str, int] = {}
    out = {}
    for run_id in events:
        blob_total = 0
        for sha in refs.get(run_id, ()):
            if sha not in sizes:
                try:
                    sizes[sha] = blob_path(spool_dir, sha).lstat().st_size
                except OSError:
                    sizes[sha] = 0
            blob_total += sizes[sha]
        out[run_id] = RunSize(events[run_id], blob_total)
    return out


@dataclass(frozen=True)
class DiskUsage:
    spool_bytes: int  # everything under the spool directory
    blob_bytes: int
    fs_total: int  # the filesystem holding the spool
    fs_free: int  # bytes available to this user
    other_bytes: int = 0  # not writer files, blobs or state.db: e.g. W&B offline output


def _tree_bytes(root: Path) -> int:
    total = 0
    if root.is_dir():
        for p in root.rglob("*"):
            try:
                if p.is_file() and not p.is_symlink():
                    total += p.stat().st_size
            except OSError:
                pass
    return total


def disk_usage(spool_dir: Path) -> DiskUsage:
    """The spool's own bytes and the free space of its filesystem."""
    spool_dir = Path(spool_dir)
    where = spool_dir if spool_dir.exists() else spool_dir.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    fs = shutil.disk_usage(where)
    blobs = _tree_bytes(spool_dir / "blobs")
    files = _tree_bytes(spool_dir / "spool")
    state = sum(p.stat().st_size for p in [*spool_dir.glob("state.db*"),
                                            *spool_dir.glob("state-shard-*.db*")] if p.is_file())
    total = _tree_bytes(spool_dir)
    return DiskUsage(total, blobs, fs.total, fs.free, max(0, total - files - blobs - state))


def human_bytes(n: int) -> str:
    """``1.2 GB``: decimal units, as `df -H` and file managers show them."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


# `bridge doctor` warns below this share of the filesystem free, or below this many bytes.
FREE_SHARE_WARN = 0.10
FREE_BYTES_WARN = 2_000_000_000
# ... and when the spool passes this share of a configured quota.
QUOTA_SHARE_WARN = 0.80


def space_warnings(usage: DiskUsage, quota_bytes: int = 0) -> list[str]:
    """What is about to fill: the spool's filesystem, or the spool's quota (empty when fine)."""
    out = []
    if usage.fs_total and (usage.fs_free < usage.fs_total * FREE_SHARE_WARN
                           or usage.fs_free < FREE_BYTES_WARN):
        out.append(f"the spool's filesystem is nearly full: {human_bytes(usage.fs_free)} free "
                   f"of {human_bytes(usage.fs_total)}")
    if quota_bytes and usage.spool_bytes >= quota_bytes * QUOTA_SHARE_WARN:
        out.append(f"the spool uses {human_bytes(usage.spool_bytes)} of its "
                   f"{human_bytes(quota_bytes)} quota (quota_gb)")
    return out
