"""Is a writer file still written? A lock beside it says so, for prune and retention.

A live writer holds ``flock(LOCK_SH)`` on ``spool/<file id>.lock`` for as long as its file is
open, so ``bridge prune`` never deletes (or rewrites) a file under it: a writer whose runs
have all finished may still start another run in the same file. The lock is a sidecar, not
the database itself, so it never meets SQLite's own byte-range locks; the kernel drops it
when the process dies (SIGKILL, OOM), so a crashed writer's file is seen as done at once.

Files written before this lock existed have no sidecar: their writer is taken as alive while
its recorded process exists on this host, and, on another host, always (bridge cannot know).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
from pathlib import Path

from bridge.spool.schema import read_only_uri

__all__ = ["alive_by_meta", "hold", "hold_exclusive", "lock_path", "release",
           "release_exclusive", "writer_alive"]

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC


def lock_path(db: Path) -> Path:
    """The sidecar lock of writer file ``db``."""
    return Path(db).with_suffix(".lock")


def _lock(side: Path, how: int) -> int | None:
    """``side`` opened and locked ``how`` without waiting: the descriptor, None where the
    filesystem refuses locks; :class:`BlockingIOError` when another process holds it."""
    try:
        fd = os.open(side, _FLAGS, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError:
        os.close(fd)
        return None
    return fd


def hold(db: Path) -> int | None:
    """Take the shared lock for a writer's lifetime; the descriptor to close at the end
    (None where the filesystem refuses locks: the file then counts as alive by its pid)."""
    try:
        return _lock(lock_path(db), fcntl.LOCK_SH)
    except BlockingIOError:
        return None


def hold_exclusive(db: Path) -> int | None:
    """Take ``db``'s sidecar lock alone, for a process that writes the file's run from
    scratch (an import): the descriptor to give :func:`release_exclusive`, None where the
    filesystem refuses locks. :class:`BlockingIOError` when another process holds it."""
    side = lock_path(db)
    for _ in range(3):
        fd = _lock(side, fcntl.LOCK_EX)
        if fd is None:
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(side).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed the file we locked (release_exclusive): again
    raise BlockingIOError(f"{side} keeps changing hands")


def release_exclusive(db: Path, fd: int | None) -> None:
    """Remove the sidecar while still holding it, then let go: a process that opened it
    meanwhile finds it gone and takes a new one (:func:`hold_exclusive`)."""
    if fd is None:
        return
    try:
        lock_path(db).unlink(missing_ok=True)
    finally:
        release(fd)


def release(fd: int | None) -> None:
    """Close this process's descriptor (a forked child's copy leaves the parent's lock)."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def writer_alive(db: Path) -> str | None:
    """Why ``db`` may still be written ("" never returned): None when its writer is gone."""
    side = lock_path(db)
    if side.exists():
        try:
            fd = os.open(side, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            return f"cannot check its writer's lock ({exc})"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "its writer process is still running"
        except OSError as exc:
            return f"cannot check its writer's lock ({exc})"
        finally:
            os.close(fd)  # closing drops the probe's lock
        return None
    return alive_by_meta(db)


def alive_by_meta(db: Path) -> str | None:
    """Why ``db``'s writer may still run, by the host and pid in its meta: None when gone."""
    try:
        conn = sqlite3.connect(read_only_uri(db), uri=True)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # not a readable writer file: prune leaves unreadable files alone anyway
    if "import_source" in meta or str(meta.get("node", "")).startswith("import:"):
        return None  # an imported run's file is complete when it appears (renamed in place)
    host, pid = meta.get("host", ""), meta.get("pid", "")
    if host != socket.gethostname() and host != os.uname().nodename:
        return f"written on host {host!r}, whose writer bridge cannot check"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return None
    except (ValueError, PermissionError, OSError):
        return "its writer process may still be running"
    return "its writer process is still running"
