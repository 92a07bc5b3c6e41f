"""The Neptune adapter gives each run its own data directory without touching the process.

neptune 1.x reads ``NEPTUNE_DATA_DIRECTORY`` when it creates a run; bridge must neither set
it (a user's own Neptune runs in another thread would follow it) nor depend on it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

neptune = pytest.importorskip("neptune")

from bridge.adapters.base import Event, RunInfo  # noqa: E402
from bridge.adapters.neptune import NeptuneAdapter  # noqa: E402
from bridge.adapters.neptune import datadir  # noqa: E402
from bridge.adapters.neptune.offline import bridge_run_id_of, find_run_dirs  # noqa: E402

T0 = 1_700_000_000_000
QUIET = dict(capture_stdout=False, capture_stderr=False, capture_hardware_metrics=False,
             capture_traceback=False, git_ref=False, source_files=[])


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)


def _sync_one(data_dir: Path, run_id: str, points: int = 5) -> None:
    adapter = NeptuneAdapter(mode="offline", data_dir=str(data_dir))
    run = RunInfo(run_id=run_id, project="demo", name=run_id[:6], start_ms=T0,
                  blob_root=data_dir / "blobs", state={})
    try:
        adapter.open_run(run)
        batch = [Event("f", i + 1, run_id, "metric", "loss", i, T0 + i, float(i)) for i in range(points)]
        assert adapter.export(run, batch).outcome.value == "success"
        adapter.close_run(run, "FINISHED", T0 + points)
    finally:
        adapter.shutdown()


def _run_ids(data_dir: Path) -> list[str | None]:
    return sorted(str(bridge_run_id_of(d)) for d in find_run_dirs(data_dir))


@pytest.mark.parametrize("user_value", [None, "/the/users/own/dir"])
def test_sync_leaves_the_environment_exactly_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       user_value: str | None) -> None:
    if user_value is None:
        monkeypatch.delenv("NEPTUNE_DATA_DIRECTORY", raising=False)
    else:
        monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", user_value)
    before = dict(os.environ)
    _sync_one(tmp_path / "nd", "a" * 32)
    assert dict(os.environ) == before
    assert _run_ids(tmp_path / "nd") == ["a" * 32]
    assert datadir.hooked(), "the installed client should take a per-run directory"


def test_two_adapters_in_two_threads_write_into_their_own_dirs(tmp_path: Path) -> None:
    ids = {"left": "1" * 32, "right": "2" * 32}
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            start.wait(timeout=30)
            for _ in range(3):  # several sessions each, so the two threads overlap
                _sync_one(tmp_path / name, ids[name])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for name, run_id in ids.items():
        assert _run_ids(tmp_path / name) == [run_id] * 3


def test_a_users_own_run_in_another_thread_keeps_its_directory(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """While bridge creates a run for its data dir, the host's own init_run in another thread
    still lands where the host's environment says."""
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(tmp_path / "user" / ".neptune"))
    inside, done = threading.Event(), threading.Event()

    def bridge_side() -> None:
        with datadir.data_directory(tmp_path / "bridge" / ".neptune"):
            inside.set()
            done.wait(timeout=60)

    t = threading.Thread(target=bridge_side)
    t.start()
    try:
        assert inside.wait(timeout=30)
        run: Any = neptune.init_run(mode="offline", name="users-own", **QUIET)
        run["x"] = 1
        run.stop()
    finally:
        done.set()
        t.join(timeout=30)
    assert len(find_run_dirs(tmp_path / "user")) == 1
    assert not (tmp_path / "bridge").exists()


def test_without_the_seam_the_variable_is_swapped_under_a_lock_and_restored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datadir, "_hooked", False)
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", "/users/dir")
    with datadir.data_directory(tmp_path / ".neptune"):
        assert os.environ["NEPTUNE_DATA_DIRECTORY"] == str(tmp_path / ".neptune")
        assert datadir._env_lock.locked()
    assert os.environ["NEPTUNE_DATA_DIRECTORY"] == "/users/dir"
    monkeypatch.delenv("NEPTUNE_DATA_DIRECTORY")
    with datadir.data_directory(tmp_path / ".neptune"):
        pass
    assert "NEPTUNE_DATA_DIRECTORY" not in os.environ
