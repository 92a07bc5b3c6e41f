"""``bridge.compat.mlflow``: an MLflow-style script, unchanged but for its import."""

from __future__ import annotations

import json
import warnings

import pytest

import bridge
import bridge.compat.mlflow as mlflow  # was: import mlflow
from bridge.errors import BridgeWarning, RunStateError
from bridge_readback import by_kind, events, metric_series, mlflow_run, sync_to_mlflow


@pytest.fixture(autouse=True)
def fresh_shim(spool):
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.configure()
    mlflow._experiment = None
    from bridge.compat import mlflow_passthrough

    if mlflow_passthrough.enabled():  # MLflow's own state, reached through the shim
        import mlflow as real_mlflow

        real_mlflow.autolog(disable=True)
        real_mlflow.sklearn.autolog(disable=True)  # a flavor's own switch is its own
        while real_mlflow.active_run() is not None:
            real_mlflow.end_run()
        real_mlflow.set_tracking_uri(None)
        mlflow_passthrough._enabled = False


def train(lr: float, epochs: int) -> float:
    loss = 1.0
    for epoch in range(epochs):
        loss *= 1 - lr
        mlflow.log_metric("loss", loss, step=epoch)
        mlflow.log_metrics({"acc": 1 - loss, "lr": lr}, step=epoch)
    return loss


def hyperparameter_search(tmp_path):
    """The shape of MLflow's hyperparameter-tuning examples: a parent run, a child per trial."""
    mlflow.set_experiment("hpo")
    report = tmp_path / "report.md"
    report.write_text("# search\n")
    with mlflow.start_run(run_name="search", description="grid over lr") as parent:
        mlflow.log_param("n_trials", 3)
        mlflow.set_tags({"team": "vision", "stage": "dev"})
        best = None
        for lr in (0.5, 0.1, 0.01):
            with mlflow.start_run(run_name=f"lr={lr}", nested=True) as child:
                mlflow.log_params({"lr": lr, "epochs": 5})
                loss = train(lr, 5)
                mlflow.set_tag("trial", "ok")
                mlflow.log_metric("final_loss", loss, timestamp=1_700_000_000_000)
                if best is None or loss < best[0]:
                    best = (loss, lr, child.info.run_id)
        mlflow.log_metric("best_loss", best[0])
        mlflow.log_dict({"best_lr": best[1]}, "best/params.json")
        mlflow.log_text("lr,loss\n", "tables/results.csv")
        mlflow.log_artifact(report, artifact_path="reports")
    return parent, best


def test_hyperparameter_loop_with_nested_runs(spool, tmp_path):
    parent, best = hyperparameter_search(tmp_path)
    assert mlflow.active_run() is None
    assert parent.info.status == "FINISHED" and parent.info.experiment_id == "hpo"
    runs = bridge.runs(project="hpo", dir=spool)
    assert list(runs["name"]) == ["search", "lr=0.5", "lr=0.1", "lr=0.01"]
    assert set(runs["status"]) == {"FINISHED"}
    children = runs[runs["name"] != "search"]
    for run_id in children["run_id"]:
        kinds = by_kind(events(spool, run_id))
        assert kinds["tag"]["mlflow.parentRunId"] == parent.info.run_id
        assert kinds["tag"]["bridge.parent_run_id"] == parent.info.run_id
        assert len(metric_series(events(spool, run_id), "loss")) == 5
    pkinds = by_kind(events(spool, parent.info.run_id))
    assert "mlflow.parentRunId" not in pkinds["tag"]
    assert pkinds["note"] == {"notes": "grid over lr"}
    df = bridge.data(project="hpo", run=best[2], event="metric", key="loss", dir=spool)
    assert list(df["step"]) == [0, 1, 2, 3, 4]

    client = sync_to_mlflow(spool)
    exp = client.get_experiment_by_name("hpo")
    mp = mlflow_run(client, parent.info.run_id)
    assert mp.info.run_name == "search" and mp.info.experiment_id == exp.experiment_id
    assert mp.data.params == {"n_trials": "3"}
    assert mp.data.tags["team"] == "vision"
    assert mp.data.metrics["best_loss"] == pytest.approx(best[0])
    files = {f.path for f in client.list_artifacts(mp.info.run_id)}
    assert {"best", "tables", "reports"} <= files
    assert [f.path for f in client.list_artifacts(mp.info.run_id, "reports")] == [
        "reports/report.md"]
    local = client.download_artifacts(mp.info.run_id, "best/params.json", str(tmp_path / "dl"))
    assert json.loads(open(local).read()) == {"best_lr": best[1]} == {"best_lr": 0.5}
    mc = mlflow_run(client, best[2])
    # the child nests under the parent's MLflow run (the adapter resolves the bridge id)
    assert mc.data.tags["mlflow.parentRunId"] == mp.info.run_id
    assert mc.data.params == {"lr": "0.5", "epochs": "5"}
    hist = client.get_metric_history(mc.info.run_id, "loss")
    assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [0, 1, 2, 3, 4]
    (final,) = client.get_metric_history(mc.info.run_id, "final_loss")
    assert final.timestamp == 1_700_000_000_000


def test_plain_start_resume_and_errors(spool):
    active = mlflow.start_run(run_name="plain")
    run_id = active.info.run_id
    assert mlflow.active_run() is active and bridge.run() is active.run
    with pytest.raises(RunStateError):
        mlflow.start_run()  # one active run unless nested, as in MLflow
    mlflow.log_metric("m", 1.0, step=0)
    mlflow.end_run()
    assert mlflow.active_run() is None and mlflow.last_active_run() is active
    with mlflow.start_run(run_id=run_id) as resumed:  # resume: same bridge run
        assert resumed.info.run_id == run_id
        mlflow.log_metric("m", 2.0, step=1)
    assert metric_series(events(spool, run_id), "m") == [(0, 1.0), (1, 2.0)]
    with pytest.raises(RunStateError):
        mlflow.start_run(run_id="0" * 32)  # MLflow fails for an unknown run id too


def test_logging_without_a_run_starts_one_and_failure_is_recorded(spool):
    mlflow.log_param("a", 1)
    auto = mlflow.active_run()
    assert auto is not None and auto.data.params == {"a": "1"}
    mlflow.end_run(status="KILLED")
    with pytest.raises(ValueError):
        with mlflow.start_run() as failing:
            raise ValueError("boom")
    runs = bridge.runs(dir=spool).set_index("run_id")
    assert runs.loc[auto.info.run_id, "status"] == "KILLED"
    assert runs.loc[failing.info.run_id, "status"] == "FAILED"


def test_figure_and_artifacts(spool, tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    d = tmp_path / "outputs"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "sub" / "b.txt").write_text("b")
    with mlflow.start_run() as active:
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        mlflow.log_figure(fig, "figures/curve.png")
        mlflow.log_artifacts(d, artifact_path="outputs")
    arts = by_kind(events(spool, active.info.run_id))["artifact"]
    assert arts["figures"]["files"][0]["path"] == "curve.png"
    assert sorted(f["path"] for f in arts["outputs"]["files"]) == ["a.txt", "sub/b.txt"]
    client = sync_to_mlflow(spool)
    mr = mlflow_run(client, active.info.run_id)
    assert [f.path for f in client.list_artifacts(mr.info.run_id, "figures")] == [
        "figures/curve.png"]
    assert {f.path for f in client.list_artifacts(mr.info.run_id, "outputs")} == {
        "outputs/a.txt", "outputs/sub"}


def test_set_tracking_uri_becomes_the_backend(spool, tmp_path):
    uri = f"sqlite:///{tmp_path}/other.db"
    mlflow.set_tracking_uri(uri)
    assert mlflow.get_tracking_uri() == uri
    with mlflow.start_run() as active:
        pass
    assert active.run.backends == [{"name": "mlflow", "tracking_uri": uri}]


def test_mlflow_api_beyond_the_shim_lands_in_the_same_run(spool, tmp_path, monkeypatch):
    """The seed workflow's first crash under the shim: ``mlflow.sklearn.log_model`` and
    ``mlflow.sklearn.autolog()`` are MLflow's own, recording into the shim's run."""
    pytest.importorskip("mlflow")
    np = pytest.importorskip("numpy")
    linear_model = pytest.importorskip("sklearn.linear_model")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMET_DISABLE_AUTO_LOGGING", "1")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 4)), rng.normal(size=200)
    mlflow.set_experiment("taxi")
    mlflow.sklearn.autolog(log_models=False)
    try:
        with mlflow.start_run(run_name="ridge") as active:
            mlflow.log_param("features", 4)
            model = linear_model.Ridge(alpha=0.5).fit(X, y)
            mlflow.log_metric("rmse", 0.9, step=1)
            info = mlflow.sklearn.log_model(model, name="model")
    finally:
        mlflow.sklearn.autolog(disable=True)  # MLflow's patches are process-wide
    kinds = by_kind(events(spool, active.info.run_id))
    assert kinds["param"]["features"] == 4  # the shim's own call
    assert kinds["param"]["alpha"] == "0.5"  # autolog's, through MLflow and the plugin
    assert "training_score" in kinds["metric"]
    assert kinds["metric"]["rmse"] == 0.9
    assert info.model_id in kinds["model"]  # the logged model, keyed by its id
    runs = bridge.runs(dir=spool)
    assert list(runs[runs.project == "taxi"].run_id) == [active.info.run_id]
    assert runs.set_index("run_id").loc[active.info.run_id, "status"] == "FINISHED"
