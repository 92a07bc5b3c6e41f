"""A loopback HTTP proxy that injects faults between a client and a real server.

Tests script what the next requests get (a 429 with ``Retry-After``, a 500 or 503, a
connection reset, a stall, a truncated response); every other request passes through to
the upstream server unchanged. The proxy is the boundary bridge owns: the client and the
server on either side are the real ones.

    with FaultProxy("http://127.0.0.1:5000") as proxy:
        proxy.respond(429, retry_after=7, path="/log-batch")
        ...  # point the client at proxy.url
"""

from __future__ import annotations

import http.client
import io
import socket
import socketserver
import struct
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

__all__ = ["Fault", "FaultProxy"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}


@dataclass
class Fault:
    """What one request gets instead of the upstream answer.

    ``kind`` is "status" (answer ``status`` with ``retry_after`` and ``body``), "reset"
    (close with an RST), "stall" (hold the request ``seconds``, then close without an
    answer) or "truncate" (forward, then send only half of the body and close).
    ``path``: only requests whose path contains it get this fault (None: any request).
    """

    kind: str
    status: int = 500
    retry_after: str | None = None
    body: bytes = b""
    seconds: float = 0.0
    path: str | None = None

    def matches(self, path: str) -> bool:
        return self.path is None or self.path in path


@dataclass(frozen=True)
class Seen:
    """One request as the proxy handled it."""

    method: str
    path: str
    action: str  # "pass" or the fault kind


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: "FaultProxy"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        return  # quiet: tests read FaultProxy.seen instead

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        fault = proxy._take(self.path)
        proxy._record(Seen(self.command, self.path, fault.kind if fault else "pass"))
        if fault is None:
            status, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
            self._answer(status, headers, payload)
        elif fault.kind == "status":
            headers = [("Content-Type", "application/json" if fault.body[:1] == b"{" else "text/plain")]
            if fault.retry_after is not None:
                headers.append(("Retry-After", fault.retry_after))
            self._answer(fault.status, headers, fault.body or f"injected {fault.status}".encode())
        elif fault.kind == "reset":
            self._reset()
        elif fault.kind == "stall":
            proxy._stopping.wait(fault.seconds)
            self.close_connection = True
        elif fault.kind == "truncate":
            status, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(max(len(payload), 2)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send an RST instead of a FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()
        self.wfile = io.BytesIO()  # the handler flushes wfile after us: give it somewhere to go

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class FaultProxy:
    """A threaded proxy on 127.0.0.1 in front of ``upstream`` with a queue of faults."""

    def __init__(self, upstream: str, timeout: float = 30.0) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.timeout = timeout
        self._faults: deque[Fault] = deque()
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -------------------------------------------------------------------
    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def respond(
        self, status: int, retry_after: float | str | None = None, body: bytes = b"",
        path: str | None = None, times: int = 1,
    ) -> None:  # fmt: skip
        ra = None if retry_after is None else str(retry_after)
        for _ in range(times):
            self.add(Fault("status", status=status, retry_after=ra, body=body, path=path))

    def reset(self, path: str | None = None, times: int = 1) -> None:
        for _ in range(times):
            self.add(Fault("reset", path=path))

    def stall(self, seconds: float, path: str | None = None, times: int = 1) -> None:
        for _ in range(times):
            self.add(Fault("stall", seconds=seconds, path=path))

    def truncate(self, path: str | None = None, times: int = 1) -> None:
        for _ in range(times):
            self.add(Fault("truncate", path=path))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- what happened -----------------------------------------------------------------
    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self._seen)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._faults)

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("proxy is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FaultProxy":
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="fault-proxy", daemon=True,
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, release stalled requests and close the listening socket."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------
    def _take(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path):
                    self._faults.remove(fault)
                    return fault
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def _forward(
        self, method: str, path: str, headers: object, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=self.timeout)
        try:
            out = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}  # type: ignore[attr-defined]
            out["Host"] = f"{self.upstream_host}:{self.upstream_port}"
            out["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=out)
            resp = conn.getresponse()
            payload = resp.read()
            kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            return resp.status, kept, payload
        finally:
            conn.close()
