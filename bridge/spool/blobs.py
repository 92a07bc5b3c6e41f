"""Content-addressed artifact storage beside the spool files.

Artifacts are copied into ``<spool dir>/blobs/<sha[:2]>/<sha>`` when logged, so a synced
file still exists when the original is gone, and identical content is stored once.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["blob_path", "store_bytes", "store_file"]

_CHUNK = 1 << 20


def blob_path(spool_dir: Path, sha256: str) -> Path:
    return Path(spool_dir) / "blobs" / sha256[:2] / sha256


def _finish(spool_dir: Path, tmp: Path, sha: str) -> Path:
    final = blob_path(spool_dir, sha)
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if final.exists():
        tmp.unlink()
    else:
        os.chmod(tmp, 0o600)
        os.replace(tmp, final)
    return final


def _tmp(spool_dir: Path) -> tuple[int, Path]:
    root = Path(spool_dir) / "blobs"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    import tempfile

    fd, name = tempfile.mkstemp(prefix=".incoming-", dir=root)
    return fd, Path(name)


def store_file(spool_dir: Path, source: Path) -> tuple[str, int]:
    """Copy a file into the blob store while hashing it; return (sha256, size)."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    fd, tmp = _tmp(spool_dir)
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sha = digest.hexdigest()
    _finish(spool_dir, tmp, sha)
    return sha, size


def store_bytes(spool_dir: Path, data: bytes) -> tuple[str, int]:
    """Store bytes (a pickled model, a text file) in the blob store."""
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    if blob_path(spool_dir, sha).exists():
        return sha, len(data)
    fd, tmp = _tmp(spool_dir)
    with os.fdopen(fd, "wb") as dst:
        dst.write(data)
        dst.flush()
        os.fsync(dst.fileno())
    _finish(spool_dir, tmp, sha)
    return sha, len(data)
