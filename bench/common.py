"""Shared helpers of the sync and vendor benchmarks: run metadata, statistics, isolated child
processes, spool generation and RSS sampling.

Each vendor SDK runs in a child process of its own (``multiprocessing`` spawn): Comet hooks
into MLflow when both are imported, W&B starts a core process, Neptune and Comet start
writer threads; isolating them keeps one contender's side effects off the others' figures
while the parent still alternates them turn by turn.
"""

from __future__ import annotations

import datetime as _dt
import multiprocessing as mp
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "Child",
    "RssSampler",
    "count_metric_events",
    "fmt_rate",
    "header",
    "make_spool",
    "mark",
    "meta",
    "pct",
    "quiet_vendor_env",
    "run_in_child",
    "settle_cpu",
]

_CTX = mp.get_context("spawn")


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    i = max(0, min(len(sorted_values) - 1, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def meta(module: str, versions: tuple[str, ...] = ()) -> dict:
    """Command, date, commit, machine and load: the header every section prints."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).resolve().parent, timeout=5
                                ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in versions:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    return {
        "command": f"python -m {module} " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit, "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "versions": found, "platform": f"{platform.system()} {platform.machine()}",
        "nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
        "load_before": _load(), "t0": time.monotonic(),
    }


def header(title: str, m: dict) -> list[str]:
    """The markdown lines that open a section: command, date, versions, machine load."""
    m["load_after"] = _load()
    wall = time.monotonic() - m["t0"]
    vers = " · ".join(f"{k} {v}" for k, v in m["versions"].items())
    return [
        f"## {title}",
        "",
        f"Command: `{m['command'].strip()}`  ",
        f"Date: {m['date']} · commit {m['commit']} · Python {m['python']} · SQLite {m['sqlite']}"
        + (f" · {vers}" if vers else "") + "  ",
        f"Machine: {m['platform']}, nproc {m['nproc']} (affinity {m['affinity']}); load average "
        f"before {m['load_before']}, after {m['load_after']}; wall time {wall:.0f} s",
        "",
    ]


def quiet_vendor_env(tmp: Path) -> None:
    """Offline, keyless, silent settings for every vendor SDK, all files under ``tmp``."""
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "NEPTUNE_API_TOKEN",
                "NEPTUNE_PROJECT"):
        os.environ.pop(var, None)
    os.environ.update(
        WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp),
        WANDB_CONFIG_DIR=str(tmp), WANDB_CACHE_DIR=str(tmp), WANDB_DATA_DIR=str(tmp),
        WANDB_DISABLE_CODE="true",
        COMET_API_KEY="dummy", COMET_ERROR_TRACKING_ENABLE="false",
        COMET_DISABLE_AUTO_LOGGING="1", COMET_LOGGING_CONSOLE="ERROR",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_ALLOW_FILE_STORE="true",
        GIT_PYTHON_REFRESH="quiet",
    )


def settle_cpu(deadline_s: float = 5.0, quiet_ms: float = 2.0, every_s: float = 0.02) -> None:
    """Wait (bounded) until this process's other threads and its children stop using CPU:
    vendor SDKs keep writing after the call returned, and that work must not fall on the
    next contender's turn. Polls; never sleeps for a fixed time to wait for a condition."""
    import psutil

    me = psutil.Process()

    def cpu() -> float:
        t = me.cpu_times()
        total = t.user + t.system
        for c in me.children(recursive=True):
            try:
                ct = c.cpu_times()
                total += ct.user + ct.system
            except psutil.Error:
                pass
        return total

    end = time.monotonic() + deadline_s
    last = cpu()
    while time.monotonic() < end:
        time.sleep(every_s)
        now = cpu()
        if (now - last) * 1000 < quiet_ms:
            return
        last = now


# -- child processes -----------------------------------------------------------------------


def _child_main(conn: Any, factory: Callable[..., Any], args: tuple) -> None:
    """Build the contender with ``factory(*args)`` then serve ``(method, args)`` calls.
    The SDKs' chatter goes to stderr: the parent's stdout carries only the report."""
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        obj = factory(*args)
        conn.send(("ok", None))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            name, margs = conn.recv()
        except EOFError:
            return
        try:
            result = getattr(obj, name)(*margs)
            conn.send(("ok", result))
        except BaseException:
            conn.send(("error", traceback.format_exc()))
        if name == "close":
            return


class Child:
    """A contender living in its own spawned process; ``call`` runs one of its methods."""

    def __init__(self, factory: Callable[..., Any], *args: Any, timeout: float = 180.0) -> None:
        self._conn, child_conn = _CTX.Pipe()
        self._proc = _CTX.Process(target=_child_main, args=(child_conn, factory, args),
                                  daemon=True)
        self._proc.start()
        self.pid = self._proc.pid
        self.timeout = timeout
        self._ready = False

    def ready(self) -> "Child":
        """Wait until the contender is built (children start in parallel, then wait)."""
        if not self._ready:
            self._wait()
            self._ready = True
        return self

    def _wait(self) -> Any:
        if not self._conn.poll(self.timeout):
            self.kill()
            raise RuntimeError("benchmark child did not answer in time")
        status, value = self._conn.recv()
        if status == "error":
            raise RuntimeError(f"benchmark child failed:\n{value}")
        return value

    def call(self, method: str, *args: Any) -> Any:
        self.ready()
        self._conn.send((method, args))
        return self._wait()

    def close(self) -> Any:
        try:
            return self.call("close")
        finally:
            self._proc.join(30)
            if self._proc.is_alive():
                self.kill()

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(10)


def run_in_child(fn: Callable[..., Any], *args: Any, timeout: float = 900.0) -> Any:
    """Run ``fn(*args)`` once in a fresh spawned process and return its result."""
    child = Child(_Once, fn, args, timeout=timeout)
    try:
        return child.call("run")
    finally:
        child.close()


class _Once:
    def __init__(self, fn: Callable[..., Any], args: tuple) -> None:
        self.fn, self.args = fn, args

    def run(self) -> Any:
        return self.fn(*self.args)

    def close(self) -> None:
        return None


# -- spools --------------------------------------------------------------------------------


def make_spool(spool: Path, backends: list, runs: int, steps: int, keys: int = 2,
               project: str = "bench") -> list[str]:
    """Record ``runs`` finished runs of ``steps`` × ``keys`` metric points each, offline (no
    sync); returns their run ids. Values differ per step so that no backend can dedupe."""
    import bridge

    names = ["loss", "acc"] + [f"m{j}" for j in range(max(0, keys - 2))]
    names = names[:keys]
    ids = []
    for r in range(runs):
        run = bridge.init(project=project, name=f"bench-{r}", dir=spool, sync="offline",
                          backends=backends)
        log = run.log
        for i in range(steps):
            x = 1.0 / (i + 1 + r)
            log({k: x + j for j, k in enumerate(names)}, step=i)
        run.finish()
        ids.append(run.id)
    return ids


def count_metric_events(spool: Path) -> int:
    """Metric rows in every spool file under ``spool`` (to state the backlog exactly)."""
    total = 0
    for db in sorted(spool.rglob("*.db")):
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                total += c.execute("SELECT COUNT(*) FROM events WHERE kind='metric'").fetchone()[0]
        except sqlite3.DatabaseError:
            continue
    return total


# -- memory --------------------------------------------------------------------------------


@dataclass
class RssSampler:
    """Sample the RSS of a process and its children every ``every_s`` seconds."""

    pid: int
    every_s: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def _rss(self) -> int | None:
        import psutil

        try:
            p = psutil.Process(self.pid)
            total = p.memory_info().rss
            for c in p.children(recursive=True):
                try:
                    total += c.memory_info().rss
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = self._rss()
            if rss is not None:
                self.samples.append((time.monotonic() - self._t0, rss))
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_mb(self) -> float:
        return max((r for _, r in self.samples), default=0) / 2**20
