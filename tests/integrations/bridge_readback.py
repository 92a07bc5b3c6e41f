"""Reading back what the integration tests recorded: spool events and the synced MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.spool.reader import iter_events, list_runs


def events(spool_dir: Path, run_id: str) -> list:
    rec = [r for r in list_runs(spool_dir) if r.run_id == run_id][0]
    return list(iter_events(rec.files, run_id))


def by_kind(evs: list) -> dict:
    out: dict = {}
    for e in evs:
        out.setdefault(e.kind, {})[e.key] = e.payload if e.kind != "metric" else e.value
    return out


def metric_series(evs: list, key: str) -> list[tuple]:
    return [(e.step, e.value) for e in evs if e.kind == "metric" and e.key == key]


def sync_to_mlflow(spool_dir: Path):
    """Deliver the spool to its embedded MLflow store; returns a client on that store."""
    mlflow = pytest.importorskip("mlflow")
    from bridge.agent.sync import Syncer

    summary = Syncer(spool_dir).run_once()
    assert summary.complete, summary
    return mlflow.MlflowClient(f"sqlite:///{spool_dir}/mlflow.db")


def mlflow_run(client, bridge_run_id: str):
    found = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`bridge.run_id` = '{bridge_run_id}'",
    )
    assert len(found) == 1, found
    return found[0]
