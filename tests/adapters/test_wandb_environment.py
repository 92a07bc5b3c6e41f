"""A sync through the W&B adapter leaves the host process's environment as it found it.

In-process background sync shares ``os.environ`` with the user's own ``wandb``: the
adapter passes its quiet settings as ``wandb.Settings`` and sets wandb's directories only
for the length of one offline session (``WandbAdapter._offline_home``).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from bridge.adapters.base import Event, Outcome, RunInfo

pytest.importorskip("wandb")

from bridge.adapters.wandb import WandbAdapter, names  # noqa: E402

T0 = 1_700_000_000_000


@pytest.fixture(autouse=True)
def bare_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No WANDB_* variable at all, as in a user's process; HOME inside tmp_path."""
    for var in [v for v in os.environ if v.startswith("WANDB_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))


def _sync(tmp_path: Path, status: str = "FINISHED") -> Path:
    out = tmp_path / "wandb-out"
    run_id = uuid.uuid4().hex
    run = RunInfo(run_id=run_id, project="env", status="RUNNING", state={})
    batch = [Event("f0", i + 1, run_id, "metric", "loss", i, T0 + i, float(i)) for i in range(3)]
    batch.append(Event("f0", 4, run_id, "tag", "team", None, T0, None, "vision"))
    a = WandbAdapter(mode="offline", dir=str(out), spool_dir=str(tmp_path / "spool"))
    a.open_run(run)
    assert a.export(run, batch).outcome is Outcome.SUCCESS
    a.close_run(run, status, T0 + 10_000)
    a.shutdown()
    return out


def test_offline_sync_leaves_os_environ_exactly_as_before(tmp_path: Path) -> None:
    before = dict(os.environ)
    out = _sync(tmp_path)
    assert dict(os.environ) == before
    # wandb's own files (the wandb-core log) still stay under the adapter's dir
    assert (out / names.OFFLINE_HOME / "cache").is_dir()
    assert not (tmp_path / "home").exists()


def test_a_directory_the_user_set_is_kept_and_used(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "my-wandb-cache"
    monkeypatch.setenv("WANDB_CACHE_DIR", str(mine))
    before = dict(os.environ)
    out = _sync(tmp_path, status="FAILED")
    assert dict(os.environ) == before
    assert mine.is_dir() and not (out / names.OFFLINE_HOME / "cache").exists()
