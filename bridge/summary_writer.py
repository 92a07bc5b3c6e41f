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
- ``add_text(tag, text, global_step)`` → a point of text series ``tag`` (as W&B, Neptune
  and Comet keep text), at ``global_step`` and ``walltime``.
- ``add_hparams(hparams, metrics)`` → params plus metrics in this same run (TensorBoard
  writes a separate sub-run; bridge keeps one run).
- Media, each a media event ``tag`` at ``global_step`` and ``walltime``, its arrays taken as
  torch takes them (``dataformats``; floats in [0, 1], uint8 as is):
  ``add_image`` / ``add_image_with_boxes`` / ``add_figure`` → an image (boxes drawn as
  TensorBoard draws them; figures rendered to PNG now); ``add_images`` and a list of
  figures → one event with an image per item (TensorBoard tiles them into one grid);
  ``add_histogram`` → a histogram with the bins TensorBoard would keep (``"tensorflow"``
  default edges, trimmed to the data); ``add_histogram_raw`` → the same from its buckets;
  ``add_audio`` → a WAV; ``add_video`` → an animated GIF per video of the batch;
  ``add_pr_curve`` / ``add_pr_curve_raw`` → a curve (recall, precision) with its counts
  kept; ``add_mesh`` → a 3-D object (a point cloud, or an OBJ when it has faces);
  ``add_embedding`` → a table of the metadata, the vectors' components and the label
  images; ``add_tensor`` → a tensor.
- Graphs and custom-scalar layouts have no bridge form: each call warns and is counted on
  the run (``run.warnings``), so a TensorBoard script runs unchanged and nothing is lost
  unsaid.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bridge.errors import BridgeWarning

__all__ = ["SummaryWriter"]

# TensorBoard features with no bridge form: each call warns and is counted on the run.
_UNSUPPORTED = {
    "add_graph": "a model graph", "add_onnx_graph": "a model graph",
    "add_openvino_graph": "a model graph", "add_custom_scalars": "a dashboard layout",
    "add_custom_scalars_multilinechart": "a dashboard layout",
    "add_custom_scalars_marginchart": "a dashboard layout",
}


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

    # -- text, hparams ---------------------------------------------------------------------

    def add_text(self, tag: str, text_string: str, global_step: int | None = None,
                 walltime: float | None = None) -> None:
        """A point of text series ``tag``."""
        self._media("add_text", tag, lambda: str(text_string), global_step, walltime)

    def add_hparams(self, hparam_dict: Mapping[str, Any], metric_dict: Mapping[str, Any],
                    hparam_domain_discrete: Any = None, run_name: str | None = None,
                    global_step: int | None = None) -> None:
        self.run.log_params(dict(hparam_dict))
        if metric_dict:
            self.run.log_metrics(dict(metric_dict), step=global_step)

    # -- images ----------------------------------------------------------------------------

    def add_image(self, tag: str, img_tensor: Any, global_step: int | None = None,
                  walltime: float | None = None, dataformats: str = "CHW") -> None:
        """One image, ``dataformats`` as torch takes it (``CHW``, ``HWC``, ``HW``...)."""
        from bridge.adapters.tensorboard import compat
        from bridge.media import Image

        self._media("add_image", tag, lambda: Image(compat.image_uint8(
            compat.to_hwc(compat.to_array(img_tensor), dataformats))), global_step, walltime)

    def add_images(self, tag: str, img_tensor: Any, global_step: int | None = None,
                   walltime: float | None = None, dataformats: str = "NCHW") -> None:
        """A batch of images: one event, an item per image."""
        from bridge.adapters.tensorboard import compat
        from bridge.media import Image

        def make() -> list:
            batch = compat.to_nhwc(compat.to_array(img_tensor), dataformats)
            return [Image(compat.image_uint8(x)) for x in batch]

        self._media("add_images", tag, make, global_step, walltime)

    def add_image_with_boxes(self, tag: str, img_tensor: Any, box_tensor: Any,
                             global_step: int | None = None, walltime: float | None = None,
                             rescale: float = 1, dataformats: str = "CHW",
                             labels: Sequence[str] | None = None, **_ignored: Any) -> None:
        """An image with its ``(xmin, ymin, xmax, ymax)`` boxes drawn in, as TensorBoard."""
        from bridge.adapters.tensorboard import compat
        from bridge.media import Image

        def make() -> Image:
            hwc = compat.image_uint8(compat.to_hwc(compat.to_array(img_tensor), dataformats))
            drawn = compat.draw_boxes(hwc, box_tensor, labels)
            if rescale != 1:
                from PIL import Image as PILImage

                pil = PILImage.fromarray(drawn)
                return Image(pil.resize((int(pil.width * rescale), int(pil.height * rescale))))
            return Image(drawn)

        self._media("add_image_with_boxes", tag, make, global_step, walltime)

    def add_figure(self, tag: str, figure: Any, global_step: int | None = None,
                   close: bool = True, walltime: float | None = None) -> None:
        """A matplotlib figure (or a list: one event, an item each), rendered to PNG now."""
        from bridge.media import Image

        figures = list(figure) if isinstance(figure, (list, tuple)) else [figure]

        def make() -> Any:
            images = []
            for fig in figures:
                if not hasattr(fig, "savefig"):
                    raise TypeError(f"{type(fig).__name__} is not a matplotlib figure")
                images.append(Image(fig))
            return images if isinstance(figure, (list, tuple)) else images[0]

        try:
            self._media("add_figure", tag, make, global_step, walltime)
        finally:
            if close:
                for fig in figures:
                    _close_figure(fig)

    # -- histograms, audio, video ------------------------------------------------------------

    def add_histogram(self, tag: str, values: Any, global_step: int | None = None,
                      bins: Any = "tensorflow", walltime: float | None = None,
                      max_bins: int | None = None) -> None:
        """A histogram of ``values`` with the bins TensorBoard would keep."""
        from bridge.adapters.tensorboard import compat
        from bridge.media import Histogram

        def make() -> Histogram:
            edges, counts = compat.histogram(values, bins, max_bins)
            return Histogram(edges=edges, counts=counts)

        self._media("add_histogram", tag, make, global_step, walltime)

    def add_histogram_raw(self, tag: str, min: float, max: float, num: int, sum: float,
                          sum_squares: float, bucket_limits: Any, bucket_counts: Any,
                          global_step: int | None = None,
                          walltime: float | None = None) -> None:
        """A histogram given as TensorBoard keeps it: each bucket's right edge and count."""
        from bridge.adapters.tensorboard import compat
        from bridge.adapters.tensorboard.media import Skipped, histogram_edges
        from bridge.adapters.tensorboard.names import PLUGIN_HISTOGRAMS, VENDOR
        from bridge.media import Histogram

        def make() -> Histogram:
            limits = [float(x) for x in compat.to_array(bucket_limits).reshape(-1)]
            counts = [float(x) for x in compat.to_array(bucket_counts).reshape(-1)]
            try:
                edges, kept = histogram_edges(limits, counts, float(min), float(max))
            except Skipped as why:
                raise ValueError(f"buckets not usable ({why})") from None
            h = Histogram(edges=edges, counts=kept)
            h.source = {"vendor": VENDOR, "descriptor": {
                "plugin": PLUGIN_HISTOGRAMS, "min": float(min), "max": float(max),
                "num": float(num), "sum": float(sum), "sum_squares": float(sum_squares)}}
            return h

        self._media("add_histogram_raw", tag, make, global_step, walltime)

    def add_audio(self, tag: str, snd_tensor: Any, global_step: int | None = None,
                  sample_rate: int = 44100, walltime: float | None = None) -> None:
        """A clip of samples in [-1, 1] (clipped, as TensorBoard does), stored as WAV."""
        from bridge.adapters.tensorboard import compat
        from bridge.media import Audio

        def make() -> Audio:
            import numpy as np

            samples = compat.to_array(snd_tensor).squeeze()
            if samples.dtype.kind == "f":
                samples = np.clip(samples, -1.0, 1.0)
            return Audio(samples, sample_rate=int(sample_rate))

        self._media("add_audio", tag, make, global_step, walltime)

    def add_video(self, tag: str, vid_tensor: Any, global_step: int | None = None,
                  fps: float = 4, walltime: float | None = None) -> None:
        """Videos shaped ``(N, T, C, H, W)``: an animated GIF each, in one event."""
        from bridge.adapters.tensorboard import compat
        from bridge.media import Video

        def make() -> Any:
            clips = [Video(v, fps=fps) for v in compat.videos(vid_tensor)]
            return clips[0] if len(clips) == 1 else clips

        self._media("add_video", tag, make, global_step, walltime)

    # -- curves, meshes, embeddings, tensors ---------------------------------------------------

    def add_pr_curve(self, tag: str, labels: Any, predictions: Any,
                     global_step: int | None = None, num_thresholds: int = 127,
                     weights: Any = None, walltime: float | None = None) -> None:
        """A precision/recall curve computed as TensorBoard computes it."""
        from bridge.adapters.tensorboard import compat

        from bridge.adapters.tensorboard.summary_media import pr_curve_media

        self._media("add_pr_curve", tag, lambda: pr_curve_media(compat.pr_curve(
            labels, predictions, num_thresholds, weights)), global_step, walltime)

    def add_pr_curve_raw(self, tag: str, true_positive_counts: Any,
                         false_positive_counts: Any, true_negative_counts: Any,
                         false_negative_counts: Any, precision: Any, recall: Any,
                         global_step: int | None = None, num_thresholds: int = 127,
                         weights: Any = None, walltime: float | None = None) -> None:
        """A precision/recall curve from its counts."""
        from bridge.adapters.tensorboard import compat

        from bridge.adapters.tensorboard.summary_media import pr_curve_media

        def make() -> Any:
            import numpy as np

            rows = [compat.to_array(x).astype(np.float64).reshape(-1) for x in (
                true_positive_counts, false_positive_counts, true_negative_counts,
                false_negative_counts, precision, recall)]
            if len({r.size for r in rows}) != 1:
                raise ValueError("counts, precision and recall must have the same length")
            return pr_curve_media(np.stack(rows))

        self._media("add_pr_curve_raw", tag, make, global_step, walltime)

    def add_mesh(self, tag: str, vertices: Any, colors: Any = None, faces: Any = None,
                 config_dict: Any = None, global_step: int | None = None,
                 walltime: float | None = None) -> None:
        """Meshes shaped ``(B, N, 3)``: a point cloud each, or an OBJ file when ``faces``
        are given; ``config_dict`` is kept in the event's source."""
        from bridge.adapters.tensorboard.summary_media import meshes

        self._media("add_mesh", tag, lambda: meshes(tag, vertices, colors, faces, config_dict),
                    global_step, walltime)

    def add_embedding(self, mat: Any, metadata: Any = None, label_img: Any = None,
                      global_step: int | None = None, tag: str = "default",
                      metadata_header: Sequence[str] | None = None) -> None:
        """Vectors as a table ``embeddings/<tag>``: metadata columns, then ``dim_0``... and
        an ``image`` column when ``label_img`` is given (as W&B keeps embeddings); step 0
        without ``global_step``, as torch files it."""
        from bridge.adapters.tensorboard.names import EMBEDDINGS_PREFIX
        from bridge.adapters.tensorboard.summary_media import embedding_table

        step = 0 if global_step is None else global_step
        self._media("add_embedding", EMBEDDINGS_PREFIX + tag, lambda: embedding_table(
            mat, metadata, label_img, metadata_header), step, None)

    def add_tensor(self, tag: str, tensor: Any, global_step: int | None = None,
                   walltime: float | None = None) -> None:
        """A tensor kept whole (dtype, shape, values)."""
        from bridge.adapters.tensorboard import compat
        from bridge.adapters.tensorboard.summary_media import TensorMedia

        self._media("add_tensor", tag, lambda: TensorMedia(compat.to_array(tensor)),
                    global_step, walltime)

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

    # -- recording and problems -------------------------------------------------------------

    def _media(self, call: str, key: str, make: Callable[[], Any], step: Any,
               walltime: float | None) -> None:
        """Build the value (a bad input is a counted warning, as in ``run.log``) and record
        it at ``step`` and ``walltime``."""
        try:
            value = make()
        except (ValueError, TypeError, IndexError, OSError, ImportError) as exc:
            self._problem(call, f"{key!r:.80}: {exc}; not recorded")
            return
        self.run.log_media(key, value, step=step, timestamp=_ms(walltime))

    def _problem(self, call: str, why: str) -> None:
        """Warn and count on the run (``run.warnings``), or raise when the run is strict."""
        problem = getattr(self.run, "_problem", None)
        if problem is not None:
            problem(f"SummaryWriter.{call}", why)
        else:
            warnings.warn(f"SummaryWriter.{call}: {why}", BridgeWarning, stacklevel=4)

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name in _UNSUPPORTED:
            def unsupported(*args: Any, **kwargs: Any) -> None:
                self._problem(name, f"{_UNSUPPORTED[name]} has no bridge form; not recorded")

            return unsupported
        raise AttributeError(name)


def _ms(walltime: float | None) -> int | None:
    return None if walltime is None else int(round(float(walltime) * 1000))


def _close_figure(fig: Any) -> None:
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:
        pass
