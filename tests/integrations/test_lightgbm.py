"""``bridge_callback`` for LightGBM: real ``lgb.train``, ``lgb.cv`` and ``LGBMRegressor`` fits
of tiny models on CPU, read back point by point against ``record_evaluation``."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")
lgb = pytest.importorskip("lightgbm")

import bridge  # noqa: E402
from bridge.integrations.lightgbm import bridge_callback  # noqa: E402
from bridge.spool.blobs import blob_path  # noqa: E402
from bridge_readback import by_kind, events, metric_series  # noqa: E402

BASE = {"objective": "regression", "learning_rate": 0.5, "num_leaves": 4,
        "min_data_in_leaf": 5, "verbose": -1, "seed": 0, "deterministic": True,
        "num_threads": 1}


def data(n: int = 200):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    return x, x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=n)


def datasets():
    x, y = data()
    train = lgb.Dataset(x[:150], y[:150])
    return train, lgb.Dataset(x[150:], y[150:], reference=train)


def only_run(spool):
    runs = bridge.runs(dir=spool)
    assert len(runs) == 1, runs
    return runs.iloc[0]


def assert_same_history(evs, history: dict) -> None:
    """Every point LightGBM recorded is in the run, at its iteration, with its value."""
    assert history
    for data_name, metrics in history.items():
        for metric, values in metrics.items():
            got = metric_series(evs, f"{data_name}-{metric}")
            assert [s for s, _ in got] == list(range(len(values)))
            assert [v for _, v in got] == [float(v) for v in values]


def best_scores(booster) -> dict:
    return {f"best_score/{d}-{m}": float(v)
            for d, scores in booster.best_score.items() for m, v in scores.items()}


def test_early_stopping_from_params_ends_the_run(spool):
    train, val = datasets()
    history: dict = {}
    cb = bridge_callback(project="lgb", name="tiny", log_model=True)
    booster = lgb.train(dict(BASE, early_stopping_round=3, metric=["l2", "l1"]), train, 100,
                        valid_sets=[train, val], valid_names=["train", "val"],
                        callbacks=[cb, lgb.record_evaluation(history)])
    assert 0 < booster.best_iteration and len(history["val"]["l2"]) < 100  # it did stop early
    row = only_run(spool)
    assert (row["status"], row["name"]) == ("FINISHED", "tiny")  # finished inside train()
    evs = events(spool, row["run_id"])
    assert_same_history(evs, history)
    kinds = by_kind(evs)
    assert set(kinds["metric"]) == {"train-l2", "train-l1", "val-l2", "val-l1"}
    assert kinds["summary"] == {"best_iteration": booster.best_iteration, **best_scores(booster)}
    # the best iteration's point is the one at step best_iteration - 1
    assert dict(metric_series(evs, "val-l2"))[booster.best_iteration - 1] == \
        kinds["summary"]["best_score/val-l2"]
    assert kinds["param"]["num_leaves"] == 4 and kinds["param"]["early_stopping_round"] == 3
    model = kinds["artifact"]["model"]
    assert (model["type"], model["files"][0]["path"]) == ("model", "model.txt")
    saved = lgb.Booster(model_str=blob_path(spool, model["files"][0]["sha256"]).read_text())
    assert saved.num_trees() == booster.best_iteration  # as LightGBM saves: the best trees
    x, _ = data()
    np.testing.assert_allclose(saved.predict(x),
                               booster.predict(x, num_iteration=booster.best_iteration))


def test_early_stopping_handed_to_the_callback(spool):
    train, val = datasets()
    history: dict = {}
    cb = bridge_callback(project="lgb", early_stopping=lgb.early_stopping(2, verbose=False))
    booster = lgb.train(dict(BASE, learning_rate=0.9), train, 100, valid_sets=[val],
                        valid_names=["val"], callbacks=[cb, lgb.record_evaluation(history)])
    assert len(history["val"]["l2"]) < 100
    row = only_run(spool)
    assert row["status"] == "FINISHED"
    evs = events(spool, row["run_id"])
    assert_same_history(evs, history)
    assert by_kind(evs)["summary"] == {"best_iteration": booster.best_iteration,
                                       **best_scores(booster)}


def test_no_early_stopping_ends_at_the_last_iteration(spool):
    train, val = datasets()
    history: dict = {}
    run = bridge.init(project="mine")
    lgb.train(BASE, train, 6, valid_sets=[val], valid_names=["val"],
              callbacks=[bridge_callback(run), lgb.record_evaluation(history)])
    assert run.status == "RUNNING"  # not started by the callback: left open
    run.finish()
    evs = events(spool, run.id)
    assert_same_history(evs, history)
    # no best iteration; best_score is the last iteration's, as booster.best_score holds
    assert by_kind(evs)["summary"] == {"best_score/val-l2": history["val"]["l2"][-1]}


def test_separate_early_stopping_needs_finish(spool):
    train, val = datasets()
    cb = bridge_callback(project="lgb")
    booster = lgb.train(dict(BASE, learning_rate=0.9), train, 100, valid_sets=[val],
                        valid_names=["val"], callbacks=[lgb.early_stopping(2, verbose=False), cb])
    cb.run.flush()
    assert only_run(spool)["status"] == "RUNNING"  # the end was not visible to the callback
    cb.finish(booster)
    row = only_run(spool)
    assert row["status"] == "FINISHED"
    assert by_kind(events(spool, row["run_id"]))["summary"] == {
        "best_iteration": booster.best_iteration, **best_scores(booster)}


def test_cv_mean_and_stdv(spool):
    x, y = data()
    result = lgb.cv(dict(BASE, metric="l2"), lgb.Dataset(x, y), num_boost_round=5, nfold=3,
                    stratified=False, seed=0, callbacks=[bridge_callback(project="lgb-cv")])
    row = only_run(spool)
    assert row["status"] == "FINISHED"
    evs = events(spool, row["run_id"])
    for name in ("valid-l2-mean", "valid-l2-stdv"):
        got = metric_series(evs, name)
        assert [s for s, _ in got] == list(range(5))
        assert [v for _, v in got] == result[name.replace("valid-", "valid ")]


def test_sklearn_regressor_synced_to_a_mlflow_server(spool, mlflow_server):
    mlflow = pytest.importorskip("mlflow")
    from bridge.agent.sync import Syncer

    x, y = data()
    reg = lgb.LGBMRegressor(n_estimators=7, num_leaves=4, learning_rate=0.5,
                            min_child_samples=5, verbose=-1, random_state=0)
    cb = bridge_callback(project="lgb-sk", log_model=True,
                         backends=[{"name": "mlflow", "tracking_uri": mlflow_server.url}])
    reg.fit(x[:150], y[:150], eval_X=(x[150:],), eval_y=(y[150:],), eval_names=["holdout"],
            eval_metric="l1", callbacks=[cb])
    history = reg.evals_result_
    assert set(history["holdout"]) == {"l2", "l1"}
    row = only_run(spool)
    assert row["status"] == "FINISHED"
    evs = events(spool, row["run_id"])
    assert_same_history(evs, history)

    summary = Syncer(spool).run_once()
    assert summary.complete, summary
    client = mlflow.MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("lgb-sk")
    [found] = client.search_runs([exp.experiment_id],
                                 f"tags.`bridge.run_id` = '{row['run_id']}'")
    assert found.info.status == "FINISHED"
    for metric, values in history["holdout"].items():
        hist = client.get_metric_history(found.info.run_id, f"holdout-{metric}")
        assert sorted((m.step, m.value) for m in hist) == \
            [(i, pytest.approx(v)) for i, v in enumerate(values)]
    assert found.data.params["num_leaves"] == "4"
    assert [f.path for f in client.list_artifacts(found.info.run_id, "model")] == \
        ["model/model.txt"]
