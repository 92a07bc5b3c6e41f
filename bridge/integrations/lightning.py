"""A PyTorch Lightning logger: ``Trainer(logger=BridgeLogger(project="mnist"))``.

Works with ``lightning`` (``lightning.pytorch``) or the older ``pytorch_lightning``
package, whichever is installed (``lightning`` first). Hyperparameters become params
(nested dicts stay nested), ``log_metrics`` keeps Lightning's ``step`` (the trainer's global
step), and every checkpoint the ``ModelCheckpoint`` callback writes is copied into the run
as an artifact named ``checkpoints`` of type ``model`` (one version per file) at once, so
a later top-k deletion does not lose it.

``finalize`` finishes the run (``success`` → FINISHED, ``failed`` → FAILED); a later
``trainer.test()`` with the same logger resumes the same run. Only rank 0 logs, as with
Lightning's own loggers; pass ``run=`` to log into a run you manage yourself.
"""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Any, Mapping

try:
    from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
    from lightning.pytorch.utilities import rank_zero_only
except ImportError:  # the standalone package
    from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment  # type: ignore
    from pytorch_lightning.utilities import rank_zero_only  # type: ignore

from bridge.integrations import jsonable

__all__ = ["BridgeLogger"]

_STATUS = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}


class BridgeLogger(Logger):
    """Lightning logger recording into a bridge run (``**init_kwargs`` go to ``bridge.init``)."""

    def __init__(self, project: str | None = None, *, run: Any = None,
                 log_checkpoints: bool = True, **init_kwargs: Any) -> None:
        super().__init__()
        self._init_kwargs = dict(init_kwargs, project=project)
        self._run = run
        self._owned = run is None
        self._run_id: str | None = run.id if run is not None else None
        self._log_checkpoints = log_checkpoints
        self._logged: dict[str, float] = {}  # checkpoint path -> mtime logged

    # -- identity ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._init_kwargs.get("project") or "default"

    @property
    def version(self) -> str:
        return self._run_id or ""

    @property
    def save_dir(self) -> str | None:
        return None  # checkpoints go to the trainer's default_root_dir

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The bridge run; started on first use, resumed after ``finalize``."""
        if self._run is None or (self._owned and self._run.status != "RUNNING"):
            import bridge

            kwargs = dict(self._init_kwargs)
            if self._run_id is not None:
                kwargs.update(run_id=self._run_id, resume="allow")
            self._run = bridge.init(**kwargs)
            self._run_id = self._run.id
        return self._run

    # -- logging -------------------------------------------------------------------------

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any,
                        **kwargs: Any) -> None:
        if isinstance(params, Namespace):
            params = vars(params)
        values = jsonable(dict(params or {}))
        if values:
            self.experiment.log_params(values)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.experiment.log_metrics(dict(metrics), step=step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if not self._log_checkpoints:
            return
        paths = {getattr(checkpoint_callback, "last_model_path", ""),
                 getattr(checkpoint_callback, "best_model_path", ""),
                 *getattr(checkpoint_callback, "best_k_models", {}).keys()}
        run = self.experiment
        for p in sorted(x for x in paths if x):
            path = Path(p)
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if self._logged.get(str(path)) == mtime:
                continue
            self._logged[str(path)] = mtime
            run.log_artifact(path, name="checkpoints", type="model")

    @rank_zero_only
    def save(self) -> None:
        if self._run is not None and self._run.status == "RUNNING":
            self._run.flush()

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if self._run is None:
            return
        if self._owned:
            self._run.finish(_STATUS.get(status, "FINISHED"))
        else:
            self._run.flush()
