"""``BridgeLogger.log_image`` / ``log_table`` (and ``log_audio``, ``log_video``, ``log_text``)
called as Lightning's ``WandbLogger`` methods are, from inside a real CPU fit."""

from __future__ import annotations

import hashlib
import io
import warnings

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")
np = pytest.importorskip("numpy")
PIL = pytest.importorskip("PIL.Image")

from bridge.errors import BridgeWarning  # noqa: E402
from bridge.integrations.lightning import BridgeLogger  # noqa: E402
from bridge.spool.blobs import blob_path  # noqa: E402
from bridge_readback import events  # noqa: E402


class Painter(pl.LightningModule):
    """Logs sample images and a table of predictions at each validation."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 1)
        self.logged: list[tuple[int, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        if batch_idx:
            return
        x, y = batch
        step = self.trainer.global_step
        g = torch.Generator().manual_seed(step)
        samples = torch.rand(2, 3, 6, 8, generator=g)  # CHW tensors, floats in [0, 1]
        self.logged.append((step, samples))
        self.logger.log_image("samples", [samples[0], samples[1]], step=step,
                              caption=[f"a@{step}", f"b@{step}"])
        pred = self.net(x[:3]).squeeze(1)
        self.logger.log_table("preds", columns=["y", "pred"],
                              data=[[float(a), float(b)] for a, b in zip(y[:3, 0], pred)],
                              step=step)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=g)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)


def _media(evs):
    out: dict = {}
    for e in evs:
        if e.kind == "media":
            out.setdefault(e.key, []).append(e)
    return out


def _bytes(spool, item) -> bytes:
    data = blob_path(spool, item["sha256"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == item["sha256"]
    return data


def test_log_image_and_table_during_fit(spool, tmp_path):
    torch.manual_seed(0)
    logger = BridgeLogger(project="lit", name="media")
    trainer = pl.Trainer(max_epochs=2, logger=logger, log_every_n_steps=1,
                         default_root_dir=tmp_path, accelerator="cpu", devices=1,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0)
    model = Painter()
    trainer.fit(model, loader(), loader())
    media = _media(events(spool, logger.version))

    assert [e.step for e in media["samples"]] == [s for s, _ in model.logged] == [2, 4]
    for ev, (step, samples) in zip(media["samples"], model.logged):
        items = ev.payload["items"]
        assert ev.payload["type"] == "image"
        assert [i["caption"] for i in items] == [f"a@{step}", f"b@{step}"]
        for item, chw in zip(items, samples):
            assert (item["width"], item["height"]) == (8, 6)
            pixels = np.asarray(PIL.open(io.BytesIO(_bytes(spool, item))))
            want = np.rint(chw.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            assert np.abs(pixels.astype(int) - want.astype(int)).max() <= 1
    tables = media["preds"]
    assert [e.step for e in tables] == [2, 4]
    assert tables[0].payload["data"]["columns"] == ["y", "pred"]
    assert len(tables[0].payload["data"]["rows"]) == 3


def test_other_media_and_options_bridge_cannot_keep(spool):
    pd = pytest.importorskip("pandas")
    logger = BridgeLogger(project="lit")
    logger.log_table("df", dataframe=pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), step=3)
    logger.log_text("notes", columns=["text"], data=[["hello"], ["world"]], step=4)
    logger.log_audio("clips", [np.zeros(800)], step=5, sample_rate=[8000])
    logger.log_video("rollout", [np.random.default_rng(0).random((3, 3, 6, 4))], step=6,
                     fps=[2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.log_image("masked", [np.zeros((4, 4, 3), np.uint8)], step=7,
                         masks=[{"mask": np.zeros((4, 4))}])
    with pytest.raises(ValueError, match="caption"):
        logger.log_image("short", [np.zeros((4, 4, 3), np.uint8)] * 2, caption=["one"])
    with pytest.raises(TypeError):
        logger.log_image("notalist", np.zeros((4, 4, 3), np.uint8))
    run = logger.experiment
    logger.finalize("success")

    assert any("masks not kept" in str(w.message) for w in caught
               if issubclass(w.category, BridgeWarning))
    assert run.warnings == 1
    media = _media(events(spool, run.id))
    assert media["df"][0].payload["data"] == {"columns": ["a", "b"],
                                              "rows": [[1, "x"], [2, "y"]]}
    assert media["df"][0].step == 3
    assert media["notes"][0].payload["data"]["rows"] == [["hello"], ["world"]]
    clip = media["clips"][0].payload["items"][0]
    assert (media["clips"][0].step, clip["sample_rate"], clip["duration"]) == (5, 8000, 0.1)
    video = media["rollout"][0].payload["items"][0]
    assert (video["mime"], video["frames"], video["fps"]) == ("image/gif", 3, 2)
    assert media["masked"][0].step == 7 and len(media["masked"][0].payload["items"]) == 1
