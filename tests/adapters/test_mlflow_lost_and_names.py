"""The MLflow adapter's side of two reliability findings, for each client (bridge's REST
client and ``MlflowClient`` against a real server, ``MlflowClient`` on the embedded store):

* a mapped remote run that is gone (or is another bridge run's) raises ``RemoteRunLost``
  from ``open_run``, ``check_remote``, ``export`` and ``close_run``, never a dead letter;
* bad artifact names are refused before MLflow is called, with the same reason everywhere.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from pathlib import Path
from typing import Any

import pytest

mlflow = pytest.importorskip("mlflow")

from bridge.adapters.base import Event, Outcome, RemoteRunLost, RunInfo  # noqa: E402
from bridge.adapters.mlflow import MlflowAdapter, RetryableError  # noqa: E402
from mlflow_server import free_port  # noqa: E402

T0 = 1_700_000_000_000
_seq = itertools.count(1)


@pytest.fixture(autouse=True)
def _fast_failing_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")


@pytest.fixture(params=["server", "server-sdk", "embedded"])
def options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param.startswith("server"):
        server = request.getfixturevalue("mlflow_server")
        opts: dict[str, Any] = {"tracking_uri": server.url, "spool_dir": str(tmp_path / "spool")}
        if request.param == "server-sdk":
            opts["client"] = "mlflow"
        return opts
    return {"spool_dir": str(tmp_path / "spool")}


def ev(kind: str, key: str | None, payload: Any = None, *, step: int | None = None,
       value: float | None = None) -> Event:
    seq = next(_seq)
    return Event("f1", seq, "", kind, key, step, T0 + seq, value=value, payload=payload)


def new_run(tmp_path: Path, **kw: Any) -> RunInfo:
    base = dict(run_id=uuid.uuid4().hex, project="lost-tests", start_ms=T0,
                blob_root=tmp_path / "blobs")
    base.update(kw)
    return RunInfo(**base)


def test_a_mapped_run_that_is_gone_is_lost_everywhere(options, tmp_path):
    adapter = MlflowAdapter(**options)
    try:
        ghost = uuid.uuid4().hex  # what run_map holds after the store was wiped
        for call in ("open_run", "check_remote", "export", "close_run"):
            run = new_run(tmp_path, remote_id=ghost, state={"mlflow_run_id": ghost})
            with pytest.raises(RemoteRunLost, match=ghost):
                if call == "export":
                    adapter.export(run, [ev("metric", "m", step=0, value=1.0)])
                elif call == "close_run":
                    adapter.close_run(run, "FINISHED", T0 + 1)
                else:
                    getattr(adapter, call)(run)
            assert "mlflow_run_id" not in run.state  # the adapter forgot it
        # Unmapped again (the agent forgot the delivery): a new run is created and works.
        run = new_run(tmp_path)
        remote = adapter.open_run(run)
        assert remote != ghost
        adapter.check_remote(run)
        assert adapter.export(run, [ev("metric", "m", step=0, value=1.0)]).outcome is \
            Outcome.SUCCESS
    finally:
        adapter.shutdown()


def test_a_mapped_run_of_another_bridge_run_is_lost(options, tmp_path):
    adapter = MlflowAdapter(**options)
    try:
        other = new_run(tmp_path)
        theirs = adapter.open_run(other)
        mine = new_run(tmp_path, remote_id=theirs, state={"mlflow_run_id": theirs})
        with pytest.raises(RemoteRunLost, match=f"now belongs to bridge run {other.run_id}"):
            adapter.check_remote(mine)
        with pytest.raises(RemoteRunLost):
            adapter.open_run(new_run(tmp_path, run_id=mine.run_id, remote_id=theirs))
        # Forgotten: it opens its own run, found by its tag or created.
        assert adapter.open_run(new_run(tmp_path, run_id=mine.run_id)) != theirs
    finally:
        adapter.shutdown()


def test_check_remote_of_an_unreachable_server_is_retryable(tmp_path):
    adapter = MlflowAdapter(tracking_uri=f"http://127.0.0.1:{free_port()}",
                            spool_dir=str(tmp_path / "spool"))
    run = new_run(tmp_path, remote_id=uuid.uuid4().hex)
    with pytest.raises(RetryableError):
        adapter.check_remote(run)
    adapter.check_remote(new_run(tmp_path))  # nothing mapped: nothing to check, no request


def _blob(root: Path, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    path = root / sha[:2] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"sha256": sha, "size": len(data)}


BAD = [
    ("text", "../../../../x.txt", "leaves the run's artifact folder"),
    ("text", "/abs/x.txt", "is absolute"),
    ("text", "notes/", "names a folder, not a file"),
    ("dict", "../../d.json", "leaves the run's artifact folder"),
    ("dict", "C:\\d.json", "is absolute"),
    ("artifact", "../../x", "leaves the run's artifact folder"),
    ("artifact", "/abs", "is absolute"),
]


def test_bad_artifact_names_are_refused_the_same_way_by_every_client(options, tmp_path):
    adapter = MlflowAdapter(**options)
    try:
        run = new_run(tmp_path)
        remote = adapter.open_run(run)
        blob = _blob(run.blob_root, b"w" * 10)
        artifact = {"type": "file", "is_dir": False, "source": "",
                    "files": [{"path": "w.bin", **blob}]}
        bad = [ev(kind, name, artifact if kind == "artifact" else {"a": 1} if kind == "dict"
                  else "text") for kind, name, _ in BAD]
        good = [ev("text", "./a//ok.txt", "ok"), ev("artifact", "model", artifact),
                ev("metric", "m", step=0, value=1.0)]
        result = adapter.export(run, bad + good)
        assert result.outcome is Outcome.SUCCESS
        assert set(result.rejected) == {e.uid for e in bad}
        for e, (_, name, why) in zip(bad, BAD):
            assert result.rejected[e.uid].startswith(f"{name}: the artifact name {name!r}")
            assert why in result.rejected[e.uid]
        client = mlflow.MlflowClient(adapter.tracking_uri)
        listed = {f.path for f in client.list_artifacts(remote)}
        assert listed == {"a", "model"}
        assert [f.path for f in client.list_artifacts(remote, "model")] == ["model/w.bin"]
        assert [m.value for m in client.get_metric_history(remote, "m")] == [1.0]
    finally:
        adapter.shutdown()
