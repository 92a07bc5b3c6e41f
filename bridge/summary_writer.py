"""``bridge.SummaryWriter``: torch's / tensorboardX's ``SummaryWriter`` API over a bridge run.

Code written for TensorBoard (``writer.add_scalar("loss", v, step)``) or for ML Tracking
Ops' ``ExperimentLogger.add_scalar(name, value, step)`` switches by one import:
``from bridge import SummaryWriter``. Mapping:

- ``logdir`` (or torch's ``log_dir``) → the run name: its last path component plus
  ``comment`` (``runs/lr0.1`` → ``lr0.1``); the full path is kept as tag ``bridge.logdir``.
  ``project`` and every other :func:`bridge.init` argument pass through ``**init_kwargs``.
- ``add_scalar(tag, value, global_step, walltime)`` → metric ``tag`` at ``global_step``
  (stepless when None), timestamp ``walltime`` seconds → ms.
- ``add_scalars(main_tag, {sub: v}, global_step)`` → metrics ``main_tag/sub``.
- ``add_text(tag, text, global_step)`` → a text file ``text/<tag>/<step>.txt``
  (``text/<tag>.txt`` without a step): a readable file in every backend.
- ``add_hparams(hparams, metrics)`` → params plus metrics in this same run (TensorBoard
  writes a separate sub-run; bridge keeps one run).
- ``add_figure(tag, figure, global_step)`` → a PNG artifact ``<tag>`` (matplotlib).
- Histograms, images, graphs, embeddings, audio, video, meshes, PR curves: accepted and
  ignored with one warning each, so a TensorBoard script runs unchanged.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from bridge.errors import BridgeWarning

__all__ = ["SummaryWriter"]

_IGNORED = frozenset({
    "add_histogram", "add_histogram_raw", "add_image", "add_images", "add_image_with_boxes",
    "add_graph", "add_embedding", "add_pr_curve", "add_pr_curve_raw", "add_audio", "add_video",
    "add_mesh", "add_custom_scalars", "add_custom_scalars_multilinechart",
    "add_custom_scalars_marginchart", "add_onnx_graph", "add_openvino_graph",
})  # fmt: skip


def _run_name(logdir: str | os.PathLike | None, comment: str) -> str | None:
    if logdir is None:
        return comment or None
    base = Path(logdir).name or str(logdir)
    return base + comment


class SummaryWriter:
    """TensorBoard's writer API recording into a bridge run.

    ``run=`` logs into an existing run (``close()`` then leaves it open); otherwise the
    writer starts a run with :func:`bridge.init` and ``close()`` finishes it.
    """

    def __init__(self, logdir: str | os.PathLike | None = None, backends: Any = None, *,
                 log_dir: str | os.PathLike | None = None, comment: str = "",
                 run: Any = None, purge_step: int | None = None, max_queue: int | None = None,
                 flush_secs: float | None = None, filename_suffix: str = "",
                 **init_kwargs: Any) -> None:
        logdir = logdir if logdir is not None else log_dir
        self.logdir = None if logdir is None else str(logdir)
        self._owned = run is None
        self._warned: set[str] = set()
        if run is None:
            import bridge

            init_kwargs.setdefault("name", _run_name(logdir, comment))
            if backends is not None:
                init_kwargs["backends"] = backends
            run = bridge.init(**init_kwargs)
            if self.logdir is not None:
                run.set_tag("bridge.logdir", self.logdir)
        self.run = run

    # -- scalars -------------------------------------------------------------------------

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None,
                   walltime: float | None = None, **_ignored: Any) -> None:
        self.run.log_metrics({tag: scalar_value}, step=global_step,
                             timestamp=_ms(walltime))

    def add_scalars(self, main_tag: str, tag_scalar_dict: Mapping[str, Any],
                    global_step: int | None = None, walltime: float | None = None) -> None:
        self.run.log_metrics({f"{main_tag}/{k}": v for k, v in tag_scalar_dict.items()},
                             step=global_step, timestamp=_ms(walltime))

    # -- text, hparams, figures ----------------------------------------------------------

    def add_text(self, tag: str, text_string: str, global_step: int | None = None,
                 walltime: float | None = None) -> None:
        name = f"text/{tag}.txt" if global_step is None else f"text/{tag}/{global_step}.txt"
        self.run.log_text(text_string, name)

    def add_hparams(self, hparam_dict: Mapping[str, Any], metric_dict: Mapping[str, Any],
                    hparam_domain_discrete: Any = None, run_name: str | None = None,
                    global_step: int | None = None) -> None:
        self.run.log_params(dict(hparam_dict))
        if metric_dict:
            self.run.log_metrics(dict(metric_dict), step=global_step)

    def add_figure(self, tag: str, figure: Any, global_step: int | None = None,
                   close: bool = True, walltime: float | None = None) -> None:
        import tempfile

        figures = figure if isinstance(figure, (list, tuple)) else [figure]
        with tempfile.TemporaryDirectory(prefix="bridge-fig-") as tmp:
            for i, fig in enumerate(figures):
                if not hasattr(fig, "savefig"):
                    self._warn_once("add_figure", "figure has no savefig(); not recorded")
                    return
                suffix = "" if global_step is None else f"_{global_step}"
                suffix += "" if len(figures) == 1 else f"_{i}"
                path = Path(tmp) / f"{Path(tag).name}{suffix}.png"
                fig.savefig(path)
                if close:
                    _close_figure(fig)
                self.run.log_artifact(path, name=tag, type="image")

    # -- lifecycle -----------------------------------------------------------------------

    def flush(self) -> None:
        self.run.flush()

    def close(self) -> None:
        """Finish the run if this writer started it; otherwise just flush."""
        if self._owned:
            self.run.finish()
        else:
            self.run.flush()

    def __enter__(self) -> "SummaryWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._owned:
            self.run.__exit__(exc_type, exc, tb)
        else:
            self.run.flush()

    def get_logdir(self) -> str | None:
        return self.logdir

    # -- TensorBoard-only features -------------------------------------------------------

    def _warn_once(self, name: str, why: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            warnings.warn(f"SummaryWriter.{name}: {why}", BridgeWarning, stacklevel=3)

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name in _IGNORED:
            def ignored(*args: Any, **kwargs: Any) -> None:
                self._warn_once(name, "not supported by bridge; ignored")

            return ignored
        raise AttributeError(name)


def _ms(walltime: float | None) -> int | None:
    return None if walltime is None else int(round(float(walltime) * 1000))


def _close_figure(fig: Any) -> None:
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:
        pass
