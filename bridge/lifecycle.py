"""Process-wide bookkeeping: the current run, spool writers, exit, signals and fork.

Runs that are still open when the interpreter exits are finished (FINISHED, or FAILED when
an exception escaped); SIGTERM finishes them as KILLED and flushes before the process
dies, also when the main thread sleeps in a system call (:mod:`bridge.sigterm_watch`); after
``fork()`` the child gets its own writer and spool file on first use.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from bridge.errors import Terminated
from bridge.sigterm_watch import SigtermWatch
from bridge.spool.events import Kind
from bridge.spool.writer import SpoolWriter, defer_if_committing
from bridge.threads import start_thread
from bridge.values import clean_text

if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.run import Run

__all__ = ["current", "forget", "record_system_info", "register", "writer_for"]

_lock = threading.RLock()
_writers: dict[tuple, SpoolWriter] = {}
_active: list["Run"] = []
_hooks_installed = False
_prev_excepthook = sys.excepthook
_prev_sigterm: Any = None
_terminated = False
_watch: SigtermWatch | None = None
# How long the SIGTERM watch lets runs finish when the main thread is stuck (a scheduler's
# grace period before SIGKILL is typically 30 s).
_STUCK_FINISH_SECONDS = 10.0


# Writers kept open with no run of theirs active: a sweep that starts run after run in one
# directory reuses its writer (one spool file); a process that opens runs in many
# directories (a test suite, a trial per directory) keeps a bounded number of threads and
# open files.
IDLE_WRITERS_KEPT = 4


def writer_for(settings: "Settings", node: str) -> SpoolWriter:
    """This process's writer for a spool directory (one file per process and directory)."""
    key = (str(settings.dir), settings.durability, node)
    with _lock:
        w = _writers.pop(key, None)
        if w is None or w._closed:
            w = SpoolWriter(
                settings.dir, durability=settings.durability,
                flush_interval=settings.flush_interval, max_queue=settings.max_queue, node=node,
            )
        _writers[key] = w  # most recently used last
        _close_idle_writers(keep=IDLE_WRITERS_KEPT, spare=w)
        return w


def _close_idle_writers(keep: int, spare: SpoolWriter) -> None:
    """Close the least recently used writers that no active run writes to, beyond ``keep``."""
    busy = {id(run._writer) for run in _active}
    idle = [k for k, w in _writers.items() if id(w) not in busy and w is not spare]
    for k in idle[: max(0, len(idle) - keep)]:
        w = _writers.pop(k)
        try:
            w.close()  # commits what its finished runs left queued
        except Exception:
            pass


def register(run: "Run") -> None:
    with _lock:
        _active.append(run)
        _install_hooks()


def forget(run: "Run") -> None:
    with _lock:
        if run in _active:
            _active.remove(run)


def current() -> "Run | None":
    """The most recently started run that is still open."""
    with _lock:
        return _active[-1] if _active else None


def _finish_all(status: str, error: str | None = None) -> None:
    for run in list(_active):
        wait = run.settings.finish_timeout
        if _terminated:  # a scheduler's grace period is short: leave the rest to `bridge sync`
            wait = min(wait, 5.0)
        try:
            run.finish(status, error=error, timeout=wait)
        except Exception:  # never fail the interpreter's exit
            pass


def _close_writers() -> None:
    with _lock:
        for w in list(_writers.values()):
            try:
                w.close()
            except Exception:
                pass


def _at_exit() -> None:
    _finish_all("KILLED" if _terminated else "FINISHED", error="SIGTERM" if _terminated else None)
    _close_writers()


def _excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
    if _active and not issubclass(exc_type, SystemExit):
        status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        import traceback

        text = "".join(traceback.format_exception(exc_type, exc, tb))[-20_000:]
        _finish_all(status, error=text)
    _prev_excepthook(exc_type, exc, tb)


def _on_sigterm(signum: int, frame: Any) -> None:
    """Unwind the main thread like Ctrl-C does, so no lock stays held mid-commit; runs are
    finished as KILLED by their context managers or at exit (exit status 143). Inside a
    spool commit the exception waits for the commit to end (no batch half-done)."""
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
        _close_writers()

    worker = start_thread(finish, "bridge-sigterm-finish")
    worker.join(timeout=_STUCK_FINISH_SECONDS)  # never hang here instead of in the main thread
    os._exit(128 + signal.SIGTERM)


def _on_sigint(signum: int, frame: Any) -> None:
    """Python's own Ctrl-C (KeyboardInterrupt), held back until a spool commit ends."""

    def interrupt() -> None:
        signal.default_int_handler(signum, frame)

    if not defer_if_committing(interrupt):
        interrupt()


def _install_hooks() -> None:
    global _hooks_installed, _prev_excepthook, _prev_sigterm
    if _hooks_installed:
        return
    _hooks_installed = True
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


def _start_sigterm_watch() -> None:
    global _watch
    watch = SigtermWatch(_end_stuck_process)
    if watch.install():
        _watch = watch


class _ForkedWriter:
    """Stands in for a writer in a forked child until the child first writes."""

    def __init__(self, run: "Run") -> None:
        self._run = run

    def _real(self) -> SpoolWriter:
        run = self._run
        real = writer_for(run.settings, run.node)
        run._writer = real
        real.put_run(run._row())
        return real

    def __getattr__(self, name: str) -> Any:
        if name in ("flush", "close"):
            return lambda *a, **k: True
        return getattr(self._real(), name)


def _after_fork_in_child() -> None:
    global _lock, _watch
    _lock = threading.RLock()
    if _watch is not None:  # the parent's watch must never read the child's signals
        _watch.after_fork_in_child()
        _watch = None
    for w in _writers.values():
        w.abandon()
    _writers.clear()
    for run in _active:
        run._writer = _ForkedWriter(run)
        run._sync = None
    # The parent owns these runs: the child's exit must not finish them.
    _active.clear()


def _before_fork() -> None:
    if _watch is not None:
        _watch.before_fork()


def _after_fork_in_parent() -> None:
    if _watch is not None:
        _watch.after_fork_in_parent()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


# -- the system event ---------------------------------------------------------------------

_PACKAGES = ("numpy", "torch", "tensorflow", "jax", "scikit-learn", "pandas", "transformers",
             "lightning", "pytorch-lightning", "keras", "mlflow", "wandb", "neptune", "comet-ml",
             "tracking-bridge")


def scrub_argv(argv: list[str]) -> list[str]:
    """``argv`` as recorded in the system event: credentials masked (see :mod:`bridge.redact`).

    The system event is copied to exports and to every backend, so this is the last point
    where a secret typed on the command line can be kept out of all of them.
    """
    from bridge.redact import redact_argv

    return redact_argv(argv)


def _git(cwd: str) -> dict[str, Any]:
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, timeout=3)
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=3)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {}


def system_info() -> dict[str, Any]:
    """Platform facts for the run's ``system`` event; never environment variables."""
    import getpass
    import platform
    import socket
    from importlib import metadata

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        user = getpass.getuser()
    except Exception:
        user = ""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "user": user,
        "argv": scrub_argv(list(sys.argv)),
        "cwd": os.getcwd(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
    }
    try:
        import psutil

        info["memory_total"] = psutil.virtual_memory().total
    except Exception:
        pass
    git = _git(os.getcwd())
    if git:
        info["git"] = git
    return info


def record_system_info(run: "Run") -> None:
    """Gather system facts off the caller's thread; finish() waits for it briefly.

    The event is stamped with the run's start time and written even when the facts arrive
    after ``finish()`` (a loaded machine, a slow ``git``): it belongs to the run's start.
    """

    def work() -> None:
        try:
            payload, _ = clean_text(json.dumps(system_info(), default=str, ensure_ascii=False))
            run._writer.put_event(run.id, Kind.SYSTEM.value, "system", None, run.start_ms, None,
                                  payload)
        except Exception:
            pass

    run._system_thread = start_thread(work, "bridge-system-info")

