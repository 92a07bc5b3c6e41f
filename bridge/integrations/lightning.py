"""A PyTorch Lightning logger: ``Trainer(logger=BridgeLogger(project="mnist"))``.

Works with ``lightning`` (``lightning.pytorch``) or the older ``pytorch_lightning``
package, whichever is installed (``lightning`` first). Hyperparameters become params
(nested dicts stay nested), ``log_metrics`` keeps Lightning's ``step`` (the trainer's global
step), and every checkpoint the ``ModelCheckpoint`` callback writes is copied into the run
as an artifact named ``checkpoints`` of type ``model`` (one version per file) at once, so
a later top-k deletion does not lose it.

Media, as Lightning's ``WandbLogger`` takes it: ``log_image(key, images, step=None,
caption=[...])`` records one media event ``key`` at ``step`` with an image per item (arrays,
tensors, PIL images, paths; ``CHW`` or ``HWC``), ``log_table(key, columns, data, dataframe,
step)`` a table, ``log_text`` a table of strings, ``log_audio(key, audios, step,
sample_rate=[...], caption=[...])`` and ``log_video(key, videos, step, fps=[...])`` audio and
video items. A per-item option bridge cannot keep (W&B's ``masks``, ``boxes``) warns and is
counted on the run; the images are still recorded.

``finalize`` finishes the run (``success`` → FINISHED, ``failed`` → FAILED); a later
``trainer.test()`` with the same logger resumes the same run. Only rank 0 logs, as with
Lightning's own loggers; pass ``run=`` to log into a run you manage yourself.
"""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Any, Mapping, Sequence

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
    def log_image(self, key: str, images: list[Any], step: int | None = None,
                  **kwargs: Any) -> None:
        """Images under one key at ``step`` (one event, an item each); ``caption=[...]``
        gives each its caption, as with ``WandbLogger.log_image``."""
        self._log_items("log_image", key, images, step, kwargs, ("caption",))

    @rank_zero_only
    def log_audio(self, key: str, audios: list[Any], step: int | None = None,
                  **kwargs: Any) -> None:
        """Audio clips under one key (``sample_rate=[...]``, ``caption=[...]`` per clip)."""
        self._log_items("log_audio", key, audios, step, kwargs, ("caption", "sample_rate"))

    @rank_zero_only
    def log_video(self, key: str, videos: list[Any], step: int | None = None,
                  **kwargs: Any) -> None:
        """Videos under one key (``fps=[...]``, ``caption=[...]``, ``format=[...]`` each)."""
        self._log_items("log_video", key, videos, step, kwargs, ("caption", "fps", "format"))

    @rank_zero_only
    def log_table(self, key: str, columns: Sequence[str] | None = None,
                  data: Sequence[Sequence[Any]] | None = None, dataframe: Any = None,
                  step: int | None = None) -> None:
        """A table (``columns`` and rows of ``data``, or a pandas ``dataframe``); cells may
        be media (``bridge.Image``...)."""
        from bridge.media import MediaError, Table

        run = self.experiment
        try:
            table = Table(columns=columns, data=data, dataframe=dataframe)
        except (MediaError, TypeError, ValueError) as exc:
            _problem(run, "log_table", f"{key!r:.80}: {exc}; not recorded")
            return
        run.log_media(key, table, step=step)

    @rank_zero_only
    def log_text(self, key: str, columns: Sequence[str] | None = None,
                 data: Sequence[Sequence[Any]] | None = None, dataframe: Any = None,
                 step: int | None = None) -> None:
        """Text rows as a table, as ``WandbLogger.log_text`` logs them."""
        self.log_table(key, columns=columns, data=data, dataframe=dataframe, step=step)

    def _log_items(self, call: str, key: str, values: list[Any], step: int | None,
                   options: dict[str, Any], kept: tuple[str, ...]) -> None:
        """One media event of ``values``, each with its own options (lists as long as
        ``values``); options bridge has no place for are a counted warning."""
        from bridge.media import Audio, Image, MediaError, Video

        run = self.experiment
        if not isinstance(values, (list, tuple)):
            raise TypeError(f'Expected a list as "{call[4:]}s", found {type(values)}')
        n = len(values)
        for name, given in options.items():
            if not isinstance(given, (list, tuple)) or len(given) != n:
                raise ValueError(f"Expected {n} items for {name}, found "
                                 f"{len(given) if hasattr(given, '__len__') else given!r}")
        dropped = sorted(set(options) - set(kept))
        if dropped:
            _problem(run, call, f"{key!r:.80}: {', '.join(dropped)} not kept by bridge; "
                     "the items are recorded without them")
        make = {"log_image": Image, "log_audio": Audio, "log_video": Video}[call]
        try:
            items = [make(v, **{k: options[k][i] for k in kept if k in options})
                     for i, v in enumerate(values)]
        except (MediaError, TypeError, ValueError) as exc:
            _problem(run, call, f"{key!r:.80}: {exc}; not recorded")
            return
        if items:
            run.log_media(key, items, step=step)

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


def _problem(run: Any, call: str, why: str) -> None:
    """A counted warning on the run (an error when the run is strict)."""
    problem = getattr(run, "_problem", None)
    if problem is not None:
        problem(f"BridgeLogger.{call}", why)
    else:
        import warnings

        from bridge.errors import BridgeWarning

        warnings.warn(f"BridgeLogger.{call}: {why}", BridgeWarning, stacklevel=3)
