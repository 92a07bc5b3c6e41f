"""The run's ``system`` event: platform facts, gathered off the caller's thread.

Never environment variables; the command line with credentials masked
(:mod:`bridge.redact`), since the event is copied to exports and to every backend.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from bridge.spool.events import Kind
from bridge.threads import start_thread
from bridge.values import clean_text

__all__ = ["record_system_info", "scrub_argv", "system_info"]


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


# What does not change within a process (packages, platform, host): gathered once per
# process, not once per run — a sweep or an autologged fit starts a run every few ms, and
# each scan of the installed distributions and each `git` subprocess costs milliseconds of CPU
# beside the training. Git facts are kept for a minute per directory.
_STATIC: dict[int, dict[str, Any]] = {}
_GIT: dict[tuple[int, str], tuple[float, dict[str, Any]]] = {}
GIT_CACHE_SECONDS = 60.0


def _static() -> dict[str, Any]:
    import getpass
    import platform
    import socket
    from importlib import metadata

    pid = os.getpid()
    found = _STATIC.get(pid)
    if found is not None:
        return found
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
    found = {"platform": platform.platform(), "python": platform.python_version(),
             "executable": sys.executable, "host": socket.gethostname(), "user": user,
             "cpu_count": os.cpu_count(), "packages": versions}
    try:
        import psutil

        found["memory_total"] = psutil.virtual_memory().total
    except Exception:
        pass
    _STATIC.clear()  # a forked child drops its parent's entry
    _STATIC[pid] = found
    return found


def _git_cached(cwd: str) -> dict[str, Any]:
    import time

    key, now = (os.getpid(), cwd), time.monotonic()
    hit = _GIT.get(key)
    if hit is not None and now - hit[0] < GIT_CACHE_SECONDS:
        return hit[1]
    git = _git(cwd)
    _GIT[key] = (now, git)
    return git


def system_info() -> dict[str, Any]:
    """Platform facts for the run's ``system`` event; never environment variables."""
    static = _static()
    info: dict[str, Any] = {
        "platform": static["platform"],
        "python": static["python"],
        "executable": static["executable"],
        "host": static["host"],
        "pid": os.getpid(),
        "user": static["user"],
        "argv": scrub_argv(list(sys.argv)),
        "cwd": os.getcwd(),
        "cpu_count": static["cpu_count"],
        "packages": dict(static["packages"]),
    }
    if "memory_total" in static:
        info["memory_total"] = static["memory_total"]
    git = _git_cached(os.getcwd())
    if git:
        info["git"] = dict(git)
    return info


def record_system_info(writer: Any, run_id: str, start_ms: int) -> threading.Thread:
    """Gather system facts off the caller's thread; finish() waits for it briefly.

    The event is stamped with the run's start time and written even when the facts arrive
    after ``finish()`` (a loaded machine, a slow ``git``): it belongs to the run's start.
    """

    def work() -> None:
        try:
            payload, _ = clean_text(json.dumps(system_info(), default=str, ensure_ascii=False))
            writer.put_event(run_id, Kind.SYSTEM.value, "system", None, start_ms, None, payload)
        except Exception:
            pass

    return start_thread(work, "bridge-system-info")

