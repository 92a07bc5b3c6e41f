"""The MLflow adapter against a real ``mlflow server`` and the embedded sqlite store.

Everything is read back through ``MlflowClient``: what the adapter wrote must be what a
user of MLflow sees.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import pytest

mlflow = pytest.importorskip("mlflow")

from bridge.adapters.base import AdapterError, Event, Outcome, RunInfo  # noqa: E402
from bridge.adapters.mlflow import MlflowAdapter, RetryableError  # noqa: E402

T0 = 1_700_000_000_000
_seq = itertools.count(1)


# -- helpers -------------------------------------------------------------------------------
def ev(kind: str, key: str | None, payload: Any = None, *, step: int | None = None,
       value: float | None = None, ts: int | None = None, run_id: str = "",
       file_id: str = "f1", node: str = "") -> Event:  # fmt: skip
    seq = next(_seq)
    return Event(file_id, seq, run_id, kind, key, step, T0 + seq if ts is None else ts,
                 value=value, payload=payload, node=node)  # fmt: skip


def metric(key: str, step: int | None, value: float, ts: int | None = None) -> Event:
    return ev("metric", key, step=step, value=value, ts=ts)


def put_blob(root: Path, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    path = root / sha[:2] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"sha256": sha, "size": len(data)}


def new_run(tmp_path: Path, **kw: Any) -> RunInfo:
    base = dict(
        run_id=uuid.uuid4().hex, project="bridge-tests", name="resnet-1", notes="first try",
        group="sweep-a", start_ms=T0, blob_root=tmp_path / "blobs",
    )  # fmt: skip
    base.update(kw)
    return RunInfo(**base)


def history(client: Any, remote: str, key: str) -> list[tuple[int, int, float]]:
    points = client.get_metric_history(remote, key)
    return sorted((m.step, m.timestamp, m.value) for m in points)


def artifact_bytes(client: Any, remote: str, path: str, dst: Path) -> bytes:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(remote, path, str(dst))).read_bytes()


@dataclass
class Target:
    """Where an adapter delivers, and a client to read it back."""

    kind: str
    options: dict[str, Any]
    client: Any

    def adapter(self, **extra: Any) -> MlflowAdapter:
        return MlflowAdapter(**{**self.options, **extra})


@pytest.fixture(autouse=True)
def _fast_failing_http(monkeypatch: pytest.MonkeyPatch) -> None:
    # A down server must fail in milliseconds, a stalled one within a few seconds.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded-spool")


@pytest.fixture(params=["server", "server-sdk", "embedded"])
def target(request: pytest.FixtureRequest, embedded_dir: Path, tmp_path: Path) -> Target:
    """"server": bridge's REST client; "server-sdk": ``MlflowClient`` (``client="mlflow"``)."""
    if request.param.startswith("server"):
        server = request.getfixturevalue("mlflow_server")
        options = {"tracking_uri": server.url, "spool_dir": str(tmp_path / "spool")}
        if request.param == "server-sdk":
            options["client"] = "mlflow"
        return Target(request.param, options, mlflow.MlflowClient(server.url))
    options = {"spool_dir": str(embedded_dir)}
    return Target("embedded", options, mlflow.MlflowClient(MlflowAdapter(**options).tracking_uri))


@pytest.fixture
def server_target(mlflow_server: Any, tmp_path: Path) -> Target:
    options = {"tracking_uri": mlflow_server.url, "spool_dir": str(tmp_path / "spool")}
    return Target("server", options, mlflow.MlflowClient(mlflow_server.url))


# -- configuration ---------------------------------------------------------------------------
def test_import_does_not_import_mlflow() -> None:
    code = "import sys, bridge.adapters.mlflow; assert 'mlflow' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_server_is_reached_without_importing_mlflow(tmp_path: Path) -> None:
    code = ("import sys; from bridge.adapters.mlflow import MlflowAdapter; "
            "a = MlflowAdapter(tracking_uri='http://127.0.0.1:9', spool_dir=sys.argv[1]); "
            "assert a.client_kind == 'rest'; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'mlflow'], 'imported'")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    with pytest.raises(AdapterError, match="client"):
        MlflowAdapter(spool_dir=str(tmp_path), client="grpc")
    with pytest.raises(AdapterError, match="http"):
        MlflowAdapter(spool_dir=str(tmp_path), client="rest")


def test_unknown_option_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="unknown mlflow option"):
        MlflowAdapter(spool_dir=str(tmp_path), trackin_uri="http://x")
    with pytest.raises(AdapterError, match="tracking_uri"):
        MlflowAdapter()


def test_embedded_store_lives_in_the_spool(embedded_dir: Path, tmp_path: Path) -> None:
    adapter = MlflowAdapter(spool_dir=str(embedded_dir))
    assert adapter.tracking_uri == f"sqlite:///{embedded_dir.resolve() / 'mlflow.db'}"
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    blob = put_blob(run.blob_root, b"weights")
    art = ev("artifact", "ckpt", {"name": "ckpt", "type": "model", "is_dir": False, "source": "x",
                                  "files": [{"path": "w.bin", **blob}]})  # fmt: skip
    assert adapter.export(run, [art]).outcome is Outcome.SUCCESS
    stored = list((embedded_dir / "mlartifacts").rglob("w.bin"))
    assert len(stored) == 1 and stored[0].read_bytes() == b"weights"
    assert remote in str(stored[0])


def test_artifact_store_the_server_does_not_proxy(server_target: Target, tmp_path: Path) -> None:
    """An experiment whose artifacts live at a path (not ``mlflow-artifacts:``): the REST
    client hands those files to ``MlflowClient``, which writes them there."""
    store = tmp_path / "shared-artifacts"
    name = f"direct-{uuid.uuid4().hex[:8]}"
    server_target.client.create_experiment(name, artifact_location=store.as_uri())
    adapter = server_target.adapter(experiment=name)
    assert adapter.client_kind == "rest"
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    blob = put_blob(run.blob_root, b"direct bytes")
    batch = [ev("artifact", "ckpt", {"name": "ckpt", "type": "model", "is_dir": False,
                                     "source": "x", "files": [{"path": "w.bin", **blob}]}),
             ev("text", "notes.txt", "plain"), ev("event", "done", {"ok": True})]
    assert adapter.export(run, batch).outcome is Outcome.SUCCESS
    assert adapter.export(run, [ev("event", "again", {})]).outcome is Outcome.SUCCESS
    stored = {p.relative_to(store).as_posix().split("/", 1)[-1]: p for p in store.rglob("*")
              if p.is_file()}
    assert stored["artifacts/ckpt/w.bin"].read_bytes() == b"direct bytes"
    assert stored["artifacts/notes.txt"].read_text() == "plain"
    events = stored["artifacts/bridge/events.jsonl"].read_text().splitlines()
    assert [json.loads(x)["name"] for x in events] == ["done", "again"]
    assert remote in str(stored["artifacts/notes.txt"])


# -- round trip ------------------------------------------------------------------------------
def test_everything_round_trips(target: Target, tmp_path: Path) -> None:
    adapter = target.adapter()
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    assert run.state["mlflow_run_id"] == remote
    blobs = tmp_path / "blobs"
    one = put_blob(blobs, b"\x00\x01 model bytes")
    a, b = put_blob(blobs, b"alpha\n"), put_blob(blobs, b"beta\n" * 1000)
    batch = [
        metric("loss", 0, 1.5, ts=T0 + 10),
        metric("loss", 1, 0.75, ts=T0 + 20),
        metric("loss", 5, float("nan"), ts=T0 + 30),
        metric("acc", None, 0.5, ts=T0 + 40),
        metric("big", 2, float("inf"), ts=T0 + 50),
        metric("system/gpu.0.util", 3, 97.0, ts=T0 + 60),
        ev("param", "optimizer", {"name": "adam", "lr": 0.001, "betas": [0.9, 0.99], "sched": {"warmup": 10}}),
        ev("param", "epochs", 10),
        ev("param", "flag", True),
        ev("tag", "team", "vision"),
        ev("summary", "best_acc", 0.93),
        ev("summary", "best", {"epoch": 4}),
        ev("system", "system", {"hostname": "node-7", "python": "3.12.1", "gpus": [{"name": "A100"}]}),
        ev("text", "notes/readme.txt", "hello text"),
        ev("dict", "config.json", {"a": 1, "b": [1, 2]}),
        ev("dict", "cfg/model.yaml", {"layers": [64, 32], "act": "relu"}),
        ev("text", "notes/read me ü.txt", "héllo ✓"),
        ev("event", "eval_done", {"split": "val"}, step=3),
        ev("note", "notes", "updated description"),
        ev("artifact", "model", {"name": "model", "type": "model", "is_dir": False, "source": "/x/model.pt",
                                 "files": [{"path": "model.pt", **one}]}),
        ev("artifact", "data", {"name": "data", "type": "dataset", "is_dir": True, "source": "/x/data",
                                "files": [{"path": "a.txt", **a}, {"path": "sub/b.txt", **b}]}),
    ]  # fmt: skip
    result = adapter.export(run, batch)
    assert result.outcome is Outcome.SUCCESS and not result.rejected, result
    adapter.close_run(run, "FINISHED", T0 + 99_000)

    c = target.client
    got = c.get_run(remote)
    assert got.info.status == "FINISHED" and got.info.end_time == T0 + 99_000
    assert got.info.start_time == T0 and got.info.run_name == "resnet-1"
    assert got.data.params == {
        "optimizer.name": "adam", "optimizer.lr": "0.001", "optimizer.betas": "[0.9, 0.99]",
        "optimizer.sched.warmup": "10", "epochs": "10", "flag": "True",
    }  # fmt: skip
    tags = got.data.tags
    assert tags["bridge.run_id"] == run.run_id and tags["bridge.group"] == "sweep-a"
    assert tags["team"] == "vision" and tags["mlflow.note.content"] == "updated description"
    assert tags["summary.best_acc"] == "0.93" and json.loads(tags["summary.best"]) == {"epoch": 4}
    assert tags["bridge.system.hostname"] == "node-7" and tags["bridge.system.python"] == "3.12.1"
    assert "bridge.system.gpus" not in tags

    assert history(c, remote, "loss")[:2] == [(0, T0 + 10, 1.5), (1, T0 + 20, 0.75)]
    nan_point = history(c, remote, "loss")[2]
    assert nan_point[:2] == (5, T0 + 30) and math.isnan(nan_point[2])
    assert history(c, remote, "acc") == [(0, T0 + 40, 0.5)]  # no step -> step 0
    assert history(c, remote, "big") == [(2, T0 + 50, 1.7976931348623157e308)]  # inf is clamped
    assert history(c, remote, "system/gpu.0.util") == [(3, T0 + 60, 97.0)]

    dl = tmp_path / "dl"
    assert artifact_bytes(c, remote, "model/model.pt", dl / "1") == b"\x00\x01 model bytes"
    assert artifact_bytes(c, remote, "data/a.txt", dl / "2") == b"alpha\n"
    assert artifact_bytes(c, remote, "data/sub/b.txt", dl / "3") == b"beta\n" * 1000
    assert artifact_bytes(c, remote, "notes/readme.txt", dl / "4") == b"hello text"
    assert json.loads(artifact_bytes(c, remote, "config.json", dl / "5")) == {"a": 1, "b": [1, 2]}
    yaml = pytest.importorskip("yaml")
    model = yaml.safe_load(artifact_bytes(c, remote, "cfg/model.yaml", dl / "8"))
    assert model == {"layers": [64, 32], "act": "relu"}
    assert artifact_bytes(c, remote, "notes/read me ü.txt", dl / "9").decode() == "héllo ✓"
    system = json.loads(artifact_bytes(c, remote, "bridge/system.json", dl / "6"))
    assert system["gpus"] == [{"name": "A100"}]
    lines = artifact_bytes(c, remote, "bridge/events.jsonl", dl / "7").decode().splitlines()
    assert [json.loads(x)["name"] for x in lines] == ["eval_done"]
    assert json.loads(lines[0])["payload"] == {"split": "val"} and json.loads(lines[0])["step"] == 3


# -- identity ---------------------------------------------------------------------------------
def test_open_run_is_idempotent_across_instances(target: Target, tmp_path: Path) -> None:
    run = new_run(tmp_path)
    first = target.adapter().open_run(run)
    assert target.adapter().open_run(run) == first  # same instance state not needed
    second = target.adapter()
    assert second.open_run(replace(run, state={})) == first  # found by the bridge.run_id tag
    assert second.open_run(replace(run, remote_id=first, state={})) == first
    assert second.open_run(replace(run, remote_id="0" * 32, state={})) == first  # stale id
    exp = target.client.get_experiment_by_name("bridge-tests")
    found = target.client.search_runs([exp.experiment_id], f"tags.`bridge.run_id` = '{run.run_id}'")
    assert [r.info.run_id for r in found] == [first]


def test_experiment_option_and_later_session_continues_the_run(target: Target, tmp_path: Path) -> None:
    run = new_run(tmp_path)
    adapter = target.adapter(experiment=f"exp-{run.run_id[:8]}")
    remote = adapter.open_run(run)
    adapter.export(run, [metric("x", 0, 1.0, ts=T0)])
    adapter.shutdown()
    later = target.adapter(experiment=f"exp-{run.run_id[:8]}")  # a new sync session
    assert later.open_run(replace(run, notes="changed", state={})) == remote
    assert later.export(run, [metric("x", 1, 2.0, ts=T0 + 1)]).outcome is Outcome.SUCCESS
    got = target.client.get_run(remote)
    assert target.client.get_experiment(got.info.experiment_id).name == f"exp-{run.run_id[:8]}"
    assert got.data.tags["mlflow.note.content"] == "changed"
    assert history(target.client, remote, "x") == [(0, T0, 1.0), (1, T0 + 1, 2.0)]


def test_deleted_run_is_a_permanent_open_error(target: Target, tmp_path: Path) -> None:
    run = new_run(tmp_path)
    remote = target.adapter().open_run(run)
    target.client.delete_run(remote)
    with pytest.raises(AdapterError, match="deleted") as info:
        target.adapter().open_run(replace(run, state={}))
    assert not isinstance(info.value, RetryableError)


# -- delivery semantics -------------------------------------------------------------------------
def test_replayed_batch_creates_no_duplicates(target: Target, tmp_path: Path) -> None:
    adapter = target.adapter()
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    batch = [metric("loss", s, 1.0 / (s + 1), ts=T0 + s) for s in range(50)]
    batch += [metric("nan", 1, float("nan"), ts=T0), metric("inf", 1, float("-inf"), ts=T0)]
    batch += [ev("param", "lr", 0.1), ev("tag", "t", "v"), ev("event", "ckpt", {"n": 1})]
    for _ in range(3):
        assert adapter.export(run, batch).outcome is Outcome.SUCCESS
    c = target.client
    assert len(c.get_metric_history(remote, "loss")) == 50
    assert len(c.get_metric_history(remote, "nan")) == 1
    assert len(c.get_metric_history(remote, "inf")) == 1
    lines = artifact_bytes(c, remote, "bridge/events.jsonl", tmp_path / "dl").decode().splitlines()
    assert len(lines) == 1
    # A later batch appends to the event log, in time order.
    adapter.export(run, [ev("event", "ckpt", {"n": 2})])
    lines = artifact_bytes(c, remote, "bridge/events.jsonl", tmp_path / "dl2").decode().splitlines()
    assert [json.loads(x)["payload"]["n"] for x in lines] == [1, 2]


def test_changed_param_is_rejected_and_the_rest_arrives(target: Target, tmp_path: Path) -> None:
    adapter = target.adapter()
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    assert adapter.export(run, [ev("param", "lr", 0.1)]).outcome is Outcome.SUCCESS
    changed = ev("param", "lr", 0.2)
    same = ev("param", "lr", 0.1)
    batch = [metric("loss", s, float(s), ts=T0 + s) for s in range(20)]
    batch += [changed, same, ev("param", "bs", 64), ev("tag", "k", "v")]
    result = adapter.export(run, batch)
    assert result.outcome is Outcome.SUCCESS
    assert set(result.rejected) == {changed.uid}
    assert "Changing param values is not allowed" in result.rejected[changed.uid]
    assert "INVALID_PARAMETER_VALUE" in result.rejected[changed.uid]
    got = target.client.get_run(remote)
    assert got.data.params == {"lr": "0.1", "bs": "64"} and got.data.tags["k"] == "v"
    assert len(target.client.get_metric_history(remote, "loss")) == 20


def test_same_key_twice_in_one_batch(target: Target, tmp_path: Path) -> None:
    adapter = target.adapter()
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    first, again, other = ev("param", "p", 1), ev("param", "p", 1), ev("param", "p", 2)
    batch = [first, ev("tag", "t", "old"), again, other, ev("tag", "t", "new")]
    result = adapter.export(run, batch)
    assert set(result.rejected) == {other.uid}
    got = target.client.get_run(remote)
    assert got.data.params["p"] == "1" and got.data.tags["t"] == "new"


def test_more_than_100_params_and_tags_in_one_batch(target: Target, tmp_path: Path) -> None:
    adapter = target.adapter()
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    batch = [ev("param", f"p{i:03d}", i) for i in range(250)]
    batch += [ev("tag", f"t{i:03d}", str(i)) for i in range(150)]
    batch += [metric("m", s, float(s), ts=T0 + s) for s in range(600)]
    result = adapter.export(run, batch)
    assert result.outcome is Outcome.SUCCESS and not result.rejected
    got = target.client.get_run(remote)
    assert len(got.data.params) == 250 and got.data.params["p249"] == "249"
    assert sum(k.startswith("t") for k in got.data.tags) == 150
    assert len(target.client.get_metric_history(remote, "m")) == 600


def test_long_param_is_truncated_visibly(target: Target, tmp_path: Path) -> None:
    adapter = target.adapter()
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    value = "".join(str(i % 10) for i in range(7000))
    result = adapter.export(run, [ev("param", "prompt", value)])
    assert result.outcome is Outcome.SUCCESS and not result.rejected
    assert adapter.export(run, [ev("param", "prompt", value)]).outcome is Outcome.SUCCESS  # replay
    got = target.client.get_run(remote)
    assert got.data.params["prompt"] == value[:6000]
    assert "7000 characters" in got.data.tags["bridge.param_truncated.prompt"]
    full = artifact_bytes(target.client, remote, "bridge/params/prompt.txt", tmp_path / "dl")
    assert full.decode() == value
    long_tag = "t" * 9000
    assert adapter.export(run, [ev("tag", "log", long_tag)]).outcome is Outcome.SUCCESS
    got = target.client.get_run(remote)
    assert got.data.tags["log"] == long_tag[:8000]
    assert "9000 characters" in got.data.tags["bridge.tag_truncated.log"]
    full = artifact_bytes(target.client, remote, "bridge/tags/log.txt", tmp_path / "dl2")
    assert full.decode() == long_tag


def test_missing_blob_is_rejected_others_delivered(target: Target, tmp_path: Path) -> None:
    adapter = target.adapter()
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    ghost = ev("artifact", "ghost", {"name": "ghost", "type": "file", "is_dir": False, "source": "",
                                     "files": [{"path": "g.bin", "sha256": "ab" * 32, "size": 1}]})  # fmt: skip
    blob = put_blob(run.blob_root, b"x")
    escape = ev("artifact", "esc", {"name": "esc", "type": "file", "is_dir": True, "source": "",
                                    "files": [{"path": "../../etc/x", **blob}]})  # fmt: skip
    result = adapter.export(run, [ghost, escape, metric("m", 0, 1.0)])
    assert result.outcome is Outcome.SUCCESS and "missing" in result.rejected[ghost.uid]
    assert "unsafe file path" in result.rejected[escape.uid]
    assert len(target.client.get_metric_history(remote, "m")) == 1


# -- faults (real server) -----------------------------------------------------------------------
def test_server_down_is_retry_fast_then_delivered(
    mlflow_server: Any, server_target: Target, tmp_path: Path
) -> None:
    adapter = server_target.adapter()
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    batch = [metric("m", s, float(s), ts=T0 + s) for s in range(10)] + [ev("param", "p", 1)]
    mlflow_server.stop()
    try:
        t0 = time.monotonic()
        result = adapter.export(run, batch)
        assert result.outcome is Outcome.RETRY and time.monotonic() - t0 < 5
        assert "Failed to establish a new connection" in result.reason or "refused" in result.reason
        with pytest.raises(RetryableError):
            server_target.adapter().open_run(replace(run, state={}))
        with pytest.raises(RetryableError):
            adapter.close_run(run, "FINISHED", T0 + 5)
    finally:
        mlflow_server.start()
    assert adapter.export(run, batch).outcome is Outcome.SUCCESS
    adapter.close_run(run, "FAILED", T0 + 5)
    got = server_target.client.get_run(remote)
    assert got.info.status == "FAILED" and got.data.params == {"p": "1"}
    assert len(server_target.client.get_metric_history(remote, "m")) == 10


@pytest.fixture
def proxied(fault_proxy: Any, tmp_path: Path) -> Iterator[tuple[Any, MlflowAdapter, RunInfo, str]]:
    adapter = MlflowAdapter(tracking_uri=fault_proxy.url, spool_dir=str(tmp_path / "spool"))
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    yield fault_proxy, adapter, run, remote


def _log_batches(proxy: Any) -> int:
    return sum("log-batch" in s.path for s in proxy.seen)


def test_one_request_per_export(proxied: Any, mlflow_server: Any) -> None:
    proxy, adapter, run, remote = proxied
    batch = [metric("m", s, float(s), ts=T0 + s) for s in range(990)]
    batch += [ev("param", f"p{i}", i) for i in range(5)] + [ev("tag", f"t{i}", "x") for i in range(5)]
    before = _log_batches(proxy)
    assert adapter.export(run, batch).outcome is Outcome.SUCCESS
    assert _log_batches(proxy) - before == 1
    batch = [ev("param", f"q{i}", i) for i in range(250)]
    before = _log_batches(proxy)
    assert adapter.export(run, batch).outcome is Outcome.SUCCESS
    assert _log_batches(proxy) - before == 3  # 100 + 100 + 50 params


@pytest.mark.parametrize(
    "fault",
    ["429", "500", "503", "reset", "stall", "truncate"],
)
def test_transient_faults_are_retry_then_delivered_once(
    proxied: Any, mlflow_server: Any, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, adapter, run, remote = proxied
    if fault == "429":
        proxy.respond(429, retry_after=7, path="log-batch")
    elif fault in ("500", "503"):
        proxy.respond(int(fault), path="log-batch")
    elif fault == "reset":
        proxy.reset(path="log-batch")
    elif fault == "stall":
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")  # read at each request
        proxy.stall(30, path="log-batch")
    else:
        proxy.truncate(path="log-batch")
    batch = [metric("m", s, float(s), ts=T0 + s) for s in range(5)] + [ev("param", "p", "x")]
    t0 = time.monotonic()
    result = adapter.export(run, batch)
    assert result.outcome is Outcome.RETRY, result
    assert time.monotonic() - t0 < 5  # a stall is cut by the request timeout
    if fault in ("429", "500", "503"):
        assert f"HTTP {fault}" in result.reason
    # The server's Retry-After reaches the agent (MlflowClient drops it: urllib3 drains
    # the response when its retries are exhausted).
    assert result.retry_after == (7.0 if fault == "429" else None)
    assert proxy.pending == 0
    assert adapter.export(run, batch).outcome is Outcome.SUCCESS
    c = mlflow.MlflowClient(mlflow_server.url)
    assert len(c.get_metric_history(remote, "m")) == 5  # a request the server did apply is not doubled
    assert c.get_run(remote).data.params == {"p": "x"}


def test_artifact_upload_fault_is_retry(proxied: Any, mlflow_server: Any, tmp_path: Path) -> None:
    proxy, adapter, run, remote = proxied
    blob = put_blob(run.blob_root, b"payload")
    art = ev("artifact", "a", {"name": "a", "type": "file", "is_dir": False, "source": "",
                               "files": [{"path": "f.bin", **blob}]})  # fmt: skip
    proxy.respond(503, path="/mlflow-artifacts/")
    assert adapter.export(run, [art]).outcome is Outcome.RETRY
    assert adapter.export(run, [art]).outcome is Outcome.SUCCESS
    c = mlflow.MlflowClient(mlflow_server.url)
    assert artifact_bytes(c, remote, "a/f.bin", tmp_path / "dl") == b"payload"


def test_open_run_fault_is_retryable(proxied: Any, tmp_path: Path) -> None:
    proxy, adapter, run, _ = proxied
    proxy.respond(500)
    with pytest.raises(RetryableError, match="HTTP 500"):
        MlflowAdapter(tracking_uri=proxy.url, spool_dir=str(tmp_path)).open_run(new_run(tmp_path))


def test_invalid_metric_key_is_rejected_others_delivered(target: Target, tmp_path: Path) -> None:
    adapter = target.adapter()
    run = new_run(tmp_path)
    remote = adapter.open_run(run)
    bad = metric("loss@train!", 0, 1.0)
    batch = [metric("ok", s, float(s), ts=T0 + s) for s in range(30)] + [bad]
    result = adapter.export(run, batch)
    assert result.outcome is Outcome.SUCCESS and set(result.rejected) == {bad.uid}
    assert "INVALID_PARAMETER_VALUE" in result.rejected[bad.uid]
    assert len(target.client.get_metric_history(remote, "ok")) == 30


# -- nesting when the child arrives first ----------------------------------------------------
def test_a_child_delivered_before_its_parent_waits_then_nests(target: Target, tmp_path: Path) -> None:
    """The agent syncs runs in parallel: a child whose parent is not in MLflow yet is
    retried (a short Retry-After) until the parent's run exists, then nests under it; a
    parent that never arrives stops the wait after MAX_PARENT_WAITS retries."""
    from bridge.adapters.mlflow.adapter import MAX_PARENT_WAITS

    parent = new_run(tmp_path, name="search")
    child = new_run(tmp_path, name="trial-0")
    adapter = target.adapter()
    child_remote = adapter.open_run(child)
    child = replace(child, remote_id=child_remote)
    batch = [ev("tag", "mlflow.parentRunId", parent.run_id, run_id=child.run_id),
             metric("loss", 0, 0.5)]
    first = adapter.export(child, batch)
    assert first.outcome is Outcome.RETRY and parent.run_id in first.reason
    assert first.retry_after is not None and first.retry_after <= 1
    parent_remote = adapter.open_run(parent)
    assert adapter.export(child, batch).outcome is Outcome.SUCCESS
    assert target.client.get_run(child_remote).data.tags["mlflow.parentRunId"] == parent_remote

    orphan = replace(new_run(tmp_path, name="orphan"), remote_id=None)
    orphan = replace(orphan, remote_id=adapter.open_run(orphan))
    missing = uuid.uuid4().hex
    lone = [ev("tag", "mlflow.parentRunId", missing, run_id=orphan.run_id)]
    outcomes = [adapter.export(orphan, lone).outcome for _ in range(MAX_PARENT_WAITS + 1)]
    assert outcomes == [Outcome.RETRY] * MAX_PARENT_WAITS + [Outcome.SUCCESS]
