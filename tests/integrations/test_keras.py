"""``BridgeCallback`` for Keras: a real ``model.fit`` of a tiny model on CPU (torch backend)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
np = pytest.importorskip("numpy")
keras = pytest.importorskip("keras")

import bridge  # noqa: E402
from bridge.integrations.keras import BridgeCallback  # noqa: E402
from bridge_readback import by_kind, events, metric_series  # noqa: E402


def tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse",
                  metrics=["mae"])
    return model


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def test_keras_fit(spool):
    x, y = data()
    model = tiny_model()
    cb = BridgeCallback(project="keras", name="tiny", log_every_n_batches=2)
    model.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0, callbacks=[cb])
    runs = bridge.runs(dir=spool)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    run_id = runs.iloc[0]["run_id"]
    evs = events(spool, run_id)
    assert [s for s, _ in metric_series(evs, "loss")] == [0, 1, 2]
    assert [s for s, _ in metric_series(evs, "val_loss")] == [0, 1, 2]
    assert len(metric_series(evs, "mae")) == 3
    # 24 training rows / batch 8 = 3 batches per epoch, 9 in all; every 2nd is logged
    assert [s for s, _ in metric_series(evs, "batch/loss")] == [2, 4, 6, 8]
    params = by_kind(evs)["param"]
    assert params["epochs"] == 3 and params["steps"] == 3
    assert params["optimizer"]["learning_rate"] == pytest.approx(0.05)
    history_loss = model.history.history["loss"]
    assert [v for _, v in metric_series(evs, "loss")] == pytest.approx(history_loss)


def test_keras_into_the_current_run(spool):
    x, y = data()
    run = bridge.init(project="mine")
    tiny_model().fit(x, y, epochs=2, batch_size=16, verbose=0,
                     callbacks=[BridgeCallback(log_every_n_batches=None)])
    assert run.status == "RUNNING"  # not started by the callback: left open
    run.finish()
    evs = events(spool, run.id)
    assert len(metric_series(evs, "loss")) == 2
    assert not [e for e in evs if e.kind == "metric" and e.key.startswith("batch/")]
