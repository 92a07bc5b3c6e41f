"""``BridgeCallback`` for XGBoost: real ``xgb.train``, ``xgb.cv`` and ``XGBRegressor`` fits of
tiny models on CPU, read back point by point against XGBoost's own evaluation history."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")
xgb = pytest.importorskip("xgboost")

import bridge  # noqa: E402
from bridge.integrations.xgboost import BridgeCallback  # noqa: E402
from bridge.spool.blobs import blob_path  # noqa: E402
from bridge_readback import by_kind, events, metric_series  # noqa: E402


def data(n: int = 120):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4))
    y = x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=n)
    return x, y


def load_booster(spool, artifact: dict):
    """The model file the run holds, loaded by XGBoost itself."""
    booster = xgb.Booster()
    booster.load_model(bytearray(blob_path(spool, artifact["files"][0]["sha256"]).read_bytes()))
    return booster


def only_run(spool):
    runs = bridge.runs(dir=spool)
    assert len(runs) == 1, runs
    return runs.iloc[0]


def assert_same_history(evs, history: dict, suffix: str = "") -> None:
    """Every point XGBoost recorded is in the run, at its iteration, with its value."""
    assert history
    for data_name, metrics in history.items():
        for metric, values in metrics.items():
            got = metric_series(evs, f"{data_name}-{metric}{suffix}")
            assert [s for s, _ in got] == list(range(len(values)))
            assert [v for _, v in got] == [float(v) for v in values]


def test_train_with_early_stopping_and_model(spool):
    x, y = data()
    labels = (y > 0).astype(int)
    dtrain = xgb.DMatrix(x[:90], label=labels[:90])
    dval = xgb.DMatrix(x[90:], label=labels[90:])
    history: dict = {}
    params = {"objective": "binary:logistic", "max_depth": 2, "eta": 0.5,
              "eval_metric": ["error", "logloss"], "seed": 0}
    booster = xgb.train(params, dtrain, num_boost_round=60, evals=[(dtrain, "train"),
                        (dval, "eval")], early_stopping_rounds=3, evals_result=history,
                        verbose_eval=False,
                        callbacks=[BridgeCallback(project="xgb", name="tiny", log_model=True)])
    assert len(history["eval"]["logloss"]) < 60  # early stopping did stop it
    row = only_run(spool)
    assert (row["status"], row["name"], row["project"]) == ("FINISHED", "tiny", "xgb")
    evs = events(spool, row["run_id"])
    assert_same_history(evs, history)
    kinds = by_kind(evs)
    assert set(kinds["metric"]) == {"train-error", "train-logloss", "eval-error", "eval-logloss"}
    assert kinds["summary"] == {"best_iteration": booster.best_iteration,
                                "best_score": pytest.approx(booster.best_score)}
    p = kinds["param"]  # the booster's effective configuration
    assert (p["objective"], p["max_depth"], p["booster"]) == ("binary:logistic", 2, "gbtree")
    assert p["eval_metric"] == ["error", "logloss"] and p["eta"] == pytest.approx(0.5)
    model = kinds["artifact"]["model"]
    assert model["type"] == "model" and model["files"][0]["path"] == "model.json"
    saved = load_booster(spool, model)
    assert saved.num_boosted_rounds() == booster.num_boosted_rounds()
    np.testing.assert_allclose(saved.predict(dval), booster.predict(dval))


def test_params_given_and_a_run_of_your_own(spool):
    x, y = data()
    dtrain = xgb.DMatrix(x, label=y)
    run = bridge.init(project="mine")
    params = {"max_depth": 3, "eta": 0.3, "objective": "reg:squarederror"}
    history: dict = {}
    xgb.train(params, dtrain, num_boost_round=4, evals=[(dtrain, "train")], verbose_eval=False,
              evals_result=history,
              callbacks=[BridgeCallback(run=run, params=params, log_model=True,
                                        model_format="ubj")])
    assert run.status == "RUNNING"  # not started by the callback: left open
    run.finish()
    evs = events(spool, run.id)
    kinds = by_kind(evs)
    assert kinds["param"] == params  # exactly what was given
    assert_same_history(evs, history)
    assert "summary" not in kinds  # no early stopping, no best iteration
    model = kinds["artifact"]["model"]
    assert model["files"][0]["path"] == "model.ubj"
    assert load_booster(spool, model).num_boosted_rounds() == 4


def test_clones_for_a_grid_search(spool):
    sklearn_base = pytest.importorskip("sklearn.base")
    x, y = data()
    reg = xgb.XGBRegressor(n_estimators=3, max_depth=2,
                           callbacks=[BridgeCallback(project="grid")])
    for depth in (1, 2):  # what GridSearchCV does with each candidate
        sklearn_base.clone(reg).set_params(max_depth=depth).fit(x, y, eval_set=[(x, y)],
                                                                 verbose=False)
    runs = bridge.runs(dir=spool)
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    depths = sorted(by_kind(events(spool, r))["param"]["max_depth"] for r in runs["run_id"])
    assert depths == [1, 2]

    run = bridge.init(project="mine")
    shared = sklearn_base.clone(xgb.XGBRegressor(n_estimators=2,
                                                 callbacks=[BridgeCallback(run=run)]))
    shared.fit(x, y, eval_set=[(x, y)], verbose=False)
    assert shared.get_params()["callbacks"][0].run is run  # copied, still the same run
    run.finish()
    assert len(metric_series(events(spool, run.id), "validation_0-rmse")) == 2


def test_cv_mean_and_std(spool):
    x, y = data()
    table = xgb.cv({"max_depth": 2, "eta": 0.5, "objective": "reg:squarederror"},
                   xgb.DMatrix(x, label=y), num_boost_round=5, nfold=3, seed=0,
                   callbacks=[BridgeCallback(project="xgb-cv")])
    evs = events(spool, only_run(spool)["run_id"])
    for column in ("train-rmse-mean", "train-rmse-std", "test-rmse-mean", "test-rmse-std"):
        got = metric_series(evs, column)
        assert [s for s, _ in got] == list(range(5))
        assert [v for _, v in got] == pytest.approx(list(table[column]), rel=1e-12)


def test_sklearn_regressor_synced_to_a_mlflow_server(spool, mlflow_server):
    mlflow = pytest.importorskip("mlflow")
    from bridge.agent.sync import Syncer

    x, y = data()
    reg = xgb.XGBRegressor(n_estimators=8, max_depth=2, learning_rate=0.4,
                           early_stopping_rounds=3,
                           callbacks=[BridgeCallback(project="xgb-sk", backends=[
                               {"name": "mlflow", "tracking_uri": mlflow_server.url}])])
    reg.fit(x[:90], y[:90], eval_set=[(x[:90], y[:90]), (x[90:], y[90:])], verbose=False)
    history = reg.evals_result()
    assert set(history) == {"validation_0", "validation_1"}
    row = only_run(spool)
    evs = events(spool, row["run_id"])
    assert_same_history(evs, history)
    kinds = by_kind(evs)
    assert kinds["summary"]["best_iteration"] == reg.best_iteration
    assert kinds["param"]["max_depth"] == 2

    summary = Syncer(spool).run_once()
    assert summary.complete, summary
    client = mlflow.MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("xgb-sk")
    [found] = client.search_runs([exp.experiment_id],
                                 f"tags.`bridge.run_id` = '{row['run_id']}'")
    assert found.info.status == "FINISHED"
    for data_name, metrics in history.items():
        for metric, values in metrics.items():
            hist = client.get_metric_history(found.info.run_id, f"{data_name}-{metric}")
            assert sorted((m.step, m.value) for m in hist) == \
                [(i, pytest.approx(v)) for i, v in enumerate(values)]
    assert found.data.params["max_depth"] == "2"
