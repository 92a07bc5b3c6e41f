"""Framework integrations, each importing only its own framework when it is imported:

- :mod:`bridge.integrations.lightning` — ``BridgeLogger``, a PyTorch Lightning logger;
- :mod:`bridge.integrations.keras` — ``BridgeCallback``, a Keras callback;
- :mod:`bridge.integrations.transformers` — ``BridgeCallback``, a Hugging Face
  ``TrainerCallback``;
- :mod:`bridge.integrations.accelerate` — ``BridgeTracker``, a Hugging Face Accelerate tracker;
- :mod:`bridge.integrations.xgboost` — ``BridgeCallback``, an XGBoost ``TrainingCallback``;
- :mod:`bridge.integrations.lightgbm` — ``bridge_callback()``, a LightGBM callback;
- :mod:`bridge.integrations.optuna` — ``BridgeCallback``, an Optuna study callback (a run per
  trial);
- :mod:`bridge.integrations.ray` — ``BridgeLoggerCallback``, a Ray Tune logger callback.

``import bridge.integrations`` itself imports no framework.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold turned into ``str`` (a dtype, a module, a
    callable in hyperparameters): recorded as text instead of warned about and dropped."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return jsonable(item())
        except Exception:
            pass
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)
