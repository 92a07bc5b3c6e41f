"""Artifact files off the caller's thread: what the call records, what the writer stores, and
the check at sync time that a file recorded by reference is still the one that was logged.

``log_artifact`` only lists the files and their ``stat`` (size, mtime) on the caller's thread
(:func:`snapshot`); the writer's artifact thread hashes them and, in copy mode, copies them
into the blob store (:func:`store`); the artifact event is committed only once its blobs are
durable. In reference mode (``copy=False``) nothing is copied: each file entry carries
``"ref": {"path", "size", "mtime_ns"}`` beside its sha256, and :func:`check_reference`
refuses, at sync time, a file that vanished or whose bytes changed — never a silent upload of
different bytes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from bridge.spool import blobs
from bridge.spool.events import artifact_payload

__all__ = ["ArtifactJob", "FileStat", "STAGED_PREFIX", "check_reference", "discard", "snapshot",
           "stage", "stale_staged", "store"]

STAGED_PREFIX = ".staged-"  # blobs/.staged-<pid>-<random>: a link taken at the call
STAGED_ORPHAN_SECONDS = 86_400  # a link without a pid in its name: stale after a day

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileStat:
    rel: str  # the path inside the artifact
    path: str  # absolute path of the source file
    size: int
    mtime_ns: int
    staged: str | None = None  # a hard link in the blob store, taken at the call (see stage)


@dataclass
class ArtifactJob:
    """One ``log_artifact`` call waiting for the writer's artifact thread."""

    run_id: str
    name: str
    type: str
    is_dir: bool
    source: str
    files: list[FileStat]
    copy: bool
    ts_ms: int
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Told of a problem found off the caller's thread (the run warns and counts it).
    on_problem: Callable[[str], None] | None = None

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files)


def snapshot(src: Path) -> tuple[bool, list[FileStat]]:
    """The files of a file or directory with their size and mtime (stat only: no reading)."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{str(src)!r} does not exist")
    if src.is_dir():
        entries = sorted(p for p in src.rglob("*") if p.is_file())
        pairs = [(p.relative_to(src).as_posix(), p) for p in entries]
    else:
        pairs = [(src.name, src)]
    out = []
    for rel, p in pairs:
        st = p.stat()
        out.append(FileStat(rel, str(p.resolve()), st.st_size, st.st_mtime_ns))
    return src.is_dir(), out


def stage(files: list[FileStat], spool_dir: Path) -> list[FileStat]:
    """Hard-link each file into ``blobs/`` at the call (microseconds, no bytes copied), so a
    file deleted or replaced right after ``log_artifact`` returns (a temporary directory, a
    checkpoint rotated by rename) is still copied as it was. Where a link cannot be made (another
    filesystem, a filesystem without links) the file is copied from its own path later."""
    store = blobs._Store(spool_dir)
    try:
        out = []
        for f in files:
            name = f"{STAGED_PREFIX}{os.getpid()}-{os.urandom(8).hex()}"
            try:
                os.link(f.path, name, dst_dir_fd=store.fd)
            except OSError:
                out.append(f)
                continue
            out.append(replace(f, staged=str(store.root / name)))
        return out
    finally:
        store.close()


def stale_staged(spool_dir: Path) -> list[tuple[Path, int]]:
    """Staged links whose process is gone (killed between ``log_artifact`` and its copy), with
    the bytes removing each frees (0 while the user's own file still links the same data)."""
    root = Path(spool_dir) / "blobs"
    out: list[tuple[Path, int]] = []
    try:
        entries = [p for p in root.iterdir() if p.name.startswith(STAGED_PREFIX)]
    except OSError:
        return out
    import time

    for p in entries:
        try:
            st = p.lstat()
        except OSError:
            continue
        pid_text = p.name[len(STAGED_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and "-" in p.name[len(STAGED_PREFIX):]:
            if not _gone(int(pid_text)):
                continue
        elif time.time() - st.st_mtime < STAGED_ORPHAN_SECONDS:
            continue
        out.append((p, st.st_size if st.st_nlink == 1 else 0))
    return out


def _gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # another user's live process
    return False


def _unstage(f: FileStat) -> None:
    if f.staged:
        try:
            os.unlink(f.staged)
        except OSError:
            pass


def discard(job: "ArtifactJob") -> None:
    """Remove the job's staged links (after a failure)."""
    for f in job.files:
        _unstage(f)


def _hash(path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _changed(f: FileStat) -> bool:
    try:
        st = os.stat(f.staged or f.path)
    except OSError:
        return True
    return (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns)


def store(job: ArtifactJob, spool_dir: Path) -> tuple[dict, list[tuple[str, int]], list[str]]:
    """Hash (and in copy mode copy) the job's files: the event payload, the blobs stored, and
    warnings (a file written to after the call: the spool holds the bytes read then)."""
    entries: list[dict[str, Any]] = []
    stored: list[tuple[str, int]] = []
    problems: list[str] = []
    for f in job.files:
        if job.copy:
            try:
                sha, size = blobs.store_file(spool_dir, Path(f.staged or f.path))
            finally:
                changed = _changed(f)
                _unstage(f)
            stored.append((sha, size))
            entries.append({"path": f.rel, "sha256": sha, "size": size})
            if changed or size != f.size:
                problems.append(f"{f.path!r} changed between log_artifact and its copy")
            continue
        else:
            sha, size = _hash(f.path)
            entries.append({"path": f.rel, "sha256": sha, "size": size})
        if _changed(f) or size != f.size:
            problems.append(f"{f.path!r} changed between log_artifact and its hashing")
        st = os.stat(f.path)  # what the sync will compare with: the hashed state
        entries[-1]["ref"] = {"path": f.path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    payload = artifact_payload(job.name, entries, type=job.type, is_dir=job.is_dir,
                               source=job.source, **job.extra)
    if not job.copy:  # artifact_payload keeps the three fixed fields only
        for out, entry in zip(payload["files"], entries):
            out["ref"] = entry["ref"]
        payload["copy"] = False
    return payload, stored, problems


def check_reference(entry: dict[str, Any]) -> str | None:
    """None when a by-reference file still holds the logged bytes, else why not.

    Size and mtime unchanged: the file is taken as unchanged (one ``stat``). Otherwise it is
    hashed again, and accepted only when its sha256 is still the logged one.
    """
    ref = entry.get("ref") or {}
    path = ref.get("path")
    if not path:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"artifact file {path!r} (logged with copy=False) has vanished"
    except OSError as exc:
        return f"artifact file {path!r} (logged with copy=False) cannot be read: {exc}"
    if (st.st_size, st.st_mtime_ns) == (ref.get("size"), ref.get("mtime_ns")):
        return None
    try:
        sha, _ = _hash(path)
    except OSError as exc:
        return f"artifact file {path!r} (logged with copy=False) cannot be read: {exc}"
    if sha != entry.get("sha256"):
        return (f"artifact file {path!r} (logged with copy=False) changed since it was logged "
                f"(sha256 {entry.get('sha256', '')[:12]}… then, {sha[:12]}… now); not uploaded")
    return None
