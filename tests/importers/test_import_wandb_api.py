"""The W&B importer's public-API path (``wandb://entity/project``) against recorded-style
GraphQL responses served on loopback.

The real wandb SDK runs unchanged: ``wandb.Api`` and ``run.scan_history`` send their
GraphQL through the SDK's ``wandb-core`` service, which talks to ``WANDB_BASE_URL``. That
URL is a stdlib HTTP server on 127.0.0.1 that answers each operation the SDK sends with
canned JSON in the shape W&B's server returns. Anything else the SDK asks is recorded as
unanswered and fails the test. Two guards we own check that nothing leaves the machine:
Python's ``socket.create_connection`` refuses non-loopback addresses, and the Go service
gets ``HTTP(S)_PROXY`` pointing at the same server, so a request to any other host
arrives there as a proxy request and is refused and recorded.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

wandb = pytest.importorskip("wandb")

from bridge.importers import make_importer  # noqa: E402
from bridge.adapters.importing import ImportEvent, SourceRun  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.adapters.wandb.importer import WandbImporter  # noqa: E402

ENTITY, PROJECT = "ent", "proj"
CREATED_1 = "2024-01-02T03:04:05Z"  # 1704164645000 ms
T1 = 1_704_164_645_000
CREATED_2 = "2024-01-03T00:00:00Z"
T2 = 1_704_240_000_000

# -- recorded-style data: what W&B's GraphQL returns for two runs --------------------------

RUNS: dict[str, dict[str, Any]] = {
    "abc12345": {  # a native run, finished
        "node": {
            "id": "UnVuOnYxOmFiYzEyMzQ1OnByb2o6ZW50", "projectId": "7", "tags": ["baseline"],
            "name": "abc12345", "displayName": "first run", "sweepName": None,
            "state": "finished", "group": "g1", "jobType": None, "commit": None,
            "readOnly": False, "createdAt": CREATED_1, "heartbeatAt": "2024-01-02T03:05:05Z",
            "description": None, "notes": "hello", "historyLineCount": 3,
            "user": {"name": "u", "username": "u"},
        },
        "config": {"lr": {"desc": None, "value": 0.1},
                   "model": {"desc": None, "value": {"depth": 4}},
                   "_wandb": {"desc": None, "value": {"cli_version": "0.31.0"}}},
        "summary": {"loss": 0.25, "best": 0.2, "eval": {"f1": 0.9}, "_runtime": 60.5, "_step": 2,
                    "_timestamp": 1704164648.5, "_wandb": {"runtime": 60}},
        "history": [
            {"_step": 0, "_runtime": 1.5, "_timestamp": 1704164646.5, "loss": 1.0, "acc": 0.1},
            {"_step": 1, "_runtime": 2.5, "_timestamp": 1704164647.5, "loss": 0.5,
             "phase": "warmup"},
            {"_step": 2, "_runtime": 3.5, "_timestamp": 1704164648.5, "loss": 0.25,
             "grad": {"norm": 3.0}},
        ],
    },
    "def67890": {  # a run bridge's adapter wrote, still running
        "node": {
            "id": "UnVuOnYxOmRlZjY3ODkwOnByb2o6ZW50", "projectId": "7", "tags": ["lr:0.1"],
            "name": "def67890", "displayName": "second", "sweepName": None,
            "state": "running", "group": None, "jobType": None, "commit": None,
            "readOnly": False, "createdAt": CREATED_2, "heartbeatAt": CREATED_2,
            "description": None, "notes": None, "historyLineCount": 1,
            "user": {"name": "u", "username": "u"},
        },
        "config": {"epochs": {"desc": None, "value": 3}},
        "summary": {"loss": 2.0, "bridge/step": 7, "_step": 0},
        "history": [
            {"_step": 0, "_timestamp": 1704240001.25, "bridge/step": 7, "loss": 2.0},
        ],
    },
}


# -- the loopback server --------------------------------------------------------------------


@dataclass
class Seen:
    """What the server saw, for assertions after the import."""

    operations: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)  # requests with no canned answer
    escaped: list[str] = field(default_factory=list)  # proxy requests for other hosts
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, bucket: list[str], item: str) -> None:
        with self.lock:
            bucket.append(item)


def _operation(query: str) -> str | None:
    m = re.search(r"\b(?:query|mutation)\s+(\w+)", query)
    return m.group(1) if m else None


def _answer(op: str | None, v: dict[str, Any]) -> dict[str, Any] | None:
    """The ``data`` of the recorded response for one GraphQL operation, or None."""
    if op == "Viewer":
        return {"viewer": {"id": "VXNlcjox", "entity": ENTITY, "username": "u",
                           "email": "u@example.invalid", "flags": "{}",
                           "teams": {"edges": []}}}
    if op == "GetDefaultEntity":
        return {"viewer": {"id": "VXNlcjox", "entity": ENTITY}}
    if v.get("entity") != ENTITY or v.get("project") != PROJECT:
        return None
    if op == "Runs":  # one run per page, cursor = the run id
        names = list(RUNS)
        start = names.index(v["cursor"]) + 1 if v.get("cursor") else 0
        page = names[start:start + int(v.get("perPage") or 50)]
        edges = [{"node": RUNS[n]["node"] | {"projectId": "7"}, "cursor": n} for n in page]
        return {"project": {"internalId": "7", "runCount": len(names), "readOnly": False,
                            "runs": {"edges": edges, "pageInfo": {
                                "endCursor": page[-1] if page else None,
                                "hasNextPage": start + len(page) < len(names)}}}}
    rec = RUNS.get(v.get("name") or v.get("runName") or v.get("run") or "")
    if rec is None:
        return None
    last_step = max((r["_step"] for r in rec["history"]), default=-1)
    if op == "Run":
        full = rec["node"] | {"config": json.dumps(rec["config"]),
                              "summaryMetrics": json.dumps(rec["summary"]),
                              "systemMetrics": "{}",
                              "historyKeys": {"lastStep": last_step, "keys": {}}}
        return {"project": {"run": full}}
    if op == "RunHistoryKeys":
        return {"project": {"run": {"historyKeys": {"lastStep": last_step, "keys": {}}}}}
    if op == "RunParquetHistory":  # no exported parquet: wandb-core pages HistoryPage
        return {"project": {"run": {"parquetHistory": {"parquetUrls": [], "liveData": []}}}}
    if op == "HistoryPage":
        rows = [json.dumps(r) for r in rec["history"]
                if v["minStep"] <= r["_step"] < v["maxStep"]]
        return {"project": {"run": {"history": rows}}}
    return None


def _handler(seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, code: int, body: bytes = b"", ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _escaped(self) -> bool:
            # A proxied request names another host: CONNECT or an absolute URI.
            if self.command == "CONNECT" or not self.path.startswith("/"):
                seen.add(seen.escaped, f"{self.command} {self.path}")
                self._send(403)
                return True
            return False

        def do_CONNECT(self) -> None:
            self._escaped()

        def do_GET(self) -> None:
            if not self._escaped():
                seen.add(seen.unanswered, f"GET {self.path}")
                self._send(404)

        def do_POST(self) -> None:
            if self._escaped():
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.startswith("/sdk/otel/"):
                # wandb-core's own telemetry goes to the base URL; accepted, not needed.
                self._send(200, b"", "application/x-protobuf")
                return
            if self.path != "/graphql":
                seen.add(seen.unanswered, f"POST {self.path}")
                self._send(404)
                return
            req = json.loads(body)
            op = _operation(req.get("query", ""))
            data = _answer(op, req.get("variables") or {})
            if data is None:
                seen.add(seen.unanswered, f"graphql {op}: {json.dumps(req)[:500]}")
                self._send(400, json.dumps({"errors": [{"message": "not recorded"}]}).encode())
                return
            seen.add(seen.operations, str(op))
            self._send(200, json.dumps({"data": data}).encode())

    return Handler


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Seen]]:
    """A recorded W&B server on loopback, the SDK pointed at it, and both network guards."""
    seen = Seen()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(seen))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"

    for name in ("WANDB_MODE", "WANDB_SERVICE", "WANDB_ENTITY", "WANDB_PROJECT",
                 "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    env = {"WANDB_BASE_URL": url, "WANDB_API_KEY": "0123456789abcdef" * 2 + "01234567",
           "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false",
           "WANDB_DIR": str(tmp_path / "wdir"), "WANDB_CONFIG_DIR": str(tmp_path / "cfg"),
           "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_DATA_DIR": str(tmp_path / "data"),
           "WANDB_ARTIFACT_DIR": str(tmp_path / "arts"), "HOME": str(tmp_path / "home"),
           "NETRC": str(tmp_path / "home" / ".netrc"),
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = url  # any other host reaches our server as a proxy request
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for d in ("wdir", "cfg", "cache", "data", "arts", "home"):
        (tmp_path / d).mkdir()

    real_connect = socket.create_connection

    def loopback_only(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        host = str(address[0])
        if host not in ("127.0.0.1", "localhost", "::1"):
            seen.add(seen.escaped, f"socket {host}:{address[1]}")
            raise ConnectionRefusedError(f"test guard: {host} is not loopback")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", loopback_only)
    # A fresh wandb singleton, so its wandb-core service starts with this environment.
    wandb.teardown()
    try:
        yield url, seen
    finally:
        wandb.teardown()  # stop wandb-core before its server goes away
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _kinds(events: list[ImportEvent], kind: str) -> list[ImportEvent]:
    return [e for e in events if e.kind == kind]


def _import_all(imp: WandbImporter) -> list[tuple[SourceRun, list[ImportEvent]]]:
    return [(run, list(imp.events(run))) for run in imp.runs()]


def test_public_api_runs_and_events(server: tuple[str, Seen]) -> None:
    _url, seen = server
    imp = make_importer("wandb", f"wandb://{ENTITY}/{PROJECT}", per_page=1)
    assert isinstance(imp, WandbImporter)
    got = _import_all(imp)

    (r1, ev1), (r2, ev2) = got
    assert (r1.source, r1.source_id, r1.project, r1.name, r1.notes, r1.group) == (
        "wandb", "abc12345", PROJECT, "first run", "hello", "g1")
    assert (r1.status, r1.start_ms, r1.end_ms) == ("FINISHED", T1, T1 + 60_500)
    assert (r2.source_id, r2.name, r2.notes, r2.group, r2.status, r2.start_ms, r2.end_ms) == (
        "def67890", "second", None, None, "RUNNING", T2, None)

    # config -> params (wandb's own `_wandb` dropped; nested values kept)
    assert {e.key: e.payload for e in _kinds(ev1, "param")} == {"lr": 0.1,
                                                               "model": {"depth": 4}}
    assert all(e.ts_ms == T1 for e in _kinds(ev1, "param"))
    # labels -> tags
    assert [(e.key, e.payload) for e in _kinds(ev1, "tag")] == [("baseline", "")]
    # history -> metric points with their own step and time (s -> ms); rows come in step
    # order, keys within a row in no fixed order (wandb-core re-encodes them)
    points = [(e.step, e.key, e.ts_ms, e.value) for e in _kinds(ev1, "metric")]
    assert [p[0] for p in points] == sorted(p[0] for p in points)
    assert sorted(points) == [
        (0, "acc", 1704164646500, 0.1), (0, "loss", 1704164646500, 1.0),
        (1, "loss", 1704164647500, 0.5),
        (2, "grad.norm", 1704164648500, 3.0), (2, "loss", 1704164648500, 0.25)]
    assert [(e.key, e.step, e.payload) for e in _kinds(ev1, "event")] == [
        ("phase", 1, {"value": "warmup"})]
    # summary -> summary: no `_` keys, the automatic last value of `loss` not repeated
    summary = {e.key: e.payload for e in _kinds(ev1, "summary")}
    assert summary == {"best": 0.2, "eval": {"f1": 0.9}}
    assert type(summary["eval"]) is dict  # plain JSON, not the SDK's live summary object

    # a run bridge wrote: `bridge/step` is the step, `key:value` labels are tags
    assert {e.key: e.payload for e in _kinds(ev2, "param")} == {"epochs": 3}
    assert [(e.key, e.payload) for e in _kinds(ev2, "tag")] == [("lr", "0.1")]
    assert [(e.key, e.step, e.ts_ms, e.value) for e in _kinds(ev2, "metric")] == [
        ("loss", 7, 1704240001250, 2.0)]
    assert _kinds(ev2, "summary") == []

    # every request was answered from the recording, nothing left loopback
    assert seen.unanswered == []
    assert seen.escaped == []
    assert {"Viewer", "Runs", "Run", "RunHistoryKeys", "RunParquetHistory",
            "HistoryPage"} <= set(seen.operations)
    assert seen.operations.count("Runs") == 2  # per_page=1: two pages, cursor followed
    assert seen.operations.count("HistoryPage") == 4  # page_size=1: 3 rows + 1 row


def test_public_api_import_into_spool(server: tuple[str, Seen], tmp_path: Path) -> None:
    _url, seen = server
    imp = WandbImporter(f"wandb://{ENTITY}/{PROJECT}")
    first = import_runs(imp, tmp_path / "spool")
    assert len(first) == 2 and not any(r.skipped for r in first)
    again = import_runs(WandbImporter(f"wandb://{ENTITY}/{PROJECT}"), tmp_path / "spool")
    assert all(r.skipped for r in again)  # the same runs are not imported twice
    assert seen.unanswered == [] and seen.escaped == []


def test_public_api_location_checked() -> None:
    with pytest.raises(Exception, match="wandb://entity/project"):
        list(WandbImporter("wandb://only-entity").runs())
