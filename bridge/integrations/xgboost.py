"""An XGBoost callback: ``xgb.train(..., evals=[(dval, "eval")],
callbacks=[BridgeCallback(project="p")])`` or
``XGBRegressor(callbacks=[BridgeCallback(...)])``.

Recorded:

- before training: the parameters. With ``params=`` exactly that dict; otherwise the
  booster's effective configuration (``Booster.save_config()``: every ``*_param`` section,
  defaults included, numbers as XGBoost stores them, e.g. ``eta`` = 0.300000012) plus
  ``booster`` (``gbtree``...) and ``eval_metric`` (a list when several). The sklearn wrappers do not hand their constructor arguments
  to callbacks, so the effective configuration is what the booster really trained with;
- after each iteration: every metric of every eval set at ``step`` = the iteration (0-based,
  continuing from the rounds of an ``xgb_model`` trained further), keyed
  ``<eval set>-<metric>`` as XGBoost names them (``eval-logloss``, ``validation_0-rmse``);
  in ``xgb.cv`` ``<set>-<metric>-mean`` and ``-std``, as in ``cv``'s DataFrame;
- after training: summary ``best_iteration`` and ``best_score`` when early stopping
  recorded them (the booster's ``best_iteration``/``best_score`` attributes), and with
  ``log_model=True`` the booster saved as an artifact named ``model``, type ``model``
  (``model_format="json"`` or ``"ubj"``).

Without ``run=`` the callback starts a run before training (``project``, ``backends`` and
``**init_kwargs`` go to ``bridge.init``; the current bridge run is used when there is one
and nothing else is given) and finishes the run it started after training. A deep copy
(``sklearn.base.clone`` of an ``XGBRegressor`` holding the callback, as a grid search
makes) starts a run per fit, or logs into the same ``run=``.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from xgboost.callback import TrainingCallback

from bridge.integrations import jsonable

__all__ = ["BridgeCallback"]

_MODEL_FORMATS = ("json", "ubj")
# Sections of save_config() that describe the data or the trained state, not a setting.
_NOT_SETTINGS = {"gbtree_model_param", "learner_model_param", "hist_train_param"}


def _number(text: Any) -> Any:
    """``"2"`` -> 2, ``"0.300000012"`` -> 0.300000012, anything else unchanged."""
    if not isinstance(text, str):
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def effective_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in a ``save_config()`` document: the leaves of every ``*_param``
    section, and the booster's name."""
    out: dict[str, Any] = {}

    def walk(node: Any, in_param: bool) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k in _NOT_SETTINGS:
                    continue
                if isinstance(v, (Mapping, list)):
                    walk(v, in_param or str(k).endswith("_param"))
                elif in_param:
                    out.setdefault(str(k), _number(v))
        elif isinstance(node, list):
            for v in node:
                walk(v, in_param)

    learner = config.get("learner", {})
    walk(learner, False)
    name = learner.get("gradient_booster", {}).get("name")
    if name:
        out["booster"] = name
    metrics = [m.get("name") for m in learner.get("metrics", []) if isinstance(m, Mapping)]
    if metrics:
        out["eval_metric"] = metrics[0] if len(metrics) == 1 else metrics
    return out


def _metrics(evals_log: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The latest value of each metric of each eval set, by XGBoost's own names."""
    out: dict[str, float] = {}
    for data, metrics in evals_log.items():
        for metric, history in metrics.items():
            if not history:
                continue
            last = history[-1]
            if isinstance(last, (tuple, list)):  # xgb.cv: (mean, std)
                out[f"{data}-{metric}-mean"] = float(last[0])
                out[f"{data}-{metric}-std"] = float(last[1])
            else:
                out[f"{data}-{metric}"] = float(last)
    return out


class BridgeCallback(TrainingCallback):
    """XGBoost training callback recording params, eval metrics and the best iteration."""

    def __init__(self, run: Any = None, *, project: str | None = None,
                 backends: Any = None, params: Mapping[str, Any] | None = None,
                 log_model: bool = False, model_format: str = "json",
                 **init_kwargs: Any) -> None:
        super().__init__()
        if model_format not in _MODEL_FORMATS:
            raise ValueError(f"model_format must be one of {_MODEL_FORMATS}, "
                             f"got {model_format!r}")
        self.run = run
        self.params = dict(params) if params is not None else None
        self.log_model = log_model
        self.model_format = model_format
        self._init_kwargs = dict(init_kwargs)
        if project is not None:
            self._init_kwargs["project"] = project
        if backends is not None:
            self._init_kwargs["backends"] = backends
        self._owned = False

    def __deepcopy__(self, memo: dict) -> "BridgeCallback":
        """A copy for another fit (``sklearn.base.clone``, a grid search): it logs into the
        same ``run=`` when one was given, else starts a run of its own."""
        twin = copy.copy(self)
        twin._init_kwargs = copy.deepcopy(self._init_kwargs, memo)
        twin.params = copy.deepcopy(self.params, memo)
        if self._owned:
            twin.run, twin._owned = None, False
        return twin

    def _ensure_run(self) -> Any:
        if self.run is None:
            import bridge

            current = None if self._init_kwargs else bridge.run()
            self.run = current if current is not None else bridge.init(**self._init_kwargs)
            self._owned = current is None
        return self.run

    def before_training(self, model: Any) -> Any:
        run = self._ensure_run()
        if self.params is not None:
            params = jsonable(self.params)
        elif hasattr(model, "save_config"):
            params = effective_params(json.loads(model.save_config()))
        else:  # xgb.cv's packed boosters have no single configuration
            params = {}
        if params:
            run.log_params(params)
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        values = _metrics(evals_log)
        if values and self.run is not None:
            self.run.log_metrics(values, step=int(epoch))
        return False

    def after_training(self, model: Any) -> Any:
        run = self.run
        if run is None:
            return model
        attr = getattr(model, "attr", None)
        if callable(attr):
            best_iteration, best_score = attr("best_iteration"), attr("best_score")
            if best_iteration is not None:
                run.summary["best_iteration"] = int(best_iteration)
            if best_score is not None:
                run.summary["best_score"] = float(best_score)
        if self.log_model and hasattr(model, "save_model"):
            self._save(run, model)
        if self._owned:
            run.finish()
            self.run = None
            self._owned = False
        else:
            run.flush()
        return model

    def _save(self, run: Any, model: Any) -> None:
        folder = Path(tempfile.mkdtemp(prefix="bridge-xgboost-"))
        try:
            path = folder / f"model.{self.model_format}"
            model.save_model(str(path))
            run.log_artifact(path, name="model", type="model")
            run.flush()  # the copy into the spool is done before the file goes
        finally:
            shutil.rmtree(folder, ignore_errors=True)
