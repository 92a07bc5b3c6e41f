"""Start and stop a real ``mlflow server`` on loopback for tests.

The server runs in its own process group (it forks a uvicorn worker), so stopping it
kills the whole group and no orphan keeps the port. ``stop()`` then ``start()`` brings
it back on the same port and database, which is how outage tests cut the backend.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["MlflowServer", "free_port", "wait_until"]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _mlflow_command() -> list[str]:
    # The same interpreter as the tests, so the server and the client are one mlflow.
    script = Path(sys.executable).with_name("mlflow")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mlflow"]


class MlflowServer:
    """One ``mlflow server`` with a sqlite backend store and proxied artifacts under ``root``."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.root / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> None:
        """Start the server (same port, same db) and wait until ``/health`` answers."""
        if self.running:
            return
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        cmd = _mlflow_command() + [
            "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--serve-artifacts",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        log = open(self.log_path, "ab")
        try:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        ok = wait_until(lambda: self.healthy() or not self.running, START_TIMEOUT_S, 0.1)
        if not ok or not self.running:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"mlflow server did not start on {self.url}:\n{tail}")

    def stop(self) -> None:
        """Kill the server's process group: SIGTERM, then SIGKILL after a deadline."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # Workers of the group may outlive the leader for a moment; make sure none is left.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_until(lambda: not self._port_open(), STOP_TIMEOUT_S)

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def __enter__(self) -> "MlflowServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
