"""bridge's MLflow REST client at its own boundary: headers, connections, error answers.

What it writes into MLflow is checked against a real server in ``test_mlflow_adapter.py``;
here a loopback HTTP server records what the client sends and answers as told.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from typing import Any, Iterator

import pytest

from bridge.adapters.mlflow.rest import MlflowRestClient, MlflowRestError


class _Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, Any]] = []
        self.close_after_answer = False  # like a server dropping an idle keep-alive connection
        self.answer: tuple[int, dict[str, str], bytes] = (
            404, {}, b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such experiment"}')

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Recorder

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({"method": self.command, "path": self.path,
                                 "headers": dict(self.headers.items()), "body": body})
        status, headers, payload = self.server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        if self.server.close_after_answer:
            self.close_connection = True  # no "Connection: close" header: the client learns late

    do_GET = do_POST = do_PUT = _any


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_credentials_from_mlflow_variables(recorder: _Recorder,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ana")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw:with colon")
    assert MlflowRestClient(recorder.url).get_experiment_by_name("e x") is None
    basic = base64.b64encode(b"ana:pw:with colon").decode()
    assert recorder.seen[-1]["headers"]["Authorization"] == f"Basic {basic}"
    assert recorder.seen[-1]["path"] == "/api/2.0/mlflow/experiments/get-by-name?experiment_name=e+x"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-1")
    MlflowRestClient(recorder.url + "/prefix/").get_experiment_by_name("e")
    assert recorder.seen[-1]["headers"]["Authorization"] == "Bearer tok-1"
    assert recorder.seen[-1]["path"].startswith("/prefix/api/2.0/mlflow/")


def test_no_credentials_no_header(recorder: _Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    MlflowRestClient(recorder.url).get_experiment_by_name("e")
    assert "Authorization" not in recorder.seen[-1]["headers"]


def test_closed_idle_connection_is_reopened_once(recorder: _Recorder) -> None:
    recorder.answer = (200, {"Content-Type": "application/json"}, b"{}")
    recorder.close_after_answer = True
    client = MlflowRestClient(recorder.url)
    for i in range(3):
        client.set_tag("r1", "k", i)
    sent = [json.loads(s["body"])["value"] for s in recorder.seen]
    assert sent == ["0", "1", "2"]  # each request reached the server once


def test_error_answers_keep_code_status_and_headers(recorder: _Recorder) -> None:
    recorder.answer = (429, {"Retry-After": "12"}, b"slow down")
    client = MlflowRestClient(recorder.url)
    with pytest.raises(MlflowRestError) as info:
        client.log_batch("r1", [], [], [])
    err = info.value
    assert err.http_status == 429 and err.error_code == "REQUEST_LIMIT_EXCEEDED"
    assert err.response.headers.get("retry-after") == "12"  # case-insensitive, as HTTP says
    assert "429" in str(err) and "slow down" in str(err)
    recorder.answer = (400, {}, b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad key"}')
    with pytest.raises(MlflowRestError, match="INVALID_PARAMETER_VALUE: .*bad key") as info:
        client.log_batch("r1", [], [], [])
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


def test_no_server_is_an_io_error() -> None:
    with pytest.raises(MlflowRestError) as info:
        MlflowRestClient("http://127.0.0.1:9", timeout=2).get_run("r1")
    assert info.value.error_code == "IO_ERROR" and "refused" in str(info.value).lower()


def test_non_finite_values_use_protobuf_names(recorder: _Recorder) -> None:
    from bridge.adapters.mlflow.rest import Metric

    recorder.answer = (200, {}, b"{}")
    MlflowRestClient(recorder.url).log_batch(
        "r1", [Metric("a", float("nan"), 1, 0), Metric("b", float("inf"), 1, 0),
               Metric("c", float("-inf"), 1, 0), Metric("d", 0.5, 1, 0)])
    body = json.loads(recorder.seen[-1]["body"])
    assert [m["value"] for m in body["metrics"]] == ["NaN", "Infinity", "-Infinity", 0.5]


def test_only_http_uris() -> None:
    with pytest.raises(ValueError, match="http"):
        MlflowRestClient("sqlite:///x.db")


@pytest.fixture
def tls_recorder(tmp_path: Any) -> Iterator[tuple[_Recorder, str]]:
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server = _Recorder()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.answer = (200, {}, b'{"experiment": {"experiment_id": "7", "name": "e"}}')
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, str(cert)
    server.shutdown()
    server.server_close()


def test_https_verifies_the_server_as_mlflow_settings_say(
        tls_recorder: tuple[_Recorder, str], monkeypatch: pytest.MonkeyPatch) -> None:
    server, cert = tls_recorder
    url = f"https://127.0.0.1:{server.server_address[1]}"
    for name in ("MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MlflowRestError, match="CERTIFICATE_VERIFY_FAILED") as info:
        MlflowRestClient(url, timeout=5).get_experiment_by_name("e")
    assert info.value.error_code == "IO_ERROR"  # retried by the agent until configured
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", cert)
    assert MlflowRestClient(url, timeout=5).get_experiment_by_name("e").experiment_id == "7"
    monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    assert MlflowRestClient(url, timeout=5).get_experiment_by_name("e").name == "e"


def test_a_web_page_instead_of_mlflow_is_a_clear_error(recorder: _Recorder) -> None:
    recorder.answer = (200, {"Content-Type": "text/html"}, b"<html>Sign in</html>")
    with pytest.raises(MlflowRestError, match="not JSON .*MLflow server.*Sign in") as info:
        MlflowRestClient(recorder.url).get_run("r1")
    assert info.value.error_code == "ENDPOINT_NOT_FOUND"  # retried: a configuration problem
