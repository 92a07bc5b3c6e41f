"""An Optuna callback: ``study.optimize(objective, n_trials=50,
callbacks=[BridgeCallback(project="p")])`` records one bridge run per finished trial.

Each trial's run (``**init_kwargs`` go to ``bridge.init``):

- name ``trial-<number>``, group = the study's name (``bridge.init(group=...)``), so the
  backends show the study's trials together;
- params: ``trial.params``, and the search space as the nested param
  ``optuna.distributions`` (``{name: {"name": "FloatDistribution", "attributes": ...}}``,
  Optuna's own JSON form; ``log_distributions=False`` leaves it out);
- summary: the objective value(s) under ``metric_name`` (default ``"value"``, or the
  study's ``metric_names`` when it has them; a multi-objective study takes a list, one name
  per objective, default ``value_0``, ``value_1``..., a single name ``n`` becomes ``n_0``,
  ``n_1``...); a trial without values (failed) has none;
- metrics: the values the objective reported with ``trial.report(value, step)``
  (``trial.intermediate_values``) as the series ``intermediate/<metric_name>`` at their
  steps;
- tags: ``optuna.study``, ``optuna.trial_number``, ``optuna.state`` (``COMPLETE``,
  ``PRUNED``, ``FAIL``), the direction(s) (``optuna.direction`` = ``MINIMIZE`` /
  ``MAXIMIZE``; with several objectives ``optuna.direction.<metric_name>``), the trial's
  ``optuna.datetime_start`` / ``optuna.datetime_complete`` (ISO 8601) and ``optuna.best``;
- status: a failed trial is a ``FAILED`` run; a pruned trial is ``FINISHED`` (pruning is
  a normal outcome of the search) and told apart by its ``optuna.state=PRUNED`` tag.

The run is recorded when the trial has finished, so it starts and ends at the callback
(``bridge.init`` takes no start time); the trial's own times are in its tags.

``optuna.best``: ``true`` on the study's best trial (every trial of the Pareto front with
several objectives), ``false`` on every other. The best can change with each trial, so at
each callback the new trial's run gets its flag, and a run flagged ``true`` earlier that is
no longer best is reopened (``bridge.init(run_id=..., resume="allow")``), set to ``false``
and finished again with its status. Only runs this callback recorded are flagged; a best
trial from before it (a study loaded from storage) or from another process is not. With
``n_jobs > 1`` the calls are serialised by a lock.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Sequence

import optuna
from optuna.trial import TrialState

from bridge.integrations import jsonable

__all__ = ["BridgeCallback"]

_RESERVED = ("name", "run_id", "resume", "group")


class BridgeCallback:
    """An Optuna study callback: a bridge run per finished trial."""

    def __init__(self, project: str | None = None, *, backends: Any = None,
                 metric_name: str | Sequence[str] | None = None,
                 log_distributions: bool = True, **init_kwargs: Any) -> None:
        clash = sorted(set(init_kwargs) & set(_RESERVED))
        if clash:
            raise ValueError(f"{', '.join(clash)}: set by the callback for each trial")
        self.metric_name = metric_name
        self.log_distributions = log_distributions
        self._init_kwargs = dict(init_kwargs)
        if project is not None:
            self._init_kwargs["project"] = project
        if backends is not None:
            self._init_kwargs["backends"] = backends
        self._lock = threading.Lock()
        self.runs: dict[int, tuple[str, str]] = {}  # trial number -> (run id, status)
        self._flagged: set[int] = set()  # trials whose run says optuna.best=true

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with self._lock:
            names = self._names(study)
            best = _best_numbers(study)
            run_id, status = self._record(study, trial, names, trial.number in best)
            self.runs[trial.number] = (run_id, status)
            best &= set(self.runs)
            for number in sorted(self._flagged - best):
                self._retag(number, "false")
            for number in sorted(best - self._flagged - {trial.number}):
                self._retag(number, "true")
            self._flagged = best

    def _names(self, study: optuna.Study) -> list[str]:
        n = len(study.directions)
        given = self.metric_name
        if given is None:
            study_names = getattr(study, "metric_names", None)
            if study_names:
                return list(study_names)
            return ["value"] if n == 1 else [f"value_{i}" for i in range(n)]
        names = [given] if isinstance(given, str) else list(given)
        if isinstance(given, str) and n > 1:
            names = [f"{given}_{i}" for i in range(n)]
        if len(names) != n:
            raise ValueError(f"metric_name has {len(names)} names; the study has {n} "
                             "objectives")
        return names

    def _record(self, study: optuna.Study, trial: Any, names: list[str],
                best: bool) -> tuple[str, str]:
        import bridge

        run = bridge.init(name=f"trial-{trial.number}", group=study.study_name,
                          **self._init_kwargs)
        if trial.params:
            run.log_params(jsonable(dict(trial.params)))
        if self.log_distributions and trial.distributions:
            run.log_param("optuna.distributions", {
                k: json.loads(optuna.distributions.distribution_to_json(d))
                for k, d in trial.distributions.items()})
        if trial.values is not None:
            for name, value in zip(names, trial.values):
                run.summary[name] = value
        for step, value in sorted(trial.intermediate_values.items()):
            run.log_metrics({f"intermediate/{names[0]}": value}, step=int(step))
        tags = {"optuna.study": study.study_name, "optuna.trial_number": trial.number,
                "optuna.state": trial.state.name}
        if len(names) == 1:
            tags["optuna.direction"] = study.directions[0].name
        else:
            tags.update({f"optuna.direction.{n}": d.name
                         for n, d in zip(names, study.directions)})
        for field in ("datetime_start", "datetime_complete"):
            when = getattr(trial, field, None)
            if when is not None:
                tags[f"optuna.{field}"] = when.isoformat()
        tags["optuna.best"] = "true" if best else "false"
        run.set_tags(tags)
        status = "FAILED" if trial.state == TrialState.FAIL else "FINISHED"
        run.finish(status)
        return run.id, status

    def _retag(self, number: int, flag: str) -> None:
        """Reopen trial ``number``'s finished run to set its ``optuna.best`` flag."""
        import bridge

        run_id, status = self.runs[number]
        kwargs = {k: v for k, v in self._init_kwargs.items() if k != "tags"}
        run = bridge.init(run_id=run_id, resume="allow", **kwargs)
        run.set_tag("optuna.best", flag)
        run.finish(status)


def _best_numbers(study: optuna.Study) -> set[int]:
    """The numbers of the study's best trial(s): the Pareto front with several objectives."""
    try:
        if len(study.directions) > 1:
            return {t.number for t in study.best_trials}
        return {study.best_trial.number}
    except ValueError:  # no completed trial yet
        return set()
