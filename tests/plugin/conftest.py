"""Every plugin test runs in its own working directory with Comet's automatic logging off:
once another test of the same worker has imported comet_ml, comet_ml hooks MLflow's fluent
API and would write an offline archive of every MLflow run into the working directory."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMET_DISABLE_AUTO_LOGGING", "1")
