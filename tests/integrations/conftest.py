"""The ``spool`` fixture: an isolated spool directory set through the environment, so
example scripts run unchanged but for their import."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

import bridge


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A spool directory used by every ``bridge.init`` without ``dir=``; runs record offline
    with the embedded MLflow store as their backend."""
    d = tmp_path / "spool"
    monkeypatch.setenv("BRIDGE_DIR", str(d))
    monkeypatch.setenv("BRIDGE_SYNC", "offline")
    monkeypatch.setenv("BRIDGE_BACKENDS", "mlflow")
    monkeypatch.setenv("BRIDGE_CONFIG", str(tmp_path / "no-such-bridge.toml"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    yield d
    while bridge.run() is not None:
        bridge.run().finish()
