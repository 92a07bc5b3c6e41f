"""``SummaryWriter``: a TensorBoard-style loop, unchanged but for its import."""

from __future__ import annotations

import math
import warnings

import pytest

import bridge
from bridge.errors import BridgeWarning
from bridge.summary_writer import SummaryWriter  # was: from torch.utils.tensorboard import ...
from bridge_readback import by_kind, events, metric_series, mlflow_run, sync_to_mlflow


def tensorboard_script():
    """The shape of torch's SummaryWriter tutorial."""
    writer = SummaryWriter("runs/exp1")
    for n_iter in range(20):
        writer.add_scalar("Loss/train", 1.0 / (n_iter + 1), n_iter)
        writer.add_scalar("Loss/test", 2.0 / (n_iter + 1), n_iter, walltime=1_700_000_000.5)
        writer.add_scalars("run_14h", {"xsinx": n_iter * math.sin(n_iter / 5),
                                       "xcosx": n_iter * math.cos(n_iter / 5)}, n_iter)
    writer.add_text("notes", "first try", 0)
    writer.add_text("summary", "done")
    writer.add_hparams({"lr": 0.1, "bsize": 1}, {"hparam/accuracy": 10, "hparam/loss": 10})
    writer.add_histogram("weights", [1, 2, 3], 0)
    writer.add_histogram("weights", [1, 2, 3], 1)
    writer.flush()
    writer.close()
    return writer


def test_tensorboard_loop_arrives_in_spool_and_mlflow(spool):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer = tensorboard_script()
    assert not [w for w in caught if issubclass(w.category, BridgeWarning)]
    run = writer.run
    assert run.warnings == 0
    assert run.status == "FINISHED" and run.name == "exp1"
    evs = events(spool, run.id)
    assert metric_series(evs, "Loss/train") == [(i, 1.0 / (i + 1)) for i in range(20)]
    assert {e.ts_ms for e in evs if e.key == "Loss/test"} == {1_700_000_000_500}
    assert len(metric_series(evs, "run_14h/xsinx")) == 20
    assert metric_series(evs, "hparam/accuracy") == [(None, 10.0)]
    kinds = by_kind(evs)
    assert kinds["param"] == {"lr": 0.1, "bsize": 1}
    texts = {e.key: (e.step, e.payload["data"]["text"]) for e in evs
             if e.kind == "media" and e.payload["type"] == "text"}
    assert texts == {"notes": (0, "first try"), "summary": (None, "done")}  # text series
    hists = [(e.step, e.payload["data"]["counts"]) for e in evs if e.key == "weights"]
    assert [(s, sum(c)) for s, c in hists] == [(0, 3.0), (1, 3.0)]
    assert kinds["tag"]["bridge.logdir"] == "runs/exp1"

    client = sync_to_mlflow(spool)
    mr = mlflow_run(client, run.id)
    assert mr.info.run_name == "exp1" and mr.info.status == "FINISHED"
    hist = client.get_metric_history(mr.info.run_id, "Loss/train")
    assert sorted((m.step, m.value) for m in hist) == [(i, 1.0 / (i + 1)) for i in range(20)]
    assert mr.data.params == {"lr": "0.1", "bsize": "1"}
    media = {f.path for f in client.list_artifacts(mr.info.run_id, "media")}
    assert {"media/notes", "media/summary", "media/weights"} <= media


def test_experiment_logger_style_and_an_existing_run(spool):
    run = bridge.init(project="p")
    logger = SummaryWriter(run=run)  # ML Tracking Ops: logger.add_scalar(name, value, step)
    for step in range(3):
        logger.add_scalar("acc", step / 10, step)
    logger.close()
    assert run.status == "RUNNING"  # a run the writer did not start stays open
    run.finish()
    assert metric_series(events(spool, run.id), "acc") == [(0, 0.0), (1, 0.1), (2, 0.2)]


def test_context_manager_and_figure(spool):
    plt = pytest.importorskip("matplotlib.pyplot")
    with SummaryWriter(log_dir="runs/fig", comment="-a", project="figs") as w:
        fig = plt.figure()
        plt.plot([1, 2, 3])
        w.add_figure("plots/curve", fig, global_step=2)
        w.add_scalar("x", 1.0)
    assert w.run.status == "FINISHED" and w.run.name == "fig-a" and w.run.project == "figs"
    (ev,) = [e for e in events(spool, w.run.id) if e.key == "plots/curve"]
    assert (ev.kind, ev.step, ev.payload["type"]) == ("media", 2, "image")
    assert ev.payload["items"][0]["mime"] == "image/png" and ev.payload["items"][0]["size"] > 100
    with pytest.raises(AttributeError):
        w.add_nonsense  # noqa: B018 - typos are still errors
