"""Exit, exception and signal hooks: open runs are finished whatever ends the process.

Installed once, with the first run: at interpreter exit open runs end FINISHED (KILLED after
SIGTERM); an exception that escapes ends them FAILED (KILLED for Ctrl-C); SIGTERM raises
:class:`~bridge.errors.Terminated` in the main thread so the stack unwinds like Ctrl-C (no
lock stays held mid-commit; exit status 143), chained after a handler installed before
bridge's; a SIGTERM the main thread cannot act on (asleep in a system call) is caught by
:mod:`bridge.sigterm_watch`. Inside a spool commit an interrupt waits for the commit to end.
Nothing else of the host process is changed.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Any

from bridge import registry, writer_pool
from bridge.errors import Terminated
from bridge.sigterm_watch import SigtermWatch
from bridge.spool.writer import defer_if_committing
from bridge.threads import start_thread

__all__ = ["install", "terminated"]

# How long runs may take to finish when the main thread is stuck after SIGTERM (a
# scheduler's grace period before SIGKILL is typically 30 s).
STUCK_FINISH_SECONDS = 10.0
# A scheduler's grace period is short: after SIGTERM, background sync gets at most this.
TERMINATED_SYNC_SECONDS = 5.0

_installed = False
_prev_excepthook = sys.excepthook
_prev_sigterm: Any = None
_terminated = False
_watch: SigtermWatch | None = None


def terminated() -> bool:
    """True once SIGTERM arrived in this process."""
    return _terminated


def install() -> None:
    """Install the hooks (once; signal handlers only from the main thread)."""
    global _installed, _prev_excepthook, _prev_sigterm
    if _installed:
        return
    _installed = True
    atexit.register(_at_exit)
    _prev_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    if threading.current_thread() is threading.main_thread():
        prev = signal.getsignal(signal.SIGTERM)
        if prev is not signal.SIG_IGN:
            _prev_sigterm = prev
            signal.signal(signal.SIGTERM, _on_sigterm)
            _start_sigterm_watch()
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)  # only Python's default: same behaviour


def _finish_all(status: str, error: str | None = None) -> None:
    for run in registry.active():
        wait = run.settings.finish_timeout if hasattr(run, "settings") else 0.0
        if _terminated:
            wait = min(wait, TERMINATED_SYNC_SECONDS)
        try:
            run.finish(status, error=error, timeout=wait)
        except Exception:  # never fail the interpreter's exit
            pass


def _at_exit() -> None:
    _finish_all("KILLED" if _terminated else "FINISHED", error="SIGTERM" if _terminated else None)
    writer_pool.close_all()


def _excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
    if registry.current() is not None and not issubclass(exc_type, SystemExit):
        status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        import traceback

        text = "".join(traceback.format_exception(exc_type, exc, tb))[-20_000:]
        _finish_all(status, error=text)
    _prev_excepthook(exc_type, exc, tb)


def _on_sigterm(signum: int, frame: Any) -> None:
    """Unwind the main thread like Ctrl-C does; runs are finished as KILLED by their context
    managers or at exit. Inside a spool commit the exception waits for the commit to end."""
    global _terminated
    _terminated = True
    if _watch is not None:
        _watch.handled.set()
    prev = _prev_sigterm
    if callable(prev):
        prev(signum, frame)

    def interrupt() -> None:
        raise Terminated(128 + signum)

    if not defer_if_committing(interrupt):
        interrupt()


def _end_stuck_process() -> None:
    """SIGTERM arrived and the main thread, asleep in a system call, never ran its handler:
    finish the runs as KILLED from here and end the process as the signal would have."""
    global _terminated
    _terminated = True

    def finish() -> None:
        prev = _prev_sigterm
        if callable(prev):  # the user's or a framework's handler, chained as in the main thread
            try:
                prev(signal.SIGTERM, None)
            except BaseException:
                pass
        _finish_all("KILLED", error="SIGTERM")
        writer_pool.close_all()

    worker = start_thread(finish, "bridge-sigterm-finish")
    worker.join(timeout=STUCK_FINISH_SECONDS)  # never hang here instead of in the main thread
    os._exit(128 + signal.SIGTERM)


def _on_sigint(signum: int, frame: Any) -> None:
    """Python's own Ctrl-C (KeyboardInterrupt), held back until a spool commit ends."""

    def interrupt() -> None:
        signal.default_int_handler(signum, frame)

    if not defer_if_committing(interrupt):
        interrupt()


def _start_sigterm_watch() -> None:
    global _watch
    watch = SigtermWatch(_end_stuck_process)
    if watch.install():
        _watch = watch


def _before_fork() -> None:
    if _watch is not None:
        _watch.before_fork()


def _after_fork_in_parent() -> None:
    if _watch is not None:
        _watch.after_fork_in_parent()


def _after_fork_in_child() -> None:
    global _watch
    if _watch is not None:  # the parent's watch must never read the child's signals
        _watch.after_fork_in_child()
        _watch = None


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
