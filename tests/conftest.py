"""Shared fixtures: a real MLflow server and a loopback fault-injecting proxy."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

# BRIDGE_TEST_LONG=1 runs the long reliability suite (RELIABILITY.md): more kill points,
# more fuzz cases. Each figure can also be set on its own.
if os.environ.get("BRIDGE_TEST_LONG") == "1":
    for name, value in {"BRIDGE_TEST_KILLS": "1000", "BRIDGE_TEST_SYNC_KILLS": "100",
                        "BRIDGE_TEST_FUZZ": "10000", "BRIDGE_TEST_OFFLINE_SYNC_KILLS": "20",
                        "BRIDGE_TEST_PROCESSES": "32"}.items():
        os.environ.setdefault(name, value)

# MLflow's usage telemetry would reach past loopback, and the first client of a process sets
# _MLFLOW_TELEMETRY_SESSION_ID in os.environ (the environment tests then see it change).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from fault_proxy import FaultProxy
from mlflow_server import MlflowServer


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` (sqlite + proxied artifacts) for the tests of one module.

    ``.stop()`` and ``.start()`` cut and restore it on the same port and database.
    """
    pytest.importorskip("mlflow")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fault_proxy(mlflow_server: MlflowServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the module's MLflow server, stopped after the test."""
    with FaultProxy(mlflow_server.url, timeout=30) as proxy:
        yield proxy


@pytest.fixture(autouse=True)
def wide_console() -> Iterator[None]:
    """CLI output in tests is not wrapped at 80 columns (assertions read whole phrases)."""
    from bridge.cli import common

    old = common.console.width, common.err_console.width
    common.console.width = common.err_console.width = 250
    yield
    common.console.width, common.err_console.width = old
