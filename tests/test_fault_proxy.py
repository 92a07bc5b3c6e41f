"""The fault proxy itself, in front of a tiny stdlib HTTP server."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from fault_proxy import FaultProxy


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        payload = b"echo:" + self.command.encode() + b":" + self.path.encode() + b":" + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Upstream", "yes")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _reply


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def proxy(upstream: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream, timeout=5) as p:
        yield p


def _request(url: str, method: str = "GET", path: str = "/x", body: bytes | None = None, timeout: float = 5):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_passes_through_and_counts(proxy: FaultProxy) -> None:
    status, headers, body = _request(proxy.url, "POST", "/api/run", b"hello")
    assert (status, body) == (200, b"echo:POST:/api/run:hello")
    assert headers["X-Upstream"] == "yes"
    assert proxy.requests == 1 and proxy.seen[0].action == "pass"


def test_status_faults_in_order_then_pass(proxy: FaultProxy) -> None:
    proxy.respond(429, retry_after=7)
    proxy.respond(503)
    status, headers, _ = _request(proxy.url)
    assert status == 429 and headers["Retry-After"] == "7"
    assert _request(proxy.url)[0] == 503
    assert _request(proxy.url)[0] == 200
    assert [s.action for s in proxy.seen] == ["status", "status", "pass"]
    assert proxy.pending == 0


def test_path_filter(proxy: FaultProxy) -> None:
    proxy.respond(500, path="/log-batch")
    assert _request(proxy.url, path="/other")[0] == 200
    assert _request(proxy.url, path="/api/log-batch")[0] == 500


def test_reset_is_a_connection_error(proxy: FaultProxy) -> None:
    proxy.reset()
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        _request(proxy.url)
    assert _request(proxy.url)[0] == 200


def test_truncated_response(proxy: FaultProxy) -> None:
    proxy.truncate()
    with pytest.raises(http.client.IncompleteRead):
        _request(proxy.url, path="/long-enough-path")


def test_stall_holds_then_closes_and_stop_releases_it(upstream: str) -> None:
    p = FaultProxy(upstream).start()
    p.stall(0.3)
    t0 = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        _request(p.url)
    assert 0.25 <= time.monotonic() - t0 < 3
    # A long stall is released when the proxy stops: the test never waits for it.
    p.stall(60)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            _request(p.url, timeout=10)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.monotonic() + 5
    while p.requests < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    p.stop()
    worker.join(timeout=10)
    assert not worker.is_alive() and errors
    assert time.monotonic() - t0 < 5
