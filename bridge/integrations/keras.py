"""A Keras callback: ``model.fit(..., callbacks=[BridgeCallback(project="mnist")])``.

Works with Keras 3 on any backend (``KERAS_BACKEND=torch``, ``jax`` or ``tensorflow``) and
with ``tf.keras`` when only TensorFlow is installed. Recorded:

- at train begin: params ``epochs``, ``steps`` (per epoch) and the optimizer's config
  under ``optimizer`` (nested);
- at each epoch end: every value of Keras' ``logs`` (``loss``, ``val_loss``, metrics) with
  ``step`` = the epoch number (0-based, as Keras counts);
- every ``log_every_n_batches`` training batches (default 1; 0 or None turns it off):
  ``batch/<name>`` with ``step`` = the global batch count since training began.

Without ``run=`` the callback starts a run at train begin (``**init_kwargs`` go to
``bridge.init``; the current bridge run is used when there is one) and finishes the run
it started at train end.
"""

from __future__ import annotations

from typing import Any, Mapping

try:
    import keras

    _Callback: Any = keras.callbacks.Callback
except ImportError:  # TensorFlow's bundled Keras
    from tensorflow import keras  # type: ignore[no-redef]

    _Callback = keras.callbacks.Callback

from bridge.integrations import jsonable

__all__ = ["BridgeCallback"]


def _scalars(logs: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in (logs or {}).items():
        if isinstance(v, (int, float)) or hasattr(v, "item"):
            out[prefix + str(k)] = v
    return out


class BridgeCallback(_Callback):
    """Keras callback recording epochs and batches into a bridge run."""

    def __init__(self, run: Any = None, log_every_n_batches: int | None = 1,
                 **init_kwargs: Any) -> None:
        super().__init__()
        self.run = run
        self._owned = False
        self._init_kwargs = init_kwargs
        self.log_every_n_batches = log_every_n_batches or 0
        self._batches = 0

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.run is None:
            import bridge

            current = None if self._init_kwargs else bridge.run()
            self.run = current if current is not None else bridge.init(**self._init_kwargs)
            self._owned = current is None
        self._batches = 0
        params = {k: v for k, v in (self.params or {}).items() if k in ("epochs", "steps")}
        optimizer = getattr(getattr(self, "model", None), "optimizer", None)
        if optimizer is not None and hasattr(optimizer, "get_config"):
            try:
                params["optimizer"] = jsonable(optimizer.get_config())
            except Exception:
                pass
        if params:
            self.run.log_params(params)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._batches += 1
        n = self.log_every_n_batches
        if n and self._batches % n == 0 and self.run is not None:
            self.run.log_metrics(_scalars(logs, "batch/"), step=self._batches)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.run is not None:
            self.run.log_metrics(_scalars(logs), step=int(epoch))

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.run is None:
            return
        if self._owned:
            self.run.finish()
            self.run = None
            self._owned = False
        else:
            self.run.flush()
