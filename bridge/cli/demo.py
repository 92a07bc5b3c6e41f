"""`bridge demo`: a small, real training loop logged to the spool and synced to MLflow.

Logistic regression trained by mini-batch SGD in numpy on a synthetic two-class problem:
params, a metric series, an artifact and a summary. With MLflow installed the run is synced
to the embedded store (``sqlite:///<spool dir>/mlflow.db``): no server, no account.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Optional

import typer

from bridge.adapters.mlflow.names import embedded_tracking_uri
from bridge.cli.common import DirOption, console, resolve_dir

__all__ = ["register", "train"]


def train(run, epochs: int = 20, lr: float = 0.5, batch_size: int = 64, seed: int = 7) -> dict:
    """Train and log; returns the final metrics."""
    import numpy as np

    from bridge.media import Histogram

    rng = np.random.default_rng(seed)
    n, d = 2000, 8
    true_w = rng.normal(size=d)
    X = rng.normal(size=(n, d))
    y = (X @ true_w + 0.5 * rng.normal(size=n) > 0).astype(float)
    split = int(n * 0.8)
    Xtr, ytr, Xva, yva = X[:split], y[:split], X[split:], y[split:]
    w = np.zeros(d)
    b = 0.0
    run.log_params({"model": "logistic-regression", "optimizer": {"name": "sgd", "lr": lr},
                    "epochs": epochs, "batch_size": batch_size, "seed": seed, "features": d})
    run.log_features([f"x{i}" for i in range(d)])

    def loss_acc(Xs, ys):
        p = 1 / (1 + np.exp(-(Xs @ w + b)))
        loss = -np.mean(ys * np.log(p + 1e-12) + (1 - ys) * np.log(1 - p + 1e-12))
        return float(loss), float(np.mean((p > 0.5) == ys))

    step = 0
    for epoch in range(epochs):
        order = rng.permutation(split)
        for i in range(0, split, batch_size):
            idx = order[i : i + batch_size]
            p = 1 / (1 + np.exp(-(Xtr[idx] @ w + b)))
            grad = p - ytr[idx]
            w -= lr * Xtr[idx].T @ grad / len(idx)
            b -= lr * float(grad.mean())
            step += 1
        train_loss, train_acc = loss_acc(Xtr, ytr)
        val_loss, val_acc = loss_acc(Xva, yva)
        run.log({"train/loss": train_loss, "train/accuracy": train_acc,
                 "val/loss": val_loss, "val/accuracy": val_acc, "epoch": epoch,
                 "weights": Histogram(w, bins=8)}, step=step)  # media: a histogram per epoch
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.json"
        path.write_text(json.dumps({"w": w.tolist(), "b": b}, indent=1))
        run.log_artifact(path, name="model", type="model")
    run.summary.update({"val/accuracy": val_acc, "val/loss": val_loss, "steps": step})
    return {"val/accuracy": val_acc, "val/loss": val_loss}


def demo_cmd(
    dir: Optional[Path] = DirOption,
    no_sync: bool = typer.Option(False, "--no-sync", help="Only log to the spool."),
) -> None:
    """Run a small training loop, log it to the spool, and sync it to a local MLflow store."""
    import bridge
    from bridge.cli.local import show_cmd
    from bridge.cli.sync import run_sync

    spool = resolve_dir(dir)
    has_mlflow = importlib.util.find_spec("mlflow") is not None
    backends = ["mlflow"] if has_mlflow and not no_sync else []
    run = bridge.init(project="bridge-demo", name="sgd-logreg", dir=spool, backends=backends,
                      sync="offline", tags={"demo": "true"},
                      notes="logistic regression by SGD on synthetic data")
    with run:
        final = train(run)
    console.print(f"logged run {run.id} to {spool} "
                  f"(val accuracy {final['val/accuracy']:.3f})")
    show_cmd(run.id, spool)
    if not backends:
        if not has_mlflow:
            console.print("MLflow is not installed, so the run stays in the spool: "
                          "pip install 'tracking-bridge[mlflow]' and run `bridge sync "
                          "--backend mlflow` to deliver it")
        return
    summary = run_sync(spool, runs=[run.id])
    for r in summary.results:
        console.print(f"synced to {r.backend}: {r.delivered} events delivered, {r.dead} dead, "
                      f"{r.pending} pending (MLflow run {r.remote_id})")
    if not summary.complete:
        console.print("[red]sync incomplete; see `bridge status`[/red]")
        raise typer.Exit(1)
    console.print(f"embedded MLflow store: {embedded_tracking_uri(spool)}")
    console.print(f"look at it with: bridge ui --dir {spool}   (then open http://127.0.0.1:5000)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
