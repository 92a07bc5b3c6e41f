"""The Comet importer's REST path (``comet://workspace/project``) against recorded-style
REST v2 responses served on loopback.

The real comet_ml SDK runs unchanged: ``comet_ml.API`` sends its requests to
``COMET_URL_OVERRIDE``'s root (``/api/rest/v2/...`` and ``/clientlib/isAlive/ver``), which
here is a stdlib HTTP server on 127.0.0.1 answering each endpoint with JSON in the shape
Comet's server returns. Any request without a recorded answer is kept and fails the test.
Two guards we own keep everything on the machine: ``socket.create_connection`` and
``socket.socket.connect`` (what urllib3 uses) refuse non-loopback addresses.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlparse

import pytest

pytest.importorskip("comet_ml")

from bridge.importers import make_importer  # noqa: E402
from bridge.adapters.importing import ImportError_, ImportEvent, SourceRun  # noqa: E402
from bridge.adapters.comet.importer import CometImporter  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402

API_KEY = "dummy-comet-key-0123456789"
WS, PROJECT = "ws", "proj"
KEY_A = "a1" * 16  # 32 hex: Comet's experiment keys are kept as the bridge id
KEY_B = "b2" * 16
BRIDGE_ID = "c3" * 16
T_A, T_B = 1_704_164_645_000, 1_704_240_000_000


def _meta(key: str, name: str | None, start: int, end: int | None, running: bool) -> dict:
    return {"experimentKey": key, "experimentName": name, "optimizationId": None,
            "projectId": "p-1", "projectName": PROJECT, "workspaceName": WS,
            "durationMillis": (end or start) - start, "startTimeMillis": start,
            "endTimeMillis": end, "running": running, "archived": False, "throttle": False,
            "hasCrashed": False, "fileName": "train.py", "filePath": "/src/train.py"}


def _summary(name: str, value: str, ts: int, step: int | None = None) -> dict:
    return {"name": name, "valueMax": value, "valueMin": value, "valueCurrent": value,
            "timestampMax": ts, "timestampMin": ts, "timestampCurrent": ts,
            "stepMax": step, "stepMin": step, "stepCurrent": step, "editable": False}


def _point(name: str, value: str, step: int | None, ts: int, epoch: int | None = None) -> dict:
    return {"metricName": name, "metricValue": value, "timestamp": ts, "step": step,
            "epoch": epoch, "runContext": None, "offset": ts * 10}


def _asset(asset_id: str, name: str, data: bytes, ts: int, step: int | None = None,
           kind: str = "asset", metadata: dict | None = None, folder: str = "assets") -> dict:
    return {"fileName": name, "fileSize": len(data), "runContext": None, "step": step,
            "remote": False, "link": f"https://comet.invalid/{asset_id}", "compressedAssetLink":
            "", "s3Link": "", "createdAt": ts, "dir": folder, "canView": False,
            "audio": False, "video": False, "histogram": False, "image": False,
            "type": kind, "metadata": None if metadata is None else json.dumps(metadata),
            "assetId": asset_id, "tags": [], "curlDownload": "", "experimentKey": "",
            "_bytes": data}


# -- recorded-style data: two experiments sharing a name ------------------------------------

EXPERIMENTS: dict[str, dict[str, Any]] = {
    KEY_A: {  # a native experiment, finished, nested params
        "meta": _meta(KEY_A, "first", T_A, T_A + 60_000, running=False),
        "params": [_summary("lr", "0.1", T_A), _summary("model|depth", "4", T_A),
                   _summary("model|act", "relu", T_A), _summary("curr_step", "2", T_A)],
        "others": [_summary("Name", "first", T_A), _summary("hasNestedParams", "True", T_A),
                   _summary("dataset", "cifar10", T_A + 5)],
        "tags": ["baseline", "vision"],
        "metrics": {
            "loss": [_point("loss", "1.0", 0, T_A + 1000, 0),
                     _point("loss", "0.5", 1, T_A + 2000, 0),
                     _point("loss", "NaN", 2, T_A + 3000, 1)],
            "acc": [_point("acc", "0.75", None, T_A + 4000)],
            "process duration": [_point("process duration", "60.0", None, T_A + 60_000)],
        },
        "assets": [
            _asset("as-1", "weights/model.bin", b"\x00\x01weights\xff", T_A + 50_000, step=2),
            _asset("as-2", "../escape.txt", b"hostile", T_A + 50_001),
            _asset("as-3", "model.pt", b"torch-bytes", T_A + 50_002, kind="model-element",
                   folder="models/net"),
        ],
    },
    KEY_B: {  # written by bridge's Comet adapter, still running, same name as the first
        "meta": _meta(KEY_B, "first", T_B, None, running=True),
        "params": [_summary("epochs", "3", T_B)],
        "others": [_summary("Name", "first", T_B), _summary("bridge_run_id", BRIDGE_ID, T_B),
                   _summary("group", "g1", T_B), _summary("notes", "from bridge", T_B),
                   _summary("best", '{"acc": 0.9}', T_B)],
        "tags": [],
        "metrics": {"loss": [_point("loss", "2.0", 7, T_B + 1250)]},
        "assets": [
            _asset("bs-1", "ckpt/a.txt", b"A", T_B + 10,
                   metadata={"bridge_artifact": "ckpt", "artifact_type": "model"}),
            _asset("bs-2", "ckpt/sub/b.txt", b"B", T_B + 11,
                   metadata={"bridge_artifact": "ckpt", "artifact_type": "model"}),
        ],
    },
}


# -- the loopback server --------------------------------------------------------------------


@dataclass
class Seen:
    """What the server saw, for assertions after the import."""

    answered: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    escaped: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, bucket: list[str], item: str) -> None:
        with self.lock:
            bucket.append(item)


def _answer(path: str, q: dict[str, str]) -> Any:
    """The recorded JSON (or bytes) for one REST request, or None."""
    if path == "/clientlib/isAlive/ver":
        return {"version": "3.40.1"}
    if not path.startswith("/api/rest/v2/"):
        return None
    endpoint = path[len("/api/rest/v2/"):]
    if endpoint == "experiments":
        if (q.get("workspaceName"), q.get("projectName")) != (WS, PROJECT):
            return None
        return {"experiments": [e["meta"] for e in EXPERIMENTS.values()]}
    exp = EXPERIMENTS.get(q.get("experimentKey", ""))
    if exp is None:
        return None
    if endpoint == "experiment/metadata":
        return exp["meta"]
    if endpoint == "experiment/parameters":
        return {"values": exp["params"]}
    if endpoint == "experiment/log-other":
        return {"values": exp["others"]}
    if endpoint == "experiment/tags":
        return {"tags": exp["tags"]}
    if endpoint == "experiment/metrics/summary":
        return {"values": [_summary(n, pts[-1]["metricValue"], pts[-1]["timestamp"])
                           for n, pts in exp["metrics"].items()]}
    if endpoint == "experiment/metrics/get-metric":
        points = exp["metrics"].get(q.get("metricName", ""))
        return None if points is None else {"metrics": points}
    if endpoint == "experiment/asset/list" and q.get("type") == "all":
        return {"assets": [{k: v for k, v in a.items() if k != "_bytes"}
                           for a in exp["assets"]]}
    if endpoint == "experiment/asset/get-asset":
        asset = next((a for a in exp["assets"] if a["assetId"] == q.get("assetId")), None)
        return None if asset is None else asset["_bytes"]
    return None


def _handler(seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.command == "CONNECT" or not self.path.startswith("/"):
                seen.add(seen.escaped, f"{self.command} {self.path}")
                self._send(403, b"{}")
                return
            if self.headers.get("Authorization") != API_KEY:
                seen.add(seen.unanswered, f"unauthenticated {self.command} {self.path}")
                self._send(401, b'{"msg": "no api key"}')
                return
            url = urlparse(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            body = _answer(url.path, q) if self.command == "GET" else None
            if body is None:
                seen.add(seen.unanswered, f"{self.command} {self.path}")
                self._send(404, b'{"msg": "not recorded"}')
                return
            seen.add(seen.answered, url.path)
            if isinstance(body, bytes):
                self._send(200, body, "application/octet-stream")
            else:
                self._send(200, json.dumps(body).encode())

        do_GET = do_POST = do_PUT = do_CONNECT = _reply

    return Handler


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    """A recorded Comet REST server on loopback, comet_ml pointed at it, network guarded."""
    seen = Seen()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(seen))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"

    home = tmp_path / "home"
    home.mkdir()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
                 "all_proxy", "COMET_WORKSPACE", "COMET_PROJECT_NAME", "COMET_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    env = {"COMET_URL_OVERRIDE": f"{url}/clientlib/", "COMET_API_KEY": API_KEY,
           "COMET_ERROR_TRACKING_ENABLE": "false", "COMET_DISABLE_AUTO_LOGGING": "1",
           "COMET_CONFIG": str(home / ".comet.config"), "HOME": str(home),
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)

    def refuse(host: str, port: Any) -> None:
        seen.add(seen.escaped, f"socket {host}:{port}")
        raise ConnectionRefusedError(f"test guard: {host} is not loopback")

    real_create, real_connect = socket.create_connection, socket.socket.connect

    def create_loopback(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if str(address[0]) not in ("127.0.0.1", "localhost", "::1"):
            refuse(str(address[0]), address[1])
        return real_create(address, *args, **kwargs)

    def connect_loopback(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in (
                "127.0.0.1", "::1"):
            refuse(str(address[0]), address[1])
        real_connect(sock, address)

    monkeypatch.setattr(socket, "create_connection", create_loopback)
    monkeypatch.setattr(socket.socket, "connect", connect_loopback)
    try:
        yield seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _kinds(events: list[ImportEvent], kind: str) -> list[ImportEvent]:
    return [e for e in events if e.kind == kind]


def _import_all(imp: CometImporter) -> list[tuple[SourceRun, list[ImportEvent], list[Any]]]:
    """Runs with their events; artifact bytes read while the temp files still exist."""
    out = []
    for run in imp.runs():
        events, blobs = [], []
        for ev in imp.events(run):
            events.append(ev)
            if ev.kind == "artifact":
                blobs.append((ev.key, ev.artifact_type,
                              {rel: Path(p).read_bytes() for rel, p in ev.files}))
        out.append((run, events, blobs))
    return out


def test_rest_runs_and_events(server: Seen) -> None:
    imp = make_importer("comet", f"comet://{WS}/{PROJECT}")
    assert isinstance(imp, CometImporter)
    (ra, ev_a, blobs_a), (rb, ev_b, blobs_b) = _import_all(imp)

    # both experiments, although they share a name
    assert (ra.source, ra.source_id, ra.run_id, ra.project, ra.name) == (
        "comet", KEY_A, KEY_A, PROJECT, "first")
    assert (ra.status, ra.start_ms, ra.end_ms, ra.notes, ra.group) == (
        "FINISHED", T_A, T_A + 60_000, None, None)

    # params: `|`-flattened names rebuilt (hasNestedParams), values as Comet holds them
    # (strings), comet_ml's curr_step dropped
    assert {e.key: e.payload for e in _kinds(ev_a, "param")} == {
        "lr": "0.1", "model": {"depth": "4", "act": "relu"}}
    assert all(e.ts_ms == T_A for e in _kinds(ev_a, "param"))
    # metrics: one series at a time, own step and time; NaN decoded; epoch and Comet's
    # `process duration` dropped
    points = [(e.key, e.step, e.ts_ms, e.value) for e in _kinds(ev_a, "metric")]
    assert points[:2] == [("loss", 0, T_A + 1000, 1.0), ("loss", 1, T_A + 2000, 0.5)]
    assert points[2][:3] == ("loss", 2, T_A + 3000) and math.isnan(points[2][3])
    assert points[3:] == [("acc", None, T_A + 4000, 0.75)]
    # others -> summary (Comet's own Name/hasNestedParams not repeated), tags -> tags
    assert {e.key: e.payload for e in _kinds(ev_a, "summary")} == {"dataset": "cifar10"}
    assert [(e.key, e.payload) for e in _kinds(ev_a, "tag")] == [
        ("baseline", ""), ("vision", "")]
    # assets -> artifacts with their bytes; the climbing name refused with a warning
    assert blobs_a == [("weights/model.bin", "file", {"weights/model.bin": b"\x00\x01weights\xff"}),
                       ("net", "model", {"model.pt": b"torch-bytes"})]
    assert [e.step for e in _kinds(ev_a, "artifact")] == [2, None]
    assert any("../escape.txt" in w for w in imp.warnings)

    # a run bridge wrote: its bridge id, group, notes, JSON others, grouped artifact
    assert (rb.source_id, rb.run_id, rb.name, rb.group, rb.notes) == (
        BRIDGE_ID, BRIDGE_ID, "first", "g1", "from bridge")
    assert (rb.status, rb.start_ms, rb.end_ms) == ("RUNNING", T_B, None)
    assert {e.key: e.payload for e in _kinds(ev_b, "param")} == {"epochs": "3"}
    assert {e.key: e.payload for e in _kinds(ev_b, "summary")} == {"best": {"acc": 0.9}}
    assert [(e.key, e.step, e.ts_ms, e.value) for e in _kinds(ev_b, "metric")] == [
        ("loss", 7, T_B + 1250, 2.0)]
    assert blobs_b == [("ckpt", "model", {"a.txt": b"A", "sub/b.txt": b"B"})]

    assert server.unanswered == []
    assert server.escaped == []
    assert server.answered.count("/api/rest/v2/experiment/asset/get-asset") == 5
    assert server.answered.count("/api/rest/v2/experiment/metrics/get-metric") == 3


def test_rest_import_into_spool_once(server: Seen, tmp_path: Path) -> None:
    import bridge

    spool = tmp_path / "spool"
    first = import_runs(CometImporter(f"comet://{WS}/{PROJECT}"), spool)
    assert len(first) == 2 and not any(r.skipped for r in first)
    data = bridge.data(run=KEY_A, dir=spool)
    assert data is not None
    again = import_runs(CometImporter(f"comet://{WS}/{PROJECT}"), spool)
    assert len(again) == 2 and all(r.skipped for r in again)  # nothing added twice
    assert server.unanswered == [] and server.escaped == []


def test_rest_location_and_key_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImportError_, match="comet://workspace/project"):
        CometImporter("comet://only-workspace")
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    with pytest.raises(ImportError_, match="COMET_API_KEY"):
        list(CometImporter(f"comet://{WS}/{PROJECT}").runs())
