"""``wandb.watch`` through ``bridge.compat.wandb``: a torch training loop records gradient and
parameter histograms every ``log_freq`` passes at the step of the row being logged."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

import bridge.compat.wandb as wandb  # was: import wandb
from bridge.spool.reader import iter_events, list_runs

torch = pytest.importorskip("torch", reason="wandb.watch hooks torch models; torch is not "
                            "installed (CI's framework step installs it)")


@pytest.fixture(autouse=True)
def fresh_shim(spool: Path) -> Any:
    yield
    wandb.unwatch()
    wandb.finish()


def histograms(spool: Path, run_id: str) -> dict[str, list[Any]]:
    rec = [r for r in list_runs(spool) if r.run_id == run_id][0]
    out: dict[str, list[Any]] = {}
    for e in iter_events(rec.files, run_id):
        if e.kind == "media" and e.payload["type"] == "histogram":
            out.setdefault(e.key, []).append(e)
    return out


def train(model: Any, steps: int, **watch: Any) -> Any:
    run = wandb.init(project="watch")
    wandb.watch(model, **watch)
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        wandb.log({"loss": loss.item()})
    run.bridge_run.flush()
    return run


def test_watch_all_records_gradients_and_parameters(spool: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    run = train(model, 10, log="all", log_freq=3)
    got = histograms(spool, run.bridge_run.id)
    names = [n for n, _ in model.named_parameters()]
    assert set(got) == {f"gradients/{n}" for n in names} | {f"parameters/{n}" for n in names}
    for key, events in got.items():
        # every 3rd pass (the 3rd, 6th, 9th), at the step of the row logged after it
        assert [e.step for e in events] == [2, 5, 8], key
        data = events[0].payload["data"]
        assert len(data["counts"]) == 64 and len(data["edges"]) == 65
    w = dict(model.named_parameters())["0.weight"]
    (last,) = got["parameters/0.weight"][-1:]
    assert sum(last.payload["data"]["counts"]) == w.numel()


def test_watch_gradients_only_by_default_and_unwatch(spool: Path) -> None:
    model = torch.nn.Linear(4, 1)
    run = wandb.init(project="watch")
    wandb.watch(model, log_freq=1)
    model(torch.randn(2, 4)).sum().backward()
    wandb.log({"loss": 1.0})
    wandb.unwatch(model)
    model(torch.randn(2, 4)).sum().backward()
    wandb.log({"loss": 0.5})
    run.bridge_run.flush()
    got = histograms(spool, run.bridge_run.id)
    assert set(got) == {"gradients/weight", "gradients/bias"}
    assert [e.step for e in got["gradients/weight"]] == [0]


def test_finish_removes_the_hooks(spool: Path) -> None:
    model = torch.nn.Linear(2, 1)
    wandb.init(project="watch")
    wandb.watch(model, log="all", log_freq=1)
    wandb.finish()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "run is finished" problem from a stale hook
        model(torch.randn(1, 2)).sum().backward()
    assert not model._forward_hooks and not model.weight._backward_hooks


def test_watch_refuses_what_is_not_a_model(spool: Path) -> None:
    wandb.init(project="watch")
    with pytest.raises(ValueError, match="torch.nn.Module"):
        wandb.watch(object())
    with pytest.raises(ValueError, match="log must be"):
        wandb.watch(torch.nn.Linear(1, 1), log="weights")
