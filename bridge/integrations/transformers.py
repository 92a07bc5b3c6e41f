"""A Hugging Face ``transformers`` callback:
``Trainer(..., callbacks=[BridgeCallback(project="glue")], report_to=[])``.

Recorded (by the main process only, as the Trainer's own integrations do):

- at train begin: the ``TrainingArguments`` (``args.to_sanitized_dict()``) as params, and
  the model's config as the nested param ``model_config``;
- at each Trainer log (``logging_steps``, evaluations, the final summary): every numeric
  value of ``logs`` at ``step = state.global_step``; strings are skipped;
- at train end: the run is finished if the callback started it; a later
  ``trainer.evaluate()`` resumes that same run for its metrics.

Without ``run=`` the callback starts a run at train begin (``**init_kwargs`` go to
``bridge.init``; the current bridge run is used when there is one). Set
``report_to=[]`` (or ``"none"``) so the Trainer does not also start its own W&B / MLflow
integrations.
"""

from __future__ import annotations

from typing import Any, Mapping

from transformers import TrainerCallback

from bridge.integrations import jsonable

__all__ = ["BridgeCallback"]


def _numeric(logs: Mapping[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (logs or {}).items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)) or hasattr(v, "item"):
            try:
                f = float(v)
            except (TypeError, ValueError):
                continue
            out[str(k)] = f
    return out


class BridgeCallback(TrainerCallback):
    """Trainer callback recording arguments, logged metrics and the end of training."""

    def __init__(self, run: Any = None, **init_kwargs: Any) -> None:
        self.run = run
        self._owned = False
        self._init_kwargs = init_kwargs
        self._run_id: str | None = None  # the run this callback started, kept after finish

    def _ensure_run(self) -> Any:
        if self.run is None:
            import bridge

            if self._run_id is not None:  # e.g. trainer.evaluate() after train()
                self.run = bridge.init(**self._init_kwargs, run_id=self._run_id,
                                       resume="allow")
                self._owned = True
                return self.run
            current = None if self._init_kwargs else bridge.run()
            self.run = current if current is not None else bridge.init(**self._init_kwargs)
            self._owned = current is None
            if self._owned:
                self._run_id = self.run.id
        return self.run

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        run = self._ensure_run()
        params = jsonable(args.to_sanitized_dict()) if hasattr(args, "to_sanitized_dict") else {}
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            params["model_config"] = jsonable(config.to_dict())
        if params:
            run.log_params(params)

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        values = _numeric(logs)
        if values:
            self._ensure_run().log_metrics(values, step=int(state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero or self.run is None:
            return
        if self._owned:
            self.run.finish()
            self.run = None
            self._owned = False
        else:
            self.run.flush()
