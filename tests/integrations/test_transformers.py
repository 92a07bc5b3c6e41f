"""``BridgeCallback`` for Hugging Face: a real ``Trainer.train`` of a tiny random model."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import bridge  # noqa: E402
from bridge.integrations.transformers import BridgeCallback  # noqa: E402
from bridge_readback import by_kind, events, metric_series  # noqa: E402


class TinyTextDataset(torch.utils.data.Dataset):
    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 50, (n, 6), generator=g)
        self.labels = (self.ids[:, 0] > 25).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(6, dtype=torch.long),
                "labels": self.labels[i]}


def tiny_model():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16,
                                     max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(config)  # random weights, no download


def test_trainer_train_and_evaluate(spool, tmp_path):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=4,
        per_device_eval_batch_size=8, learning_rate=1e-3, logging_steps=2, save_strategy="no",
        eval_strategy="epoch", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
    )
    cb = BridgeCallback(project="hf", name="tiny-bert")
    trainer = transformers.Trainer(model=tiny_model(), args=args, train_dataset=TinyTextDataset(),
                                   eval_dataset=TinyTextDataset(8), callbacks=[cb])
    trainer.train()
    runs = bridge.runs(dir=spool)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    run_id = runs.iloc[0]["run_id"]
    metrics = trainer.evaluate()  # after training: into the same run, resumed
    assert bridge.run().id == run_id
    bridge.finish()
    evs = events(spool, run_id)
    # 16 rows / batch 4 = 4 steps per epoch, 8 in all; a log every 2 steps
    assert [s for s, _ in metric_series(evs, "loss")] == [2, 4, 6, 8]
    assert [s for s, _ in metric_series(evs, "eval_loss")] == [4, 8, 8]
    assert metric_series(evs, "eval_loss")[-1][1] == pytest.approx(metrics["eval_loss"])
    assert [s for s, _ in metric_series(evs, "train_runtime")] == [8]
    params = by_kind(evs)["param"]
    assert params["learning_rate"] == 1e-3 and params["num_train_epochs"] == 2
    assert params["model_config"]["hidden_size"] == 8
    runs = bridge.runs(dir=spool)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
