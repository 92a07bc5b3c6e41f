"""Exporting to and importing from MLflow leaves the process's environment as it was.

A user's own MLflow client shares the process with an in-process background sync: bridge
must not turn its retries off, shorten its timeout, or allow file stores behind its back.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from bridge.adapters.base import Event, Outcome, RunInfo
from bridge.adapters.mlflow import names
from bridge.adapters.mlflow.sdk_env import BACKGROUND_SYNC_THREAD, host_process, scoped_env

T0 = 1_700_000_000_000
MLFLOW_VARS = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
               "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in MLFLOW_VARS:
        monkeypatch.delenv(name, raising=False)
    yield


def batch(run_id: str, blob: dict[str, Any]) -> list[Event]:
    events = [Event("f1", 1, run_id, "metric", "loss", 0, T0, value=0.5),
              Event("f1", 2, run_id, "param", "lr", None, T0, payload=0.1),
              Event("f1", 3, run_id, "summary", "acc", None, T0, payload=0.9),
              Event("f1", 4, run_id, "event", "epoch", 1, T0, payload={"n": 1}),
              Event("f1", 5, run_id, "artifact", "model", None, T0,
                    payload={"files": [{"path": "w.bin", **blob}]})]
    return events


def put_blob(root: Path, data: bytes) -> dict[str, Any]:
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    path = root / sha[:2] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"sha256": sha, "size": len(data)}


def export_once(tmp_path: Path, **options: Any) -> Any:
    from bridge.adapters.mlflow import MlflowAdapter

    adapter = MlflowAdapter(spool_dir=str(tmp_path / "spool"), **options)
    run = RunInfo(run_id=uuid.uuid4().hex, project="env", name="r", start_ms=T0,
                  blob_root=tmp_path / "blobs")
    try:
        result = adapter.export(run, batch(run.run_id, put_blob(tmp_path / "blobs", b"w")))
        assert result.outcome is Outcome.SUCCESS, result
        adapter.close_run(run, "FINISHED", T0 + 10)
    finally:
        adapter.shutdown()
    return adapter


# -- the scope itself (no SDK) ---------------------------------------------------------------
def test_scope_sets_unset_variables_and_restores_exactly(clean_env: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's own: kept
    before = dict(os.environ)
    defaults = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    with scoped_env(defaults):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
        with scoped_env(defaults):  # nested (another thread's call): shared, not undone early
            pass
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert dict(os.environ) == before


def test_scope_is_released_by_the_last_of_concurrent_calls(clean_env: None) -> None:
    before = dict(os.environ)
    inside, release = threading.Barrier(3), threading.Event()

    def call() -> None:
        with scoped_env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}):
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    release.set()
    for t in threads:
        t.join()
    assert dict(os.environ) == before


def test_nothing_is_set_in_a_process_running_an_in_process_sync(clean_env: None) -> None:
    stop = threading.Event()
    sync = threading.Thread(target=stop.wait, name=BACKGROUND_SYNC_THREAD)
    sync.start()
    try:
        assert host_process()
        with scoped_env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}):
            assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
        with scoped_env({"MLFLOW_ALLOW_FILE_STORE": "true"}, force=True):  # an import
            assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
        assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    finally:
        stop.set()
        sync.join()
    assert not host_process()


# -- export and import through the SDK ---------------------------------------------------------
mlflow_needed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("mlflow") is None, reason="needs mlflow")


@mlflow_needed
def test_export_to_the_embedded_store_leaves_the_environment_alone(clean_env: None,
                                                                   tmp_path: Path) -> None:
    before = dict(os.environ)
    adapter = export_once(tmp_path)
    assert adapter.tracking_uri == names.readback_source(tmp_path / "spool", "env", "x", {})[0]
    assert dict(os.environ) == before


@mlflow_needed
@pytest.mark.parametrize("client", ["auto", "mlflow"])
def test_export_to_a_server_leaves_the_environment_alone(clean_env: None, tmp_path: Path,
                                                         mlflow_server: Any, client: str) -> None:
    """The REST client (``auto``) and ``MlflowClient`` (``mlflow``) alike."""
    before = dict(os.environ)
    adapter = export_once(tmp_path, tracking_uri=mlflow_server.url, client=client)
    assert adapter.client_kind == ("rest" if client == "auto" else "mlflow")
    assert dict(os.environ) == before


@mlflow_needed
def test_rest_client_gets_its_timeout_without_the_environment(clean_env: None,
                                                              tmp_path: Path) -> None:
    from bridge.adapters.mlflow import MlflowAdapter

    adapter = MlflowAdapter(tracking_uri="http://127.0.0.1:9", spool_dir=str(tmp_path))
    assert adapter.client._timeout == 30.0
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


@mlflow_needed
def test_import_leaves_the_environment_alone(clean_env: None, tmp_path: Path) -> None:
    from bridge.importers import make_importer

    adapter = export_once(tmp_path)
    before = dict(os.environ)
    importer = make_importer("mlflow", adapter.tracking_uri, experiments=["env"])
    events = [ev for run in importer.runs() for ev in importer.events(run)]
    assert {e.kind for e in events} >= {"metric", "param", "summary", "event", "artifact"}
    assert dict(os.environ) == before


def test_scoped_client_calls_see_the_settings(clean_env: None) -> None:
    from types import SimpleNamespace

    from bridge.adapters.mlflow.adapter import SDK_HTTP_ENV
    from bridge.adapters.mlflow.sdk_env import ScopedClient

    seen: list[Any] = []
    fake = SimpleNamespace(get_run=lambda rid: seen.append(
        (rid, os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))), tracking_uri="http://h")
    client = ScopedClient(fake, SDK_HTTP_ENV)
    client.get_run("r1")
    assert seen == [("r1", "0")] and client.tracking_uri == "http://h"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


@mlflow_needed
def test_import_of_a_file_store_works_and_leaves_the_environment_alone(
        clean_env: None, tmp_path: Path) -> None:
    import mlflow

    from bridge.importers import make_importer

    store = tmp_path / "mlruns"
    with scoped_env({"MLFLOW_ALLOW_FILE_STORE": "true"}, force=True):  # the test's own writer
        writer = mlflow.MlflowClient(tracking_uri=store.as_uri())
        exp = writer.create_experiment("files")
        run = writer.create_run(exp)
        writer.log_metric(run.info.run_id, "loss", 0.25, step=1)
        writer.set_tag(run.info.run_id, names.summary_tag("acc"), "0.5")
    before = dict(os.environ)
    importer = make_importer("mlflow", str(store))
    events = [ev for src in importer.runs() for ev in importer.events(src)]
    assert ("summary", "acc", 0.5) in [(e.kind, e.key, e.payload) for e in events]
    assert [e.value for e in events if e.kind == "metric"] == [0.25]
    assert dict(os.environ) == before
