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

