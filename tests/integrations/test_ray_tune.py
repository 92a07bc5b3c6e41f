"""``BridgeLoggerCallback`` for Ray Tune: real ``Tuner.fit`` runs on a 2-CPU local Ray."""

from __future__ import annotations

import os
import sys

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.tune")

from ray import tune  # noqa: E402

import bridge  # noqa: E402
from bridge.integrations.ray import BridgeLoggerCallback  # noqa: E402
from bridge_readback import by_kind, events, metric_series  # noqa: E402

ITERATIONS = 4


@pytest.fixture(scope="module", autouse=True)
def local_ray(tmp_path_factory):
    """A private local Ray (no dashboard, no usage stats, nothing off the machine)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_DEDUP_LOGS", "0")
        mp.setenv("RAY_AIR_NEW_OUTPUT", "0")
        mp.delenv("RAY_ADDRESS", raising=False)
        # The trainables below are sent to Ray's workers by value: they cannot import tests.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _temp_dir=str(tmp_path_factory.mktemp("ray")))
        try:
            yield
        finally:
            ray.shutdown()


def trainable(config):
    for i in range(1, ITERATIONS + 1):
        if config.get("fail_at") == i:
            raise ValueError(f"diverged at iteration {i}")
        tune.report({"loss": config["lr"] * 10 / i, "score": {"top1": i * config["width"]},
                     "phase": "warmup" if i == 1 else "main"})


def endless(config):
    i = 0
    while True:
        i += 1
        tune.report({"loss": 1.0 / i})


def fit(trainable_fn, space, tmp_path, callback, **run_kw):
    tuner = tune.Tuner(
        trainable_fn, param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(name="grid", storage_path=str(tmp_path / "ray_results"),
                                  callbacks=[callback], verbose=0, **run_kw),
    )
    return tuner.fit()


def by_name(spool):
    runs = bridge.runs(dir=spool)
    return {r["name"]: r for _, r in runs.iterrows()}


def ray_points(result, key):
    df = result.metrics_dataframe
    return [(int(s), float(v)) for s, v in zip(df["training_iteration"], df[key])]


def test_grid_every_trial_a_run(spool, tmp_path, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    backends = [{"name": "mlflow", "tracking_uri": mlflow_server.url}]
    space = {"lr": tune.grid_search([0.1, 0.01, 0.001]), "width": 2,
             "arch": {"layers": 3, "act": "relu"}}
    results = fit(trainable, space, tmp_path,
                  BridgeLoggerCallback(project="tune", backends=backends, sync="offline"))
    assert results.num_errors == 0 and len(results) == 3
    runs = by_name(spool)
    assert len(runs) == 3
    for result in results:
        trial_name = os.path.basename(result.path.rstrip("/"))
        name = next(n for n in runs if trial_name.startswith(n))
        row = runs[name]
        assert (row["status"], row["group"], row["project"]) == ("FINISHED", "grid", "tune")
        evs = events(spool, row["run_id"])
        kinds = by_kind(evs)
        assert kinds["param"] == {"lr": result.config["lr"], "width": 2,
                                  "arch": {"layers": 3, "act": "relu"}}
        assert kinds["tag"]["ray.trial_id"] == result.metrics["trial_id"]
        # every reported point, at training_iteration, as Ray itself recorded it
        assert metric_series(evs, "loss") == ray_points(result, "loss")
        assert [s for s, _ in metric_series(evs, "loss")] == list(range(1, ITERATIONS + 1))
        assert metric_series(evs, "score/top1") == [(i, 2.0 * i) for i in range(1, 5)]
        assert [s for s, _ in metric_series(evs, "time_this_iter_s")] == [1, 2, 3, 4]
        assert [e.step for e in evs if e.kind == "media" and e.key == "phase"] == [1, 2, 3, 4]
        keys = {e.key for e in evs if e.kind == "metric"}
        assert not keys & {"done", "config/lr", "date", "trial_id", "hostname"}

    from mlflow import MlflowClient

    from bridge.agent.sync import Syncer

    summary = Syncer(spool).run_once()
    assert summary.complete, summary
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("tune")
    remote = client.search_runs([exp.experiment_id])
    assert len(remote) == 3
    for mr in remote:
        result = next(r for r in results if r.config["lr"] == float(mr.data.params["lr"]))
        hist = sorted((m.step, m.value) for m in client.get_metric_history(mr.info.run_id, "loss"))
        assert hist == ray_points(result, "loss")
        assert mr.info.status == "FINISHED"


def test_a_trial_that_raises_is_a_failed_run_with_its_results(spool, tmp_path):
    space = {"lr": tune.grid_search([0.1, 0.2]), "width": 1,
             "fail_at": tune.grid_search([None, 3])}
    results = fit(trainable, space, tmp_path, BridgeLoggerCallback(project="tune"))
    assert results.num_errors == 2
    runs = by_name(spool)
    assert len(runs) == 4
    from bridge.spool.reader import list_runs

    records = {r.run_id: r for r in list_runs(spool)}
    statuses = []
    for result in results:
        row = next(r for n, r in runs.items()
                   if os.path.basename(result.path.rstrip("/")).startswith(n))
        evs = events(spool, row["run_id"])
        steps = [s for s, _ in metric_series(evs, "loss")]
        if result.config["fail_at"] == 3:
            assert row["status"] == "FAILED"
            assert steps == [1, 2]  # everything reported before the error
            assert metric_series(evs, "loss") == ray_points(result, "loss")
            assert "diverged at iteration 3" in records[row["run_id"]].error
        else:
            assert (row["status"], steps) == ("FINISHED", [1, 2, 3, 4])
        statuses.append(row["status"])
    assert sorted(statuses) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]


class StopAllAfter(tune.stopper.Stopper):
    """Ends the whole experiment once a trial has reported ``n`` results."""

    def __init__(self, n: int) -> None:
        self.n, self.done = n, False

    def __call__(self, trial_id, result):
        self.done = self.done or result["training_iteration"] >= self.n
        return False

    def stop_all(self):
        return self.done


def test_a_trial_the_experiment_stops_is_a_killed_run(spool, tmp_path):
    results = fit(endless, {"lr": 0.1}, tmp_path, BridgeLoggerCallback(project="tune"),
                  stop=StopAllAfter(3))
    [result] = list(results)
    [row] = by_name(spool).values()
    assert row["status"] == "KILLED"
    evs = events(spool, row["run_id"])
    points = metric_series(evs, "loss")
    assert len(points) >= 3
    assert points == ray_points(result, "loss")  # what Ray kept, the run kept
