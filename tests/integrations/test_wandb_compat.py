"""``bridge.compat.wandb``: a ``wandb.log`` training loop, unchanged but for its import."""

from __future__ import annotations

import argparse
import hashlib
import warnings

import pytest

import bridge
import bridge.compat.wandb as wandb  # was: import wandb
from bridge.disabled import DisabledRun
from bridge.errors import BridgeWarning
from bridge_readback import by_kind, events, metric_series, mlflow_run, sync_to_mlflow


@pytest.fixture(autouse=True)
def fresh_shim(spool):
    yield
    wandb.finish()


def training_script(workdir):
    """The shape of W&B's quickstart: config, a loop of wandb.log, summary, files."""
    run = wandb.init(project="mnist", name="baseline", config={"lr": 0.01, "epochs": 3},
                     tags=["baseline", "cpu"], notes="first try", group="sweep-1",
                     job_type="train")
    config = wandb.config
    config.batch_size = 32
    config.update({"optimizer": {"name": "sgd", "momentum": 0.9}})
    loss = 1.0
    for epoch in range(config.epochs):
        for _batch in range(4):
            loss *= 1 - config.lr * 10
            wandb.log({"train/loss": loss})
        wandb.log({"val": {"acc": 1 - loss}}, commit=False)
        wandb.log({"epoch": epoch})
    wandb.summary["best_acc"] = 1 - loss
    (workdir / "model.txt").write_text("weights")
    wandb.save(str(workdir / "model.txt"))
    artifact = wandb.Artifact("dataset", type="dataset")
    (workdir / "data").mkdir()
    (workdir / "data" / "train.csv").write_text("x,y\n")
    artifact.add_dir(workdir / "data")
    artifact.add_file(workdir / "model.txt", name="extra/model.txt")
    run.log_artifact(artifact)
    run_id, name = run.id, run.name
    wandb.finish()
    return run_id, name


def test_wandb_loop_arrives_in_spool_and_mlflow(spool, tmp_path):
    run_id, name = training_script(tmp_path)
    assert wandb.run is None and name == "baseline"
    evs = events(spool, run_id)
    loss = metric_series(evs, "train/loss")
    assert [s for s, _ in loss] == [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13]
    assert metric_series(evs, "val.acc")[0][0] == 4  # commit=False: same step as "epoch"
    assert metric_series(evs, "epoch") == [(4, 0.0), (9, 1.0), (14, 2.0)]
    kinds = by_kind(evs)
    assert kinds["param"] == {"lr": 0.01, "epochs": 3, "batch_size": 32,
                              "optimizer": {"name": "sgd", "momentum": 0.9}}
    assert kinds["tag"] == {"baseline": "", "cpu": "", "wandb.job_type": "train"}
    assert kinds["summary"]["best_acc"] == pytest.approx(1 - loss[-1][1])
    assert kinds["artifact"]["model.txt"]["type"] == "file"
    ds = kinds["artifact"]["dataset"]
    assert ds["type"] == "dataset" and ds["is_dir"]
    assert sorted(f["path"] for f in ds["files"]) == ["extra/model.txt", "train.csv"]

    client = sync_to_mlflow(spool)
    mr = mlflow_run(client, run_id)
    assert mr.info.run_name == "baseline" and mr.info.status == "FINISHED"
    assert client.get_experiment(mr.info.experiment_id).name == "mnist"
    hist = client.get_metric_history(mr.info.run_id, "train/loss")
    assert sorted(m.step for m in hist) == [s for s, _ in loss]
    assert mr.data.params["optimizer.momentum"] == "0.9"
    assert mr.data.tags["bridge.group"] == "sweep-1"
    assert mr.data.tags["mlflow.note.content"] == "first try"
    assert float(mr.data.tags["summary.best_acc"]) == pytest.approx(1 - loss[-1][1])
    paths = {f.path for f in client.list_artifacts(mr.info.run_id, "dataset")}
    assert paths == {"dataset/extra", "dataset/train.csv"}


def test_explicit_steps_and_resume_by_wandb_id(spool):
    run = wandb.init(project="p", id="abc123xy", config=argparse.Namespace(lr=0.1))
    assert run.id == "abc123xy" and run.bridge_run.id == hashlib.md5(b"abc123xy").hexdigest()
    assert wandb.config.lr == 0.1 and wandb.config["lr"] == 0.1
    wandb.log({"a": 1.0}, step=5)
    wandb.log({"b": 2.0}, step=5)  # same step, not yet committed
    wandb.log({"c": 3.0})  # joins step 5, then commits
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wandb.log({"a": 9.0}, step=2)  # below the current step: dropped, as W&B does
    assert any(issubclass(w.category, BridgeWarning) for w in caught)
    wandb.finish()
    again = wandb.init(project="p", id="abc123xy", resume="allow")
    assert again.bridge_run.id == run.bridge_run.id and again.step == 6
    wandb.log({"a": 4.0})
    wandb.finish(exit_code=1)
    evs = events(spool, run.bridge_run.id)
    assert metric_series(evs, "a") == [(5, 1.0), (6, 4.0)]
    assert metric_series(evs, "b") == [(5, 2.0)] and metric_series(evs, "c") == [(5, 3.0)]
    assert by_kind(evs)["tag"]["wandb.id"] == "abc123xy"
    assert bridge.runs(dir=spool).iloc[-1]["status"] == "FAILED"


def test_reinit_and_modes(spool):
    first = wandb.init(project="p")
    assert wandb.init(project="p") is first  # a second init returns the active run
    second = wandb.init(project="p", reinit="finish_previous")
    assert second is not first and first.bridge_run.status == "FINISHED"
    wandb.finish()
    off = wandb.init(project="p", mode="disabled", config={"lr": 1})
    assert isinstance(off.bridge_run, DisabledRun) and wandb.config.lr == 1
    wandb.log({"x": 1.0})
    wandb.finish()
    assert bridge.runs(dir=spool)["run_id"].tolist() == [first.id, second.id]


def test_log_before_init_is_an_error():
    with pytest.raises(RuntimeError):
        wandb.log({"a": 1})
