"""``BridgeLogger``: a real Lightning fit of a tiny model on CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

import bridge  # noqa: E402
from bridge.integrations.lightning import BridgeLogger  # noqa: E402
from bridge_readback import by_kind, events, metric_series, mlflow_run, sync_to_mlflow  # noqa: E402


class TinyRegressor(pl.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 4, activation=torch.nn.ReLU):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), activation(),
                                       torch.nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=g)
    y = x.sum(dim=1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def test_lightning_fit_and_test(spool, tmp_path):
    torch.manual_seed(0)
    logger = BridgeLogger(project="lit", name="tiny")  # was: MLFlowLogger(...) / WandbLogger(...)
    trainer = pl.Trainer(max_epochs=3, logger=logger, log_every_n_steps=1,
                         default_root_dir=tmp_path, accelerator="cpu", devices=1,
                         enable_progress_bar=False, enable_model_summary=False)
    model = TinyRegressor()
    trainer.fit(model, loader(), loader())
    run_id = logger.version
    assert bridge.runs(dir=spool).set_index("run_id").loc[run_id, "status"] == "FINISHED"
    trainer.test(model, loader())  # resumes the same run
    logger.finalize("success")

    evs = events(spool, run_id)
    train = metric_series(evs, "train_loss")
    assert [s for s, _ in train] == list(range(12))  # 4 batches x 3 epochs, global steps
    assert [s for s, _ in metric_series(evs, "val_loss")] == [3, 7, 11]
    assert len(metric_series(evs, "test_loss")) == 1
    kinds = by_kind(evs)
    assert kinds["param"]["lr"] == 0.05 and kinds["param"]["hidden"] == 4
    assert "ReLU" in kinds["param"]["activation"]  # a class becomes its text
    ckpts = [e.payload for e in evs if e.kind == "artifact"]
    assert ckpts and all(c["name"] == "checkpoints" and c["type"] == "model" for c in ckpts)
    assert ckpts[-1]["files"][0]["path"].endswith(".ckpt") and ckpts[-1]["files"][0]["size"] > 0
    runs = bridge.runs(dir=spool)
    assert len(runs) == 1
    assert (runs.iloc[0]["status"], runs.iloc[0]["name"]) == ("FINISHED", "tiny")

    client = sync_to_mlflow(spool)
    mr = mlflow_run(client, run_id)
    hist = client.get_metric_history(mr.info.run_id, "train_loss")
    assert sorted(m.step for m in hist) == list(range(12))
    assert mr.data.params["lr"] == "0.05"
    files = [f.path for f in client.list_artifacts(mr.info.run_id, "checkpoints")]
    assert len(files) == len(ckpts) and all(f.endswith(".ckpt") for f in files)


def test_logger_into_an_existing_run(spool, tmp_path):
    run = bridge.init(project="mine")
    logger = BridgeLogger(run=run, log_checkpoints=False)
    trainer = pl.Trainer(max_epochs=1, logger=logger, log_every_n_steps=1,
                         default_root_dir=tmp_path, accelerator="cpu", devices=1,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyRegressor(), loader())
    assert run.status == "RUNNING"  # the caller's run is left open
    run.finish()
    evs = events(spool, run.id)
    assert len(metric_series(evs, "train_loss")) == 4
    assert not [e for e in evs if e.kind == "artifact"]
