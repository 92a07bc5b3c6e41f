"""MLflow's own fluent API and MlflowClient over ``bridge:`` (the tracking-store plugin):
what they record lands in the spool as bridge events, what they read comes back from it,
and what MLflow's stores refuse is refused here with the same error code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from bridge.spool.reader import iter_events, list_runs  # noqa: E402


@pytest.fixture
def spool(tmp_path, monkeypatch):
    """``bridge:///<tmp>/spool`` as MLflow's tracking URI, no backends (nothing delivered)."""
    monkeypatch.delenv("BRIDGE_BACKENDS", raising=False)
    monkeypatch.setenv("BRIDGE_CONFIG", str(tmp_path / "none.toml"))
    d = tmp_path / "spool"
    mlflow.set_tracking_uri(f"bridge://{d}")
    yield d
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    # set_experiment is process-wide (a module global and MLFLOW_EXPERIMENT_ID)
    mlflow.tracking.fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def _events(spool_dir, run_id):
    [rec] = [r for r in list_runs(spool_dir) if r.run_id == run_id]
    return rec, list(iter_events(rec.files, run_id))


def test_entry_points_are_registered():
    from importlib.metadata import entry_points

    for group in ("mlflow.tracking_store", "mlflow.artifact_repository",
                  "mlflow.model_registry_store"):
        [ep] = [e for e in entry_points(group=group) if e.name == "bridge"]
        assert ep.value.startswith("bridge.adapters.mlflow.plugin:")


def test_fluent_run_is_a_bridge_run(spool, tmp_path):
    exp_id = mlflow.set_experiment("nyc-taxi").experiment_id
    art = tmp_path / "preprocessor.b"
    art.write_bytes(b"x" * 100)
    with mlflow.start_run(run_name="first", tags={"developer": "ada"}) as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_params({"train": "jan", "n": 3})
        for i in range(3):
            mlflow.log_metric("rmse", 10.0 - i, step=i, timestamp=1_700_000_000_000 + i)
        mlflow.log_metrics({"a": 1, "b": 2.5})
        mlflow.set_tags({"stage": "dev"})
        mlflow.log_artifact(str(art), artifact_path="preprocessor")
        mlflow.log_text("hello", "notes/hello.txt")
        mlflow.log_dict({"k": 1}, "cfg.json")
        run_id = run.info.run_id
    assert len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id)

    # the spool holds it as a bridge run of project "nyc-taxi"
    rec, events = _events(spool, run_id)
    assert rec.project == "nyc-taxi" and rec.name == "first" and rec.status == "FINISHED"
    params = {e.key: e.payload for e in events if e.kind == "param"}
    assert params == {"alpha": "0.5", "train": "jan", "n": "3"}
    rmse = [(e.step, e.ts_ms, e.value) for e in events if e.kind == "metric" and e.key == "rmse"]
    assert rmse == [(i, 1_700_000_000_000 + i, 10.0 - i) for i in range(3)]
    arts = [e.payload for e in events if e.kind == "artifact"]
    assert {a["folder"] for a in arts} == {"preprocessor", "notes", None}

    # reads come back from the spool
    client = MlflowClient()
    got = client.get_run(run_id)
    assert got.info.experiment_id == exp_id and got.info.run_name == "first"
    assert got.info.status == "FINISHED" and got.info.end_time >= got.info.start_time
    assert got.data.params == {"alpha": "0.5", "train": "jan", "n": "3"}
    assert got.data.metrics == {"rmse": 8.0, "a": 1.0, "b": 2.5}
    assert got.data.tags["developer"] == "ada" and got.data.tags["stage"] == "dev"
    assert got.data.tags["mlflow.runName"] == "first"
    hist = client.get_metric_history(run_id, "rmse")
    assert [(m.step, m.timestamp, m.value) for m in hist] == rmse
    top = [(f.path, f.is_dir) for f in client.list_artifacts(run_id)]
    assert top == [("cfg.json", False), ("notes", True), ("preprocessor", True)]
    assert [f.path for f in client.list_artifacts(run_id, "preprocessor")] == [
        "preprocessor/preprocessor.b"]
    local = client.download_artifacts(run_id, "preprocessor", str(tmp_path / "dl"))
    assert (Path(local) / "preprocessor.b").read_bytes() == b"x" * 100
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/hello.txt") == "hello"
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/cfg.json") == {"k": 1}
    assert mlflow.last_active_run().info.run_id == run_id
    assert client.get_experiment_by_name("nyc-taxi").experiment_id == exp_id
    assert client.get_experiment(exp_id).name == "nyc-taxi"


def test_search_uses_mlflows_grammar(spool):
    mlflow.set_experiment("search")
    ids = {}
    for i, alpha in enumerate(["0.1", "0.5", "1.0"]):
        with mlflow.start_run(run_name=f"r{i}") as r:
            mlflow.log_param("alpha", alpha)
            mlflow.log_metric("rmse", 3.0 - i)
            mlflow.set_tag("kind", "even" if i % 2 == 0 else "odd")
            ids[f"r{i}"] = r.info.run_id
    with mlflow.start_run(run_name="parent") as parent:
        with mlflow.start_run(run_name="child", nested=True) as child:
            pass
    got = mlflow.search_runs(filter_string="metrics.rmse < 2.5 and tags.kind = 'even'",
                             output_format="list")
    assert [r.info.run_name for r in got] == ["r2"]
    got = mlflow.search_runs(filter_string="params.alpha != '1.0'",
                             order_by=["metrics.rmse ASC"], output_format="list")
    assert [r.info.run_name for r in got] == ["r1", "r0"]
    got = mlflow.search_runs(filter_string="attributes.run_name LIKE 'r%'",
                             order_by=["attributes.run_name DESC"], max_results=2,
                             output_format="list")
    assert [r.info.run_name for r in got] == ["r2", "r1"]
    df = mlflow.search_runs(order_by=["metrics.rmse DESC"])
    assert list(df["tags.mlflow.runName"])[:3] == ["r0", "r1", "r2"]
    kids = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                              output_format="list")
    assert [r.info.run_id for r in kids] == [child.info.run_id]
    exps = mlflow.search_experiments(filter_string="name LIKE 'sea%'")
    assert [e.name for e in exps] == ["search"]
    # pages
    client = MlflowClient()
    exp_id = exps[0].experiment_id
    page = client.search_runs([exp_id], max_results=2, order_by=["attributes.start_time ASC"])
    rest = client.search_runs([exp_id], max_results=10, page_token=page.token,
                              order_by=["attributes.start_time ASC"])
    assert len(page) == 2 and len(rest) == 3 and rest.token is None


def _code(call):
    with pytest.raises(MlflowException) as info:
        call()
    return info.value.error_code


REFUSALS = {
    "param changed": lambda c, r: (c.log_param(r, "p", "1"), c.log_param(r, "p", "2")),
    "bad metric name": lambda c, r: c.log_metric(r, "../up", 1.0),
    "bad param name": lambda c, r: c.log_param(r, "a/../b", "1"),
    "metric not a number": lambda c, r: c.log_batch(r, metrics=[Metric("m", "x", 0, 0)]),
    "duplicate params in a batch": lambda c, r: c.log_batch(
        r, params=[Param("d", "1"), Param("d", "2")]),
    "bad tag name": lambda c, r: c.set_tag(r, "", "v"),
    "unknown run": lambda c, r: c.get_run("0" * 32),
    "unknown experiment": lambda c, r: c.get_experiment("424242"),
    "experiment exists": lambda c, r: (c.create_experiment("dup"), c.create_experiment("dup")),
    "empty experiment name": lambda c, r: c.create_experiment(""),
    "Default exists": lambda c, r: c.create_experiment("Default"),
    "run name clash": lambda c, r: c.create_run("0", run_name="a",
                                                tags={"mlflow.runName": "b"}),
    "max_results too large": lambda c, r: c.search_runs(["0"], max_results=100_000),
}


@pytest.mark.parametrize("what", sorted(REFUSALS))
def test_refusals_match_mlflows_own_store(what, spool, tmp_path):
    """The same call against MLflow's sqlite store and bridge: fails with the same code."""
    codes = {}
    for uri in (f"sqlite:///{tmp_path / 'mlflow.db'}", f"bridge://{spool}"):
        client = MlflowClient(tracking_uri=uri)
        run = client.create_run("0")
        codes[uri.split(":")[0]] = _code(lambda: REFUSALS[what](client, run.info.run_id))
        client.set_terminated(run.info.run_id)
    assert codes["bridge"] == codes["sqlite"], codes


def test_unsupported_features_say_so(spool):
    client = MlflowClient()
    run = client.create_run("0")
    for call in (lambda: client.delete_run(run.info.run_id),
                 lambda: client.delete_tag(run.info.run_id, "x"),
                 lambda: client.rename_experiment("0", "other"),
                 lambda: client.create_registered_model("reg")):
        with pytest.raises(MlflowException) as info:
            call()
        assert info.value.error_code == "NOT_IMPLEMENTED"
        assert "not supported by the bridge tracking store" in str(info.value)
    assert client.search_registered_models() == []
    client.set_terminated(run.info.run_id)


def test_logged_model_and_sklearn_autolog(spool):
    pytest.importorskip("sklearn")
    import numpy as np
    from sklearn.linear_model import Ridge

    X = np.arange(40, dtype=float).reshape(20, 2)
    y = X @ np.array([1.0, -1.0])
    mlflow.set_experiment("models")
    with mlflow.start_run(run_name="manual") as run:
        mlflow.log_param("alpha", "0.1")
        mlflow.log_metric("rmse", 0.5, step=0)
        model = Ridge(alpha=0.1).fit(X, y)
        info = mlflow.sklearn.log_model(model, name="ridge")
    client = MlflowClient()
    lm = client.get_logged_model(info.model_id)
    assert lm.name == "ridge" and lm.source_run_id == run.info.run_id
    assert str(lm.status) == "READY" and lm.params["alpha"] == "0.1"
    assert [(m.key, m.step, m.value) for m in lm.metrics] == [("rmse", 0, 0.5)]
    files = {f.path for f in mlflow.artifacts.list_artifacts(f"models:/{info.model_id}")}
    assert {"MLmodel", "requirements.txt"} <= files
    loaded = mlflow.sklearn.load_model(f"models:/{info.model_id}")
    assert loaded.predict(X[:2]).tolist() == pytest.approx(model.predict(X[:2]).tolist())
    # the run still has one rmse point (MLflow re-logs it with the model's id)
    assert len(client.get_metric_history(run.info.run_id, "rmse")) == 1
    assert [o.model_id for o in client.get_run(run.info.run_id).outputs.model_outputs] == [
        info.model_id]
    rec, events = _events(spool, run.info.run_id)
    ops = [e.payload["op"] for e in events if e.kind == "model"]
    assert ops[0] == "create" and "files" in ops and "status" in ops

    mlflow.sklearn.autolog()
    try:
        with mlflow.start_run(run_name="auto") as auto:
            Ridge(alpha=0.3).fit(X, y)
    finally:
        mlflow.sklearn.autolog(disable=True)
    got = client.get_run(auto.info.run_id)
    assert got.data.params["alpha"] == "0.3"
    assert "training_score" in got.data.metrics
    assert got.data.tags["estimator_name"] == "Ridge"
    assert [d.dataset.name for d in got.inputs.dataset_inputs] == ["dataset"]
    exp_id = got.info.experiment_id
    models = client.search_logged_models([exp_id], order_by=[{"field_name": "creation_time"}])
    assert [m.source_run_id for m in models] == [run.info.run_id, auto.info.run_id]
    assert [m.name for m in client.search_logged_models(
        [exp_id], filter_string="name = 'ridge'")] == ["ridge"]


def test_failed_run_and_resume_from_another_client(spool):
    with pytest.raises(ZeroDivisionError):
        with mlflow.start_run(run_name="boom") as run:
            mlflow.log_metric("x", 1.0)
            1 / 0
    client = MlflowClient()
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    # MLflow accepts logging to a finished run: the run keeps its status
    client.log_metric(run.info.run_id, "late", 2.0)
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FAILED" and got.data.metrics["late"] == 2.0
    rec, events = _events(spool, run.info.run_id)
    assert json.loads(json.dumps(rec.status)) == "FAILED"


def test_bare_scheme_is_the_default_spool(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIDGE_DIR", str(tmp_path / "default"))
    monkeypatch.setenv("BRIDGE_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("BRIDGE_BACKENDS", raising=False)
    client = MlflowClient(tracking_uri="bridge:")
    run = client.create_run("0", run_name="bare")
    client.log_metric(run.info.run_id, "m", 1.0)
    client.set_terminated(run.info.run_id)
    [rec] = list_runs(tmp_path / "default")
    assert rec.run_id == run.info.run_id and rec.project == "Default"
    assert run.info.artifact_uri.startswith(f"bridge://{tmp_path / 'default'}/")


def test_media_calls_go_through_the_artifact_repository(spool):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with mlflow.start_run() as run:
        mlflow.log_image(np.zeros((8, 8, 3), dtype=np.uint8), key="sample", step=3)
        mlflow.log_image(np.ones((4, 4, 3), dtype=np.uint8), artifact_file="img/one.png")
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3])
        mlflow.log_figure(fig, "plots/line.png")
        plt.close(fig)
        mlflow.log_table({"a": [1, 2], "b": ["x", "y"]}, artifact_file="tables/t.json")
        mlflow.log_table({"a": [3], "b": ["z"]}, artifact_file="tables/t.json")
    client = MlflowClient()
    rid = run.info.run_id
    paths = set()
    stack = [None]
    while stack:
        for f in client.list_artifacts(rid, stack.pop()):
            (stack.append(f.path) if f.is_dir else paths.add(f.path))
    assert {"img/one.png", "plots/line.png", "tables/t.json"} <= paths
    assert any(p.startswith("images/sample") for p in paths)
    assert client.get_run(rid).data.tags["mlflow.loggedImages"] == "True"
    table = mlflow.load_table("tables/t.json", run_ids=[rid])
    assert list(table["a"]) == [1, 2, 3]
