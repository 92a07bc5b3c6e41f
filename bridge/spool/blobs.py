"""Content-addressed artifact storage beside the spool files.

Artifacts are copied into ``<spool dir>/blobs/<sha[:2]>/<sha>`` when logged, so a synced
file still exists when the original is gone, and identical content is stored once.

Writes never follow a symlink inside the store: ``blobs`` and each fan-out directory are
opened with ``O_NOFOLLOW | O_DIRECTORY`` and every later step works relative to those
descriptors (``dir_fd``), so a link planted as ``blobs/<xx>`` cannot send an artifact's bytes
to another directory. Such a store is refused with :class:`UnsafeBlobStore` (an ``OSError``,
which ``Run.log_artifact`` already turns into a counted warning). The spool directory itself
is the user's choice and may be a link.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO, Callable

from bridge.errors import UnsafeBlobStore

__all__ = ["UnsafeBlobStore", "blob_path", "store_bytes", "store_file"]

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC




def blob_path(spool_dir: Path, sha256: str) -> Path:
    return Path(spool_dir) / "blobs" / sha256[:2] / sha256


def _open_dir(name: str, parent_fd: int, shown: Path, create: bool = True) -> int:
    """Open directory ``name`` under ``parent_fd`` without following a symlink, creating it
    (0700) when missing and ``create``; ``shown`` names it in the error."""
    if create:
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            pass
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeBlobStore(exc.errno, "blob store directory is a symlink or not a "
                                  "directory; refused", str(shown)) from exc
        raise


class _Store:
    """Descriptors of ``<spool dir>/blobs`` and, on demand, of one fan-out directory."""

    def __init__(self, spool_dir: Path) -> None:
        self.root = Path(spool_dir) / "blobs"
        self.root.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        top = os.open(self.root.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.fd = _open_dir("blobs", top, self.root)
        finally:
            os.close(top)

    def close(self) -> None:
        os.close(self.fd)

    def exists(self, sha: str) -> bool:
        """A regular file is already stored under ``sha`` (a link there does not count)."""
        try:
            fan = _open_dir(sha[:2], self.fd, self.root / sha[:2], create=False)
        except FileNotFoundError:
            return False
        try:
            st = os.stat(sha, dir_fd=fan, follow_symlinks=False)
        except FileNotFoundError:
            return False
        finally:
            os.close(fan)
        if stat.S_ISREG(st.st_mode):
            _touch(sha, self.fd, sha[:2])
            return True
        return False

    def incoming(self) -> tuple[str, BinaryIO]:
        """A new temporary file in ``blobs/`` (0600), created, never opened through a link."""
        name = f".incoming-{os.urandom(8).hex()}"
        fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=self.fd)
        return name, os.fdopen(fd, "wb")

    def discard(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def finish(self, name: str, sha: str) -> None:
        """Move the temporary file to ``<sha[:2]>/<sha>``; a link planted at that name is
        replaced (``rename`` never follows it), an existing regular blob is kept."""
        fan = _open_dir(sha[:2], self.fd, self.root / sha[:2])
        try:
            try:
                st = os.stat(sha, dir_fd=fan, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISREG(st.st_mode):
                self.discard(name)
                _touch(sha, self.fd, sha[:2])
            else:
                os.replace(name, sha, src_dir_fd=self.fd, dst_dir_fd=fan)
        finally:
            os.close(fan)


def _touch(sha: str, root_fd: int, fan_name: str) -> None:
    """Mark a reused blob as just referenced: `bridge prune` spares blobs touched within its
    grace period, so a writer reusing a blob whose event is not committed yet keeps it."""
    try:
        fan = os.open(fan_name, _DIR_FLAGS, dir_fd=root_fd)
    except OSError:
        return
    try:
        os.utime(sha, dir_fd=fan, follow_symlinks=False)
    except OSError:
        pass
    finally:
        os.close(fan)


Fill = Callable[[BinaryIO], tuple[str, int]]  # writes the content, returns (sha256, size)


def _write(spool_dir: Path, fill: Fill) -> tuple[str, int]:
    """Write a new blob through ``fill`` into a temporary file, then move it in place."""
    store = _Store(spool_dir)
    try:
        name, dst = store.incoming()
        try:
            with dst:
                sha, size = fill(dst)
                dst.flush()
                os.fsync(dst.fileno())
            store.finish(name, sha)
        except BaseException:
            store.discard(name)
            raise
    finally:
        store.close()
    return sha, size


def store_file(spool_dir: Path, source: Path) -> tuple[str, int]:
    """Copy a file into the blob store while hashing it; return (sha256, size)."""

    def fill(dst: BinaryIO) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        with open(source, "rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
        return digest.hexdigest(), size

    return _write(spool_dir, fill)


def store_bytes(spool_dir: Path, data: bytes) -> tuple[str, int]:
    """Store bytes (a pickled model, a text file) in the blob store."""
    sha = hashlib.sha256(data).hexdigest()
    store = _Store(spool_dir)
    try:
        if store.exists(sha):
            return sha, len(data)
    finally:
        store.close()

    def fill(dst: BinaryIO) -> tuple[str, int]:
        dst.write(data)
        return sha, len(data)

    return _write(spool_dir, fill)
