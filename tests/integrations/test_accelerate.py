"""``BridgeTracker`` for Accelerate: real training loops of a tiny torch model on CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
accelerate = pytest.importorskip("accelerate")

from accelerate import Accelerator  # noqa: E402
from accelerate.state import AcceleratorState  # noqa: E402

import bridge  # noqa: E402
from bridge.integrations.accelerate import BridgeTracker, register  # noqa: E402
from bridge_readback import by_kind, events, metric_series  # noqa: E402

CONFIG = {"lr": 0.05, "batch_size": 8, "optimizer": {"name": "sgd", "momentum": 0.0},
          "dtype": torch.float32}


@pytest.fixture(autouse=True)
def fresh_state():
    """Accelerate's process state is a singleton; each test starts from a clean one."""
    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def train(accelerator: Accelerator, steps: int = 6, config: dict = CONFIG) -> list[float]:
    """A tiny regression trained for ``steps`` batches; returns the losses it logged."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * 8, 3, generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)),
                                       batch_size=8)
    model, opt, data = accelerator.prepare(model, opt, data)
    accelerator.init_trackers("ignored-for-instances", config=config)
    losses = []
    for step, (xb, yb) in enumerate(data):
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        accelerator.log({"train/loss": loss, "lr": config["lr"], "phase": "warmup" if step < 2
                         else "main"}, step=step)
    accelerator.end_training()
    return losses


def test_metrics_per_step_and_config(spool):
    tracker = BridgeTracker(project="acc", run_name="tiny")
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    losses = train(accelerator)
    run = tracker.tracker
    assert accelerator.get_tracker("bridge", unwrap=True) is run
    assert run.status == "FINISHED"

    df = bridge.data(project="acc", run=run.id, dir=spool, event="metric", key="train/loss")
    assert list(df["step"]) == list(range(6))
    assert list(df["value"]) == pytest.approx(losses)
    evs = events(spool, run.id)
    assert metric_series(evs, "lr") == [(s, 0.05) for s in range(6)]
    text = [(e.step, e.payload) for e in evs if e.kind == "media" and e.key == "phase"]
    assert [s for s, _ in text] == list(range(6))  # strings are a text series
    params = by_kind(evs)["param"]
    assert params["lr"] == 0.05 and params["batch_size"] == 8
    assert params["optimizer"] == {"name": "sgd", "momentum": 0.0}  # nested stays nested
    assert params["dtype"] == "torch.float32"  # what JSON cannot hold becomes its text
    runs = bridge.runs(dir=spool)
    assert len(runs) == 1
    assert (runs.iloc[0]["name"], runs.iloc[0]["status"]) == ("tiny", "FINISHED")


def test_registered_by_name_to_a_real_mlflow_server(spool, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    from mlflow import MlflowClient

    from bridge.agent.sync import Syncer

    register()
    accelerator = Accelerator(cpu=True, log_with="bridge")
    backends = [{"name": "mlflow", "tracking_uri": mlflow_server.url}]
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = accelerator.prepare(model, opt)
    accelerator.init_trackers("acc-by-name", config={"lr": 0.1, "hidden": 2},
                              init_kwargs={"bridge": {"backends": backends,
                                                      "sync": "offline"}})
    run = accelerator.get_tracker("bridge", unwrap=True)
    assert (run.project, run.backends[0]["tracking_uri"]) == ("acc-by-name", mlflow_server.url)
    x = torch.ones(4, 2)
    losses = []
    for step in range(5):
        loss = model(x).pow(2).mean()
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        accelerator.log({"loss": loss.item()}, step=step * 10)
    accelerator.end_training()

    summary = Syncer(spool).run_once()
    assert summary.complete, summary
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("acc-by-name")
    [remote] = client.search_runs([exp.experiment_id], f"tags.`bridge.run_id` = '{run.id}'")
    hist = sorted((m.step, m.value) for m in client.get_metric_history(remote.info.run_id, "loss"))
    assert hist == [(s * 10, pytest.approx(v)) for s, v in enumerate(losses)]
    assert remote.data.params == {"lr": "0.1", "hidden": "2"}
    assert remote.info.status == "FINISHED"


def _every_rank(spool_dir: str) -> None:
    """Runs in each of two processes started by ``debug_launcher`` (gloo on CPU)."""
    tracker = BridgeTracker(project="ddp", dir=spool_dir, main_process_only=False)
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers("ddp", config={"world": accelerator.num_processes})  # main only
    tracker.start()  # every rank: joins the main process's run
    for step in range(3):
        tracker.log({"rank_value": float(accelerator.process_index * 100 + step)}, step=step)
    accelerator.end_training()  # finishes the main process's tracker only
    tracker.finish()  # every rank (forked ranks exit without Python's exit hooks)


def test_every_rank_records_under_its_node(spool):
    from accelerate import debug_launcher

    spool.mkdir(parents=True, exist_ok=True)
    debug_launcher(_every_rank, args=(str(spool),), num_processes=2)
    runs = bridge.runs(dir=spool)
    assert len(runs) == 1  # one run, two spool files (one per rank)
    assert (runs.iloc[0]["nodes"], runs.iloc[0]["files"]) == ("rank0,rank1", 2)
    assert runs.iloc[0]["status"] == "FINISHED"
    df = bridge.data(run=runs.iloc[0]["run_id"], dir=spool, event="metric", key="rank_value")
    got = sorted((n, int(s), v) for n, s, v in zip(df["node"], df["step"], df["value"]))
    assert got == [(f"rank{r}", s, r * 100.0 + s) for r in (0, 1) for s in range(3)]
