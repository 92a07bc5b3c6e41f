"""MLflow's tracking store over the bridge spool (``MLFLOW_TRACKING_URI=bridge:``).

Writes go through bridge's Run API (``bridge.init(run_id=..., resume=...)``), so the spool
holds the usual events and ``bridge sync`` delivers them to the configured backends; reads
are answered from the spool (``reads.py``), searched and sorted by MLflow's own
``SearchUtils``. Input MLflow's own stores refuse is refused here first, with MLflow's own
validators and error codes.
"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from mlflow.entities import (LifecycleStage, LoggedModelStatus, RunStatus, RunTag, ViewType)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (INVALID_PARAMETER_VALUE, INVALID_STATE,
                                          RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST)
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.tracking import SEARCH_MAX_RESULTS_DEFAULT, SEARCH_MAX_RESULTS_THRESHOLD
from mlflow.store.tracking.abstract_store import AbstractStore
from mlflow.utils.search_utils import (SearchExperimentsUtils, SearchLoggedModelsUtils,
                                       SearchUtils)
from mlflow.utils.validation import (_validate_batch_log_data, _validate_batch_log_limits,
                                     _validate_experiment_name,
                                     _validate_metric_name, _validate_param,
                                     _validate_param_keys_unique, _validate_run_id,
                                     _validate_tag_name)

from bridge.adapters.mlflow.names import RUN_NAME_TAG
from bridge.adapters.mlflow.plugin import reads, session
from bridge.spool.events import Kind, dataset_payload, model_payload

_TERMINAL = ("FINISHED", "FAILED", "KILLED")
_PLAIN = (float, int)  # metric values taken without MLflow's validator (bool excluded)
_FAST_BATCH = 100  # metrics-only batches up to this size skip re-validating known keys


def _random_name() -> str:
    from mlflow.utils.name_utils import _generate_random_name

    return _generate_random_name()


class BridgeStore(AbstractStore):
    """``AbstractStore`` whose runs are bridge runs and experiments bridge projects."""

    def __init__(self, store_uri: str | None = None, artifact_uri: str | None = None) -> None:
        super().__init__()
        self.spool = session.spool(session.spool_dir(store_uri))

    # -- experiments -------------------------------------------------------------------------
    def _experiments(self) -> list:
        return reads.experiments(self.spool, reads.runs(self.spool))

    def search_experiments(self, view_type=ViewType.ACTIVE_ONLY,
                           max_results=SEARCH_MAX_RESULTS_DEFAULT, filter_string=None,
                           order_by=None, page_token=None):
        if not isinstance(max_results, int) or not 1 <= max_results <= \
                SEARCH_MAX_RESULTS_THRESHOLD:
            raise MlflowException(
                f"Invalid value {max_results} for parameter 'max_results' supplied. It must be "
                f"a positive integer at most {SEARCH_MAX_RESULTS_THRESHOLD}",
                INVALID_PARAMETER_VALUE)
        stages = LifecycleStage.view_type_to_stages(view_type)
        exps = [e for e in self._experiments() if e.lifecycle_stage in stages]
        exps = SearchExperimentsUtils.filter(exps, filter_string)
        exps = SearchExperimentsUtils.sort(exps, order_by or ["creation_time DESC",
                                                              "experiment_id ASC"])
        page, token = SearchUtils.paginate(exps, page_token, max_results)
        return PagedList(page, token)

    def create_experiment(self, name, artifact_location=None, tags=None):
        _validate_experiment_name(name)
        if self.get_experiment_by_name(name) is not None:
            raise MlflowException(f"Experiment '{name}' already exists.",
                                  RESOURCE_ALREADY_EXISTS)
        for t in tags or []:
            _validate_tag_name(t.key)
        self.spool.save_experiment(name, tags={t.key: t.value for t in tags or []})
        return session.experiment_id(name)

    def get_experiment(self, experiment_id):
        for exp in self._experiments():
            if exp.experiment_id == str(experiment_id):
                return exp
        raise MlflowException(f"No Experiment with id={experiment_id} exists",
                              RESOURCE_DOES_NOT_EXIST)

    def get_experiment_by_name(self, experiment_name):
        for exp in self._experiments():
            if exp.name == experiment_name:
                return exp
        return None

    def _experiment_name(self, experiment_id) -> str:
        return self.get_experiment(experiment_id).name

    def set_experiment_tag(self, experiment_id, tag):
        _validate_tag_name(tag.key)
        name = self._experiment_name(experiment_id)
        self.spool.save_experiment(name, tags={tag.key: tag.value})

    def delete_experiment(self, experiment_id):
        raise session.not_supported("Deleting an experiment",
                                    "Delete it in the MLflow server bridge syncs to.")

    def restore_experiment(self, experiment_id):
        raise session.not_supported("Restoring an experiment",
                                    "Restore it in the MLflow server bridge syncs to.")

    def rename_experiment(self, experiment_id, new_name):
        raise session.not_supported(
            "Renaming an experiment (a bridge project)",
            "Rename it in the MLflow server bridge syncs to, or log new runs to another name.")

    # -- runs --------------------------------------------------------------------------------
    def create_run(self, experiment_id, user_id, start_time, tags, run_name):
        exp = self.get_experiment(experiment_id or session.DEFAULT_EXPERIMENT_ID)
        if exp.lifecycle_stage != LifecycleStage.ACTIVE:
            raise MlflowException(
                f"Could not create run under non-active experiment with ID {experiment_id}.",
                INVALID_STATE)
        tags = list(tags or [])
        tag_name = next((t.value for t in tags if t.key == RUN_NAME_TAG), None)
        if run_name and tag_name and run_name != tag_name:
            raise MlflowException(
                "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with "
                f"different values (run_name='{run_name}', mlflow.runName='{tag_name}').",
                INVALID_PARAMETER_VALUE)
        run_name = run_name or tag_name or _random_name()
        if not tag_name:
            tags.append(RunTag(RUN_NAME_TAG, run_name))
        if user_id and not any(t.key == reads.USER_TAG for t in tags):
            tags.append(RunTag(reads.USER_TAG, user_id))
        for t in tags:
            _validate_tag_name(t.key)
        run_id = uuid.uuid4().hex
        with self.spool.lock:
            run = self.spool.start(exp.name, run_name, run_id)
            for t in tags:
                run.set_tag(t.key, t.value)
        return self.get_run(run_id)

    def _record(self, run_id: str) -> Any:
        _validate_run_id(run_id)
        rec = reads.find(self.spool, run_id)
        if rec is None:
            raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
        return rec

    def get_run(self, run_id):
        return reads.to_run(reads.fold(self._record(run_id)), self.spool.path)

    @contextmanager
    def _writing(self, run_id: str) -> Iterator[Any]:
        """The bridge run to write to; a run ended before is ended again with its status."""
        with self.spool.lock:
            open_run = self.spool.runs.get(run_id)
            if open_run is not None and not open_run._finished:
                yield open_run
                return
            rec = self._record(run_id)
            run = self.spool.writable(run_id)
            try:
                yield run
            finally:
                if rec.status in _TERMINAL:
                    run.finish(rec.status)

    def update_run_info(self, run_id, run_status, end_time, run_name):
        status = RunStatus.to_string(run_status)
        if not run_name and status in _TERMINAL:
            # Ended already (by bridge's exit hook, or another client): the first end stays.
            open_run = self.spool.runs.get(run_id)
            ended = open_run._finished if open_run is not None else (
                self._record(run_id).status in _TERMINAL)
            if ended:
                return self.get_run(run_id).info
        with self._writing(run_id) as run:
            if run_name:
                self._rename(run, run_name)
            if status in _TERMINAL and not run._finished:
                run.finish(status)
        return self.get_run(run_id).info

    def _rename(self, run: Any, name: str) -> None:
        run.set_tag(RUN_NAME_TAG, name)
        if name != run.name:
            run.name = name
            run._writer.put_run(run._row())

    def delete_run(self, run_id):
        raise session.not_supported("Deleting a run",
                                    "Delete it in the MLflow server bridge syncs to.")

    def restore_run(self, run_id):
        raise session.not_supported("Restoring a run",
                                    "Restore it in the MLflow server bridge syncs to.")

    def get_metric_history(self, run_id, metric_key, max_results=None, page_token=None):
        _validate_metric_name(metric_key)
        points = reads.fold(self._record(run_id)).history.get(metric_key, [])
        if max_results is None:
            offset = SearchUtils.parse_start_offset_from_page_token(page_token)
            return PagedList(points[offset:], None)
        page, token = SearchUtils.paginate(points, page_token, max_results)
        return PagedList(page, token)

    def _search_runs(self, experiment_ids, filter_string, run_view_type, max_results,
                     order_by, page_token):
        if max_results > SEARCH_MAX_RESULTS_THRESHOLD:
            raise MlflowException(
                "Invalid value for request parameter max_results. It must be at most "
                f"{SEARCH_MAX_RESULTS_THRESHOLD}, but got value {max_results}",
                INVALID_PARAMETER_VALUE)
        wanted = {str(e) for e in experiment_ids}
        stages = LifecycleStage.view_type_to_stages(run_view_type)
        found = [reads.to_run(reads.fold(rec), self.spool.path)
                 for rec in reads.runs(self.spool)
                 if session.experiment_id(rec.project) in wanted]
        found = [r for r in found if r.info.lifecycle_stage in stages]
        found = SearchUtils.filter(found, filter_string)
        found = SearchUtils.sort(found, order_by)
        return SearchUtils.paginate(found, page_token, max_results)

    # -- params, metrics, tags ---------------------------------------------------------------
    def _plain(self, metric: Any) -> bool:
        """A metric MLflow's validator would pass and bridge can take as is: a key seen
        (and validated) before, plain numbers, no logged model."""
        value, step, ts = metric.value, metric.step, metric.timestamp
        return (metric.model_id is None and metric.key in self.spool.metric_keys
                and type(value) in _PLAIN and type(step) is int and step >= 0
                and type(ts) is int and ts >= 0)

    def _open_run(self, run_id: str) -> Any:
        run = self.spool.runs.get(run_id)
        return run if run is not None and not run._finished else None

    def log_metric(self, run_id, metric):
        # The common call (a run open in this process, a key seen before, plain numbers)
        # goes straight to the run; anything else takes log_batch's full validation, so
        # what MLflow refuses is refused the same way.
        run = self._open_run(run_id)
        if run is not None and self._plain(metric):
            run.log_metrics({metric.key: metric.value}, step=metric.step,
                            timestamp=metric.timestamp)
            return
        self.log_batch(run_id, [metric], [], [])

    def log_param(self, run_id, param):
        self.log_batch(run_id, [], [param], [])

    def set_tag(self, run_id, tag):
        self.log_batch(run_id, [], [], [tag])

    def delete_tag(self, run_id, key):
        raise session.not_supported(
            "Deleting a run tag", "Set the tag to another value (set_tag), or delete it in the "
            "MLflow server bridge syncs to.")

    def _params(self, run_id: str) -> dict[str, str]:
        known = self.spool.params.get(run_id)
        if known is None:
            known = self.spool.params[run_id] = dict(
                reads.fold(self._record(run_id)).params)
        return known

    def log_batch(self, run_id, metrics, params, tags):
        run = None if params or tags else self._open_run(run_id)
        if run is not None and len(metrics) <= _FAST_BATCH and all(map(self._plain, metrics)):
            self._log_metrics(run, run_id, metrics)  # mlflow.log_metrics: the loop's call
            return
        _validate_run_id(run_id)
        metrics, params, tags = _validate_batch_log_data(metrics, params, tags)
        _validate_batch_log_limits(metrics, params, tags)
        _validate_param_keys_unique(params)
        for m in metrics:
            if m.step < 0:
                raise MlflowException(
                    f"metric {m.key!r}: step {m.step} is negative; bridge records "
                    "non-negative steps only", INVALID_PARAMETER_VALUE)
        with self._writing(run_id) as run:
            known = self._params(run_id)
            for p in params:
                old = known.get(p.key)
                if old is not None and old != p.value:
                    raise MlflowException(
                        f"Changing param values is not allowed. Param with key='{p.key}' was "
                        f"already logged with value='{old}' for run ID='{run_id}'. Attempted "
                        f"logging new value '{p.value}'.", INVALID_PARAMETER_VALUE)
            for p in params:
                if p.key not in known:
                    known[p.key] = p.value
                    run.log_param(p.key, p.value)
            self._log_metrics(run, run_id, metrics)
            self.spool.metric_keys.update(m.key for m in metrics)  # validated: fast next time
            for t in tags:
                if t.key == RUN_NAME_TAG:
                    self._rename(run, t.value)
                else:
                    run.set_tag(t.key, t.value)

    def _log_metrics(self, run: Any, run_id: str, metrics: list) -> None:
        groups: dict[tuple[int, int], dict[str, float]] = {}
        by_model: dict[str, list[dict]] = {}
        history = None
        for m in metrics:
            if m.model_id is not None:
                by_model.setdefault(m.model_id, []).append(
                    {"key": m.key, "value": float(m.value), "ts_ms": int(m.timestamp),
                     "step": int(m.step)})
                # MLflow re-logs a run's points with the model's id: keep each point once.
                if history is None:
                    run.flush()
                    history = reads.fold(self._record(run_id)).history
                if any((p.value, p.timestamp, p.step) == (m.value, m.timestamp, m.step)
                       for p in history.get(m.key, [])):
                    continue
            group = groups.setdefault((int(m.step), int(m.timestamp)), {})
            if m.key in group:  # the same key twice at one step and time: one call each
                run.log_metrics({m.key: m.value}, step=int(m.step), timestamp=int(m.timestamp))
            else:
                group[m.key] = m.value
        for (step, ts), values in groups.items():
            run.log_metrics(values, step=step, timestamp=ts)
        for model_id, points in by_model.items():
            self._model_event(model_id, model_payload("metrics", metrics=points))

    # -- inputs and outputs ------------------------------------------------------------------
    def log_inputs(self, run_id, datasets=None, models=None):
        if models:
            raise session.not_supported(
                "Logging a logged model as a run input",
                "Record the model id as a run tag (mlflow.set_tag) instead.")
        with self._writing(run_id) as run:
            for d in datasets or []:
                ds = d.dataset
                run._record(Kind.DATASET, "log_inputs", ds.name, dataset_payload(
                    ds.name, ds.digest, ds.source_type, ds.source, ds.schema, ds.profile,
                    {t.key: t.value for t in d.tags or []}))

    def log_outputs(self, run_id, models):
        with self._writing(run_id) as run:
            for m in models:
                run._record(Kind.MODEL, "log_outputs", m.model_id,
                            model_payload("output", step=int(m.step or 0)))

    def record_logged_model(self, run_id, mlflow_model):
        # MLflow 2's run tag listing the run's models (mlflow.log-model.history).
        import json

        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_MODELS

        st = reads.fold(self._record(run_id))
        models = json.loads(st.tags.get(MLFLOW_LOGGED_MODELS, "[]"))
        self.set_tag(run_id, RunTag(MLFLOW_LOGGED_MODELS,
                                    json.dumps(models + [mlflow_model.get_tags_dict()])))

    # -- logged models (MLflow 3) ------------------------------------------------------------
    def create_logged_model(self, experiment_id=session.DEFAULT_EXPERIMENT_ID, name=None,
                            source_run_id=None, tags=None, params=None, model_type=None):
        from mlflow.utils.validation import _validate_logged_model_name

        _validate_logged_model_name(name)
        exp = self.get_experiment(experiment_id)
        if exp.lifecycle_stage != LifecycleStage.ACTIVE:
            raise MlflowException(
                f"Could not create model under non-active experiment with ID {experiment_id}.",
                INVALID_STATE)
        for p in params or []:
            _validate_param(p.key, p.value)
        for t in tags or []:
            _validate_tag_name(t.key)
        if source_run_id is None:
            raise session.not_supported(
                "A logged model without a source run",
                "Log the model inside a run (with mlflow.start_run(): ...log_model(...)).")
        model_id = f"m-{uuid.uuid4().hex}"
        with self._writing(source_run_id) as run:
            run._record(Kind.MODEL, "create_logged_model", model_id, model_payload(
                "create", name=name or _random_name(), experiment=exp.name,
                model_type=model_type, status=LoggedModelStatus.PENDING.value,
                params={p.key: p.value for p in params or []},
                tags={t.key: t.value for t in tags or []},
                creation_ms=int(time.time() * 1000)))
        self.spool.models[model_id] = source_run_id
        return self.get_logged_model(model_id)

    def _model_run(self, model_id: str) -> str:
        run_id = self.spool.models.get(model_id)
        if run_id is None:
            run_id = self._find_model(model_id).run_id
            self.spool.models[model_id] = run_id
        return run_id

    def _find_model(self, model_id: str) -> reads.ModelState:
        run_id = self.spool.models.get(model_id)
        if run_id is not None:
            model = reads.fold(self._record(run_id)).models.get(model_id)
            if model is not None:
                return model
        for model in reads.all_models(self.spool, reads.runs(self.spool)):
            if model.model_id == model_id:
                return model
        raise MlflowException(f"Logged model with ID '{model_id}' not found.",
                              RESOURCE_DOES_NOT_EXIST)

    def _model_event(self, model_id: str, payload: dict) -> None:
        run_id = self._model_run(model_id)
        with self._writing(run_id) as run:
            run._record(Kind.MODEL, "logged_model", model_id, payload)

    def get_logged_model(self, model_id, allow_deleted=False):
        return reads.to_model(self._find_model(model_id), self.spool.path)

    def log_logged_model_params(self, model_id, params):
        for p in params or []:
            _validate_param(p.key, p.value)
        if params:
            self._model_event(model_id, model_payload(
                "params", params={p.key: p.value for p in params}))

    def set_logged_model_tags(self, model_id, tags):
        for t in tags or []:
            _validate_tag_name(t.key)
        if tags:
            self._model_event(model_id, model_payload(
                "tags", tags={t.key: t.value for t in tags}))

    def delete_logged_model_tag(self, model_id, key):
        _validate_tag_name(key)
        if key not in self._find_model(model_id).tags:
            raise MlflowException(
                f"No tag with key {key!r} found for model with ID {model_id!r}.",
                RESOURCE_DOES_NOT_EXIST)
        self._model_event(model_id, model_payload("delete_tag", key=key))

    def finalize_logged_model(self, model_id, status):
        self._model_event(model_id, model_payload("status", status=getattr(status, "value", str(status))))
        return self.get_logged_model(model_id)

    def delete_logged_model(self, model_id):
        raise session.not_supported("Deleting a logged model",
                                    "Delete it in the MLflow server bridge syncs to.")

    def search_logged_models(self, experiment_ids, filter_string=None, datasets=None,
                             max_results=None, order_by=None, page_token=None):
        if datasets and not all(d.get("dataset_name") for d in datasets):
            raise MlflowException("`dataset_name` in the `datasets` clause must be specified.",
                                  INVALID_PARAMETER_VALUE)
        from mlflow.store.tracking import SEARCH_LOGGED_MODEL_MAX_RESULTS_DEFAULT

        wanted = {str(e) for e in experiment_ids}
        models = [reads.to_model(m, self.spool.path)
                  for m in reads.all_models(self.spool, reads.runs(self.spool))]
        models = [m for m in models if m.experiment_id in wanted]
        models = SearchLoggedModelsUtils.filter_logged_models(models, filter_string, datasets)
        models = SearchLoggedModelsUtils.sort(models, order_by)
        page, token = SearchLoggedModelsUtils.paginate(
            models, page_token, max_results or SEARCH_LOGGED_MODEL_MAX_RESULTS_DEFAULT)
        return PagedList(page, token)

    # -- not supported -----------------------------------------------------------------------
    def link_traces_to_run(self, trace_ids, run_id):
        raise session.not_supported(
            "Tracing", "Record GenAI traces with an MLflow server (mlflow server) as the "
            "tracking URI; bridge records runs, metrics, artifacts and models.")

    def start_trace(self, trace_info):
        self.link_traces_to_run([], "")

    def search_traces(self, *args: Any, **kwargs: Any):
        self.link_traces_to_run([], "")

    def create_dataset(self, *args: Any, **kwargs: Any):
        raise session.not_supported(
            "GenAI evaluation datasets", "Use an MLflow server as the tracking URI for GenAI "
            "evaluation; run inputs (mlflow.log_input) are recorded.")
