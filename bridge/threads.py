"""Background threads that leave signals to the main thread.

The kernel delivers a process-directed signal (SIGTERM, SIGINT, ...) to any thread that
does not block it. CPython only runs Python signal handlers in the main thread, and a main
thread blocked in a system call (``sys.stdin.read()``, ``socket.recv``, ``time.sleep`` on
some platforms) is woken only when the signal lands on *it*. A bridge thread that happens to
receive SIGTERM would leave the training process waiting forever instead of finishing its
runs as KILLED. Every thread bridge starts therefore blocks the asynchronous signals, so the
kernel picks the main thread (or a user's thread) instead; threads started from a bridge
thread (vendor SDK workers) inherit the mask.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

__all__ = ["start_thread"]

# Signals a fault raises in the faulting thread itself, or that cannot be blocked.
_SYNCHRONOUS = {"SIGKILL", "SIGSTOP", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT",
                "SIGTRAP", "SIGSYS"}


def _asynchronous_signals() -> set[signal.Signals]:
    if not hasattr(signal, "pthread_sigmask"):
        return set()
    keep = set()
    for sig in signal.valid_signals():
        if isinstance(sig, signal.Signals) and sig.name not in _SYNCHRONOUS:
            keep.add(sig)
    return keep


_BLOCKED = _asynchronous_signals()


def start_thread(target: Callable[..., Any], name: str, args: tuple = (),
                 daemon: bool = True) -> threading.Thread:
    """Start ``target(*args)`` on a daemon thread that never receives asynchronous signals."""

    thread = threading.Thread(target=target, args=args, name=name, daemon=daemon)
    if not _BLOCKED:
        thread.start()
        return thread
    # A new thread inherits its creator's mask: block here around start() so the thread
    # is born blocking (no window before it could block them itself), then restore ours.
    # A signal that arrives meanwhile stays pending and reaches this thread right after.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return thread
