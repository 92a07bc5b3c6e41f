"""A LightGBM callback: ``lgb.train(params, dtrain, valid_sets=[dval], valid_names=["val"],
callbacks=[bridge_callback(project="p")])``, also in ``LGBMRegressor.fit(callbacks=[...])``
and ``lgb.cv``.

Recorded:

- at the first iteration: ``params`` (as LightGBM passes them to callbacks, aliases
  resolved) as params;
- at each iteration: every ``evaluation_result_list`` entry at ``step`` = the iteration
  (0-based), keyed ``<data name>-<metric>`` (``val-l2``, ``training-auc``); in ``lgb.cv``
  ``<data name>-<metric>-mean`` and ``-stdv``, as ``cv``'s result names them;
- at the end: summary ``best_iteration`` (LightGBM's count, 1-based: the metric point at
  step ``best_iteration - 1``; only when early stopping ran) and ``best_score/<data
  name>-<metric>`` (what ``booster.best_score`` will hold: the values at the best
  iteration, or at the last one without early stopping); with ``log_model=True`` the
  booster saved by ``model.save_model`` (the best iteration's trees when early stopping
  ran, as LightGBM saves) as an artifact ``model``, type ``model``.

How the end is found. A callback sees only iterations, never ``train()`` returning, so:

- the last iteration is ``env.iteration == env.end_iteration - 1``;
- early stopping ends training by raising ``EarlyStopException`` from its own callback,
  after which no callback runs. The bridge callback runs just before it (``order`` 25,
  LightGBM's early stopping is 30) and runs an early-stopping rule itself: the callback
  given as ``early_stopping=lgb.early_stopping(10)`` (pass it here *instead of* in
  ``callbacks``), or, when ``params`` hold ``early_stopping_round``, an identical
  ``lgb.early_stopping`` of its own, which raises at the same iteration as LightGBM's.
  The exception is caught, the end recorded, and raised again for ``train()``.
- an early-stopping callback passed separately in ``callbacks`` is invisible to it: call
  ``callback.finish(booster)`` after training (it is also what records the best values
  then), or the run stays open until ``bridge.finish()`` or exit.

Without ``run=`` a run is started at the first iteration (``project``, ``backends`` and
``**init_kwargs`` go to ``bridge.init``; the current bridge run is used when there is one
and nothing else is given) and finished at the end.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import lightgbm

from bridge.integrations import jsonable

__all__ = ["BridgeLightGBMCallback", "bridge_callback"]

ORDER = 25  # after lightgbm.record_evaluation (20), before lightgbm.early_stopping (30)


def _metrics(results: Sequence[Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for entry in results or ():
        data, metric, value = entry[0], entry[1], entry[2]
        std = entry[4] if len(entry) > 4 else None
        if std is None:
            out[f"{data}-{metric}"] = float(value)
        else:  # lgb.cv: the mean over folds and its standard deviation
            out[f"{data}-{metric}-mean"] = float(value)
            out[f"{data}-{metric}-stdv"] = float(std)
    return out


class BridgeLightGBMCallback:
    """The callable :func:`bridge_callback` returns; ``finish(booster)`` ends a run whose
    end the callback could not see."""

    order = ORDER
    before_iteration = False

    def __init__(self, run: Any = None, *, log_model: bool = False,
                 early_stopping: Callable[[Any], None] | None = None,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        # On the instance: train() gives a callback without an own ``order`` its place in
        # the list, before every built-in one.
        self.order = ORDER
        self.run = run
        self.log_model = log_model
        self.early_stopping = early_stopping
        self._init_kwargs = dict(init_kwargs or {})
        self._owned = False
        self._active = False  # between a training's first iteration and its end
        self._rule: Callable[[Any], None] | None = None
        self._last: dict[str, float] = {}

    # -- one iteration ---------------------------------------------------------------

    def __call__(self, env: Any) -> None:
        if not self._active or env.iteration == env.begin_iteration:
            if self._active:  # a new training before the previous one's end was seen
                self.finish()
            self._begin(env)
        values = _metrics(env.evaluation_result_list)
        if values:
            self.run.log_metrics(values, step=int(env.iteration))
            self._last = values
        rule = self._rule
        if rule is not None:
            try:
                rule(env)
            except lightgbm.callback.EarlyStopException as stop:
                self._end(env.model, best_iteration=stop.best_iteration + 1,
                          best=_metrics(stop.best_score))
                raise
        if env.iteration == env.end_iteration - 1:
            self._end(env.model, best_iteration=None, best=self._last)

    def _begin(self, env: Any) -> None:
        if self.run is None:
            import bridge

            current = None if self._init_kwargs else bridge.run()
            self.run = current if current is not None else bridge.init(**self._init_kwargs)
            self._owned = current is None
        self._active = True
        self._last = {}
        params = jsonable(dict(env.params or {}))
        if params:
            self.run.log_params(params)
        self._rule = self.early_stopping
        rounds = (env.params or {}).get("early_stopping_round")
        if self._rule is None and rounds is not None and int(rounds) > 0:
            p = env.params
            self._rule = lightgbm.early_stopping(
                stopping_rounds=int(rounds), first_metric_only=bool(p.get("first_metric_only")),
                min_delta=p.get("early_stopping_min_delta", 0.0), verbose=False)

    # -- the end -----------------------------------------------------------------------

    def finish(self, model: Any = None) -> None:
        """End the current training's record; with the trained ``model`` its
        ``best_iteration``/``best_score`` and (``log_model``) the model are recorded."""
        if self.run is None or not self._active:
            return  # the end was already seen
        if model is None:
            self._end(None, best_iteration=None, best={})
            return
        best = {f"{data}-{metric}": float(v)
                for data, scores in (getattr(model, "best_score", None) or {}).items()
                for metric, v in scores.items()}
        self._end(model, best_iteration=getattr(model, "best_iteration", 0) or None, best=best)

    def _end(self, model: Any, best_iteration: int | None, best: dict[str, float]) -> None:
        run = self.run
        self._active = False
        self._rule = None
        if run is None:
            return
        if best_iteration:
            run.summary["best_iteration"] = int(best_iteration)
        for key, value in best.items():
            run.summary[f"best_score/{key}"] = value
        if self.log_model and model is not None:
            self._save(run, model, best_iteration)
        if self._owned:
            run.finish()
            self.run = None
            self._owned = False
        else:
            run.flush()

    def _save(self, run: Any, model: Any, best_iteration: int | None) -> None:
        if not hasattr(model, "save_model") or not hasattr(model, "model_to_string"):
            _problem(run, f"{type(model).__name__} cannot be saved as one model; not recorded")
            return
        folder = Path(tempfile.mkdtemp(prefix="bridge-lightgbm-"))
        try:
            path = folder / "model.txt"
            model.save_model(str(path), num_iteration=best_iteration or None)
            run.log_artifact(path, name="model", type="model")
            run.flush()  # the copy into the spool is done before the file goes
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _problem(run: Any, why: str) -> None:
    """A counted warning on the run (an error when the run is strict)."""
    problem = getattr(run, "_problem", None)
    if problem is not None:
        problem("lightgbm.bridge_callback", why)
    else:
        import warnings

        from bridge.errors import BridgeWarning

        warnings.warn(f"lightgbm.bridge_callback: {why}", BridgeWarning, stacklevel=3)


def bridge_callback(run: Any = None, *, project: str | None = None, backends: Any = None,
                    log_model: bool = False,
                    early_stopping: Callable[[Any], None] | None = None,
                    **init_kwargs: Any) -> BridgeLightGBMCallback:
    """A LightGBM callback recording into ``run`` or a run it starts (see the module)."""
    kwargs = dict(init_kwargs)
    if project is not None:
        kwargs["project"] = project
    if backends is not None:
        kwargs["backends"] = backends
    return BridgeLightGBMCallback(run, log_model=log_model, early_stopping=early_stopping,
                                  init_kwargs=kwargs)
