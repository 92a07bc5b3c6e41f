"""The embedded MLflow store is created whole or not at all.

MLflow creates a sqlite store migration by migration; a process killed in between left a
file every later open refused ("table review_queues already exists": found by the random
kills of ``tests/test_all_backends.py``). A child opens the embedded store for the first
time and is SIGKILLed at a random moment of the creation; the next open must work and find
a complete store. Kill delays come from a seed printed on failure (``BRIDGE_TEST_SEED``).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from bridge.adapters.mlflow.adapter import MlflowAdapter  # noqa: E402
from bridge.adapters.mlflow.names import embedded_db  # noqa: E402

CHILD = ("import sys; from bridge.adapters.mlflow.adapter import MlflowAdapter; "
         "MlflowAdapter(spool_dir=sys.argv[1]); print('OPENED', flush=True)")


def _complete(spool: Path) -> None:
    """The next open works, and finds a complete store."""
    client = mlflow.MlflowClient(MlflowAdapter(spool_dir=spool).tracking_uri)
    with sqlite3.connect(embedded_db(spool)) as c:
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    exp = client.create_experiment(f"after-{time.monotonic_ns()}")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.5]
    assert not list(spool.glob("mlflow.db.creating*"))


def test_a_creation_killed_midway_leaves_nothing_the_next_open_trips_on(tmp_path: Path) -> None:
    seed = int(os.environ.get("BRIDGE_TEST_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    for round_ in range(3):
        spool = tmp_path / f"spool-{round_}"
        spool.mkdir()
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(spool)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            end = time.monotonic() + 120
            while not list(spool.glob("mlflow.db*")) and child.poll() is None:
                assert time.monotonic() < end, f"seed {seed}: the child created nothing"
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.4))  # somewhere in MLflow's migrations
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(30)
        try:
            _complete(spool)
        except Exception as exc:
            raise AssertionError(f"seed {seed}, round {round_}: {exc!r}") from exc


def test_a_file_a_killed_creation_left_is_removed(tmp_path: Path) -> None:
    left = tmp_path / "mlflow.db.creating"
    with sqlite3.connect(left) as c:  # half of a schema
        c.execute("CREATE TABLE review_queues (queue_id TEXT)")
    _complete(tmp_path)


def test_an_empty_file_is_no_store(tmp_path: Path) -> None:
    embedded_db(tmp_path).touch()
    _complete(tmp_path)
