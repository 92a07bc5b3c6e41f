"""A Ray Tune logger callback:
``tune.Tuner(..., run_config=tune.RunConfig(callbacks=[BridgeLoggerCallback(project="hpo")]))``.

One bridge run per trial: name = the trial's name (``train_fn_3f2a1_00000``), group = the
experiment's name, tag ``ray.trial_id``; the trial's config as params (nested search spaces
stay nested, values JSON cannot hold become their text). Each reported result is recorded
at ``step = training_iteration``: numbers as metrics (nested dicts flattened with ``/``),
strings as a text series, anything else a counted warning, as ``run.log`` takes them. Ray's
own bookkeeping is not a metric: ``config`` (already params), ``done``,
``should_checkpoint``, ``checkpoint_dir_name``, ``date`` and ``__``-keys are left out;
``hostname``, ``node_ip`` and ``experiment_tag`` become tags ``ray.<key>``. Ray's numeric
fields (``time_this_iter_s``, ``timestamp``, ``pid``...) are metrics like the trainable's.

Trial ends: completed → FINISHED, errored → FAILED with Ray's error text; a trial still open
when the experiment ends (stopped by ``stop_all``, a time budget, ``fail_fast`` or Ctrl-C) →
KILLED. Everything reported before is kept either way.

Ray Tune calls logger callbacks in the driver process (the one running ``Tuner.fit``),
never in the trial actors, so every trial's run is written by that one process into its
spool file. The run id is derived from the experiment path and the trial id, so
``Tuner.restore`` continues the same runs.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Iterable, Mapping

from ray.tune.logger import LoggerCallback

from bridge.integrations import jsonable

__all__ = ["BridgeLoggerCallback"]

SKIPPED = frozenset({"config", "done", "should_checkpoint", "checkpoint_dir_name", "date"})
TAGGED = ("hostname", "node_ip", "experiment_tag")
TAG_PREFIX = "ray."


class BridgeLoggerCallback(LoggerCallback):
    """A bridge run per Tune trial (``**init_kwargs`` go to ``bridge.init``: ``backends``,
    ``dir``, ``tags``, ``sync``...); ``excludes`` are result keys not to record."""

    def __init__(self, project: str | None = None, backends: Any = None, *,
                 excludes: Iterable[str] = (), **init_kwargs: Any) -> None:
        self._init_kwargs = dict(init_kwargs, project=project)
        if backends is not None:
            self._init_kwargs["backends"] = backends
        self._excludes = SKIPPED | set(excludes)
        self._runs: dict[str, Any] = {}  # trial id -> open run
        self._tags: dict[str, dict[str, str]] = {}  # trial id -> Ray tags already set

    # -- runs ------------------------------------------------------------------------------

    def run_for(self, trial: Any) -> Any:
        """The trial's open run, started (or resumed) on first use."""
        run = self._runs.get(trial.trial_id)
        if run is None:
            import bridge

            kwargs = dict(self._init_kwargs, run_id=_run_id(trial), resume="allow")
            kwargs["name"] = str(trial)
            kwargs["group"] = kwargs.get("group") or trial.experiment_dir_name
            run = bridge.init(**kwargs)
            run.set_tag(TAG_PREFIX + "trial_id", trial.trial_id)
            params = jsonable(dict(trial.config or {}))
            if params:
                run.log_params(params)
            self._runs[trial.trial_id] = run
            self._tags[trial.trial_id] = {}
        return run

    # -- LoggerCallback ---------------------------------------------------------------------

    def log_trial_start(self, trial: Any) -> None:
        self.run_for(trial)

    def log_trial_restore(self, trial: Any) -> None:
        self.run_for(trial)

    def log_trial_result(self, iteration: int, trial: Any, result: Mapping[str, Any]) -> None:
        run = self.run_for(trial)
        seen = self._tags[trial.trial_id]
        for key in TAGGED:
            value = result.get(key)
            if value is not None and seen.get(key) != str(value):
                seen[key] = str(value)
                run.set_tag(TAG_PREFIX + key, str(value))
        values = _flatten({k: v for k, v in result.items()
                           if k not in self._excludes and k not in TAGGED
                           and not str(k).startswith("__")})
        step = result.get("training_iteration")
        if values:
            run.log(values, step=step if isinstance(step, int) and step >= 0 else None)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run = self._runs.pop(trial.trial_id, None)
        if run is None:
            if not failed:
                return
            run = self.run_for(trial)  # failed before it started: still a FAILED run
            self._runs.pop(trial.trial_id, None)
        self._tags.pop(trial.trial_id, None)
        run.finish("FAILED" if failed else "FINISHED", error=_error(trial) if failed else None)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Trials the experiment stopped before they ended (no ``log_trial_end`` comes)."""
        for trial_id, run in list(self._runs.items()):
            status = next((t.status for t in trials if t.trial_id == trial_id), "unknown")
            run.finish("KILLED", error=f"stopped when the Tune experiment ended "
                                       f"(trial status {status})")
        self._runs.clear()
        self._tags.clear()


def _run_id(trial: Any) -> str:
    """The same trial of the same experiment gets the same run (``Tuner.restore``)."""
    where = getattr(trial, "remote_experiment_path", None) or trial.experiment_dir_name
    return hashlib.md5(f"{where}\0{trial.trial_id}".encode()).hexdigest()


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _error(trial: Any) -> str | None:
    """Ray's text of the trial's error (its ``error.txt``, written before the callbacks
    run; the storage copy may come later), when it can be read."""
    try:
        path = trial.error_file
        if path and os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()[-20_000:]
        err = trial.get_error()
    except Exception:  # the error file is Ray's; a missing one is no reason to fail here
        return None
    return str(err)[-20_000:] if err is not None else None
