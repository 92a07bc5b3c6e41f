"""A SIGTERM that the main thread cannot act on still ends the process, runs finished.

bridge handles SIGTERM in Python (runs end KILLED, the spool is flushed). CPython runs a
Python signal handler only when the main thread next checks for signals: a SIGTERM that lands
after that check and before a blocking system call (``read()``, ``pthread_join``, a native
library's wait) is noted at C level and the main thread sleeps on in the call, so a job that
Slurm or Kubernetes stops would hang until SIGKILL, its runs never marked KILLED. Without a
Python handler the kernel would have ended the process at once.

The interpreter's C handler also writes each signal's number to the *wakeup fd*. This module
sets one (a socket pair) when nobody else has, and a thread reads it: after a SIGTERM it
gives the main thread's handler ``grace`` seconds to start; if it has not, the thread chains
to a previous handler, finishes every open run as KILLED, flushes the spool and ends the
process with status 143, as the unhandled signal would have.

The wakeup fd is process-wide. It is set only when unset (-1); a later owner (asyncio's
``loop.add_signal_handler``) replaces it, and the watch then simply stops seeing signals:
the Python handler works as before.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Callable

from bridge.threads import start_thread

if TYPE_CHECKING:
    import socket

__all__ = ["GRACE_SECONDS", "SigtermWatch"]

GRACE_SECONDS = 2.0


class SigtermWatch:
    """Reads the wakeup fd; acts when SIGTERM arrived and the main thread did not."""

    def __init__(self, on_stuck: Callable[[], None], grace: float | None = None) -> None:
        self.handled = threading.Event()  # set by the Python-level SIGTERM handler
        self._on_stuck = on_stuck
        self._grace = GRACE_SECONDS if grace is None else grace
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._unset_for_fork = False

    def install(self) -> bool:
        """Call from the main thread; False (and nothing changed) if a wakeup fd is in use."""
        import socket  # here, not at import: `import bridge` stays light

        reader, writer = socket.socketpair()
        writer.setblocking(False)
        try:
            previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError):
            reader.close()
            writer.close()
            return False
        if previous != -1:  # someone else's (an event loop's): leave it to them
            signal.set_wakeup_fd(previous)
            reader.close()
            writer.close()
            return False
        self._reader, self._writer = reader, writer
        start_thread(self._watch, "bridge-sigterm-watch")
        return True

    def _watch(self) -> None:
        reader = self._reader
        assert reader is not None
        while True:
            try:
                data = reader.recv(256)
            except OSError:
                return
            if not data:
                return
            if signal.SIGTERM in data and not self.handled.wait(self._grace):
                self._on_stuck()  # does not return: the process ends

    # fork(): the socket pair would be shared with the child, and the parent's watch would
    # read the child's signals (a DataLoader worker's SIGTERM) as its own and end the parent.
    # The wakeup fd is unset around fork() so the child never inherits it.

    def before_fork(self) -> None:
        if self._writer is not None and threading.current_thread() is threading.main_thread():
            self._unset_for_fork = _unset_if_ours(self._writer.fileno())

    def after_fork_in_parent(self) -> None:
        if self._unset_for_fork and self._writer is not None:
            self._unset_for_fork = False
            signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)

    def after_fork_in_child(self) -> None:
        """The child has no watch (its SIGTERM handler works as in the parent)."""
        if not self._unset_for_fork and self._writer is not None:
            try:  # forked from another thread: this thread is the child's main thread now
                _unset_if_ours(self._writer.fileno())
            except (ValueError, OSError):
                return  # cannot unset it: keep the fd open rather than let its number be reused
        for sock in (self._reader, self._writer):
            if sock is not None:
                sock.close()
        self._reader = self._writer = None


def _unset_if_ours(fd: int) -> bool:
    """Unset the wakeup fd if it is ``fd``; another owner's stays. True if it was ours."""
    current = signal.set_wakeup_fd(-1)
    if current != fd:
        signal.set_wakeup_fd(current)
        return False
    return True
