"""``BridgeCallback`` for Optuna: real studies (completed, pruned and failed trials, one and
two objectives), each trial's run read back against what the study reports."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")

import bridge  # noqa: E402
from bridge.integrations.optuna import BridgeCallback  # noqa: E402
from bridge_readback import by_kind, events, metric_series  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)


def objective(trial):
    """A quadratic with reported steps; trial 2 is pruned and trial 3 fails."""
    x = trial.suggest_float("x", -3.0, 3.0)
    depth = trial.suggest_int("depth", 1, 4)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    loss = (x - 1.0) ** 2 + 0.1 * depth + (0.0 if kind == "a" else 0.05)
    for step in range(3):
        trial.report(loss + 1.0 / (step + 1), step)
        if trial.number == 2 and step == 1:
            raise optuna.TrialPruned()
    if trial.number == 3:
        raise RuntimeError("diverged")
    return loss


def trial_runs(spool) -> dict:
    runs = bridge.runs(dir=spool)
    return {row["name"]: row for _, row in runs.iterrows()}


def check_trial(spool, study, trial, row, names: list[str]) -> dict:
    """The trial's run holds its params, values, reported steps, state and directions."""
    assert row["name"] == f"trial-{trial.number}" and row["group"] == study.study_name
    assert row["status"] == ("FAILED" if trial.state.name == "FAIL" else "FINISHED")
    evs = events(spool, row["run_id"])
    kinds = by_kind(evs)
    params = dict(kinds["param"])
    distributions = params.pop("optuna.distributions")
    assert params == trial.params
    assert distributions["x"] == {"name": "FloatDistribution", "attributes": {
        "low": -3.0, "high": 3.0, "log": False, "step": None}}
    if trial.values is None:
        assert "summary" not in kinds
    else:
        assert kinds["summary"] == dict(zip(names, trial.values))
    got = metric_series(evs, f"intermediate/{names[0]}")
    assert got == sorted(trial.intermediate_values.items())
    tags = kinds["tag"]
    assert tags["optuna.state"] == trial.state.name
    assert tags["optuna.study"] == study.study_name
    assert tags["optuna.trial_number"] == str(trial.number)
    assert tags["optuna.datetime_start"] == trial.datetime_start.isoformat()
    assert tags["optuna.datetime_complete"] == trial.datetime_complete.isoformat()
    return tags


def test_a_study_is_a_group_of_trial_runs(spool, mlflow_server):
    mlflow = pytest.importorskip("mlflow")
    from bridge.agent.sync import Syncer

    cb = BridgeCallback(project="tune", backends=[
        {"name": "mlflow", "tracking_uri": mlflow_server.url}])
    study = optuna.create_study(study_name="quad", sampler=optuna.samplers.RandomSampler(seed=3))
    # the best so far moves twice: trial 0, then 1, then 4 (the optimum, 0.1)
    for x in (-2.0, 0.0, 2.5, 2.5, 1.0):
        study.enqueue_trial({"x": x, "depth": 1, "kind": "a"})
    study.optimize(objective, n_trials=8, callbacks=[cb], catch=(RuntimeError,))
    states = [t.state.name for t in study.trials]
    assert states[2:4] == ["PRUNED", "FAIL"] and states.count("COMPLETE") == 6

    runs = trial_runs(spool)
    assert len(runs) == 8
    flags = {}
    for trial in study.trials:
        tags = check_trial(spool, study, trial, runs[f"trial-{trial.number}"], ["value"])
        assert tags["optuna.direction"] == "MINIMIZE"
        flags[trial.number] = tags["optuna.best"]
    # exactly the study's best trial says true, whatever was flagged before it
    assert flags == {t.number: "true" if t.number == study.best_trial.number else "false"
                     for t in study.trials}
    assert study.best_trial.number == 4
    for number in (0, 1):  # best when recorded, reopened and set to false later
        assert [e.payload for e in events(spool, runs[f"trial-{number}"]["run_id"])
                if e.kind == "tag" and e.key == "optuna.best"] == ["true", "false"]
        assert runs[f"trial-{number}"]["status"] == "FINISHED"

    summary = Syncer(spool).run_once()
    assert summary.complete, summary
    client = mlflow.MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("tune")
    for trial in study.trials:
        row = runs[f"trial-{trial.number}"]
        [found] = client.search_runs([exp.experiment_id],
                                     f"tags.`bridge.run_id` = '{row['run_id']}'")
        assert found.info.status == row["status"]
        assert found.info.run_name == f"trial-{trial.number}"
        assert found.data.tags["optuna.best"] == flags[trial.number]
        assert found.data.tags["optuna.state"] == trial.state.name
        assert found.data.tags["bridge.group"] == "quad"
        hist = client.get_metric_history(found.info.run_id, "intermediate/value")
        assert sorted((m.step, m.value) for m in hist) == sorted(trial.intermediate_values.items())
        assert found.data.params["depth"] == str(trial.params["depth"])


def test_two_objectives_flag_the_pareto_front(spool):
    def two(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        return x, (1.0 - x) ** 2

    cb = BridgeCallback(project="pareto", metric_name=["error", "cost"])
    study = optuna.create_study(study_name="two", directions=["minimize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(two, n_trials=6, callbacks=[cb])
    runs = trial_runs(spool)
    front = {t.number for t in study.best_trials}
    for trial in study.trials:
        row = runs[f"trial-{trial.number}"]
        kinds = by_kind(events(spool, row["run_id"]))
        assert kinds["summary"] == {"error": trial.values[0], "cost": trial.values[1]}
        assert kinds["tag"]["optuna.direction.error"] == "MINIMIZE"
        assert kinds["tag"]["optuna.direction.cost"] == "MAXIMIZE"
        assert kinds["tag"]["optuna.best"] == ("true" if trial.number in front else "false")
        assert "metric" not in kinds  # nothing reported


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_study_metric_names_and_a_wrong_count(spool):
    study = optuna.create_study(study_name="named")
    study.set_metric_names(["rmse"])
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2,
                   callbacks=[BridgeCallback(project="named")])
    for row in trial_runs(spool).values():
        assert set(by_kind(events(spool, row["run_id"]))["summary"]) == {"rmse"}
    with pytest.raises(ValueError, match="metric_name has 2 names"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1,
                       callbacks=[BridgeCallback(project="named", metric_name=["a", "b"])])
    with pytest.raises(ValueError, match="set by the callback"):
        BridgeCallback(project="p", name="fixed")
