"""W&B's media classes and ``watch`` for :mod:`bridge.compat.wandb`, built on bridge.media.

``wandb.Image``, ``Histogram``, ``Table``, ``Audio``, ``Video``, ``Html`` and ``Object3D``
take W&B's arguments and are bridge media values, so ``wandb.log({"x": wandb.Image(a)})``
records a media event at the row's step; the encoding happens on bridge's writer thread,
not in the constructor. What differs from W&B, on purpose:

- ``Image``: arrays are stored as lossless PNG whatever ``file_type`` says; bounding boxes,
  ``classes`` and ``grouping`` are kept in the event's ``source`` descriptor; masks are not
  recorded (a warning says so).
- ``Histogram``: more than 512 bins are kept (W&B refuses them; bridge's W&B backend
  re-bins when it delivers).
- ``Html``: the page is kept as given (``inject`` adds nothing).

``watch(model, log="gradients"|"parameters"|"all", log_freq=1000)`` records, every
``log_freq`` backward passes (gradients) or forward passes (parameters), a 64-bin
histogram per parameter as ``gradients/<name>`` / ``parameters/<name>`` at the run's
current step, as W&B does; the histogram is computed with torch where the tensor lives,
so only its counts cross to the CPU.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from typing import Any, Iterable, Sequence

import bridge.media as _media
from bridge.media.structured import _cell
from bridge.errors import BridgeWarning

__all__ = ["Audio", "Histogram", "Html", "Image", "Object3D", "Table", "Video", "unwatch",
           "unwatch_run", "watch"]

_WATCH_BINS = 64
_DEFAULT_TABLE_COLUMNS = ["Input", "Output", "Expected"]  # W&B's, for Table()


def _source(descriptor: dict[str, Any]) -> dict[str, Any] | None:
    clean = {k: v for k, v in descriptor.items() if v is not None}
    if not clean:
        return None
    try:
        clean = json.loads(json.dumps(clean, default=lambda v: v.tolist()
                                      if hasattr(v, "tolist") else str(v)))
    except (TypeError, ValueError):
        return None
    return {"vendor": "wandb", "descriptor": clean}


class Image(_media.Image):
    """``wandb.Image(data_or_path, mode=None, caption=None, grouping=None, classes=None,
    boxes=None, masks=None, file_type=None, normalize=True)``."""

    def __init__(self, data_or_path: Any, mode: str | None = None, caption: str | None = None,
                 grouping: int | None = None, classes: Any = None, boxes: Any = None,
                 masks: Any = None, file_type: str | None = None,
                 normalize: bool = True) -> None:
        data = data_or_path
        if isinstance(data, _media.Image):  # W&B copies an Image given to Image
            self.__dict__.update(data.__dict__)
            if caption is not None:
                self.caption = str(caption)
            return
        if mode is not None or not normalize:
            data = _pil_of(data, mode, normalize)
        super().__init__(data, caption=caption)
        if masks:
            warnings.warn("wandb.Image: masks are not recorded by bridge", BridgeWarning,
                          stacklevel=2)
        self.source = _source({"_type": "image-file", "boxes": boxes, "grouping": grouping,
                               "classes": classes if isinstance(classes, (list, dict)) else None,
                               "file_type": file_type})


def _pil_of(data: Any, mode: str | None, normalize: bool) -> Any:
    """An array as a PIL image in ``mode`` (W&B's ``mode``), unscaled when not ``normalize``."""
    if not (hasattr(data, "__array__") or isinstance(data, list)):
        return data.convert(mode) if mode and hasattr(data, "convert") else data
    import numpy as np
    from PIL import Image as PILImage

    from bridge.media.encode import hwc, to_uint8

    arr = data.detach().cpu().numpy() if hasattr(data, "detach") else np.asarray(data)
    arr = hwc(arr)
    arr = to_uint8(arr) if normalize else np.clip(arr, 0, 255).astype(np.uint8)
    img = PILImage.fromarray(arr)
    return img.convert(mode) if mode else img


class Histogram(_media.Histogram):
    """``wandb.Histogram(sequence=None, np_histogram=None, num_bins=64)``; ``histogram``
    (counts) and ``bins`` (edges) are computed when read."""

    def __init__(self, sequence: Sequence[Any] | None = None, np_histogram: Any = None,
                 num_bins: int = 64) -> None:
        if np_histogram is not None:
            if len(np_histogram) != 2:
                raise ValueError("Expected np_histogram to be a tuple of (values, bin_edges)")
            counts, edges = np_histogram
            super().__init__(edges=edges, counts=counts)
        elif sequence is not None:
            super().__init__(sequence, bins=num_bins)
        else:
            raise ValueError("wandb.Histogram needs a sequence or np_histogram")

    @property
    def histogram(self) -> list[float]:
        return self.data()["counts"]

    @property
    def bins(self) -> list[float]:  # type: ignore[override]
        return self.data()["edges"]

    @bins.setter
    def bins(self, value: int) -> None:  # the number of bins, set by bridge's constructor
        self._num_bins = value

    def data(self) -> dict[str, Any]:
        if self._values is not None:
            cached = getattr(self, "_computed", None)
            if cached is None:
                self._computed = cached = _compute(self._values, self._num_bins)
            return cached
        return {"edges": self._edges, "counts": self._counts}


def _compute(values: Any, bins: int) -> dict[str, Any]:
    import numpy as np

    v = values.astype(np.float64)
    v = v[np.isfinite(v)]
    counts, edges = np.histogram(v, bins=bins)
    return {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}


class Table(_media.Table):
    """``wandb.Table(columns=None, data=None, rows=None, dataframe=None, ...)``; cells may
    be media (``wandb.Image``...)."""

    def __init__(self, columns: Sequence[str] | None = None, data: Any = None,
                 rows: Any = None, dataframe: Any = None, dtype: Any = None,
                 optional: Any = True, allow_mixed_types: bool = False,
                 log_mode: str | None = "IMMUTABLE") -> None:
        if columns is None and data is None and rows is None and dataframe is None:
            columns = _DEFAULT_TABLE_COLUMNS
        if data is not None and hasattr(data, "columns") and hasattr(data, "itertuples"):
            dataframe, data = data, None  # W&B takes a DataFrame as ``data`` too
        if data is not None:
            data = [[_vendor_cell(v) for v in row] for row in data]
        if rows is not None:
            rows = [[_vendor_cell(v) for v in row] for row in rows]
        super().__init__(columns=columns, data=data, dataframe=dataframe, rows=rows)
        self.log_mode = log_mode

    def add_data(self, *values: Any) -> None:
        """Append a row (cells may be this module's or the wandb SDK's media)."""
        super().add_data(*[_vendor_cell(v) for v in values])

    @property
    def data(self) -> list[list[Any]]:  # type: ignore[override]
        """The rows (W&B's name for them)."""
        return self.rows

    def add_column(self, name: str, data: Sequence[Any], optional: bool = False) -> None:
        """Append a column (one value per existing row)."""
        if len(data) != len(self.rows):
            raise ValueError(f"column {name!r} needs {len(self.rows)} values, got {len(data)}")
        self.columns.append(str(name))
        for row, value in zip(self.rows, data):
            row.append(_cell(_vendor_cell(value)))

    def get_column(self, name: str, convert_to: str | None = None) -> list[Any]:
        n = self.columns.index(name)
        return [row[n] for row in self.rows]


def _vendor_cell(value: Any) -> Any:
    """A cell holding a real ``wandb`` media object, as bridge media."""
    if type(value).__module__.startswith("wandb"):
        from bridge.adapters.wandb.media_in import from_wandb

        converted = from_wandb(value)
        if converted is not None:
            return converted
    return value


class Audio(_media.Audio):
    """``wandb.Audio(data_or_path, sample_rate=None, caption=None)``."""

    def __init__(self, data_or_path: Any, sample_rate: int | None = None,
                 caption: str | None = None) -> None:
        super().__init__(data_or_path, sample_rate=sample_rate, caption=caption)


class Video(_media.Video):
    """``wandb.Video(data_or_path, caption=None, fps=None, format=None)``; frames are
    (T, C, H, W) as W&B takes them, at ``fps`` (4 by default, as W&B)."""

    def __init__(self, data_or_path: Any, caption: str | None = None, fps: int | None = None,
                 format: str | None = None) -> None:
        if isinstance(data_or_path, io.IOBase):
            data_or_path = data_or_path.read()
        super().__init__(data_or_path, fps=fps or 4, caption=caption, format=format)


class Html(_media.Html):
    """``wandb.Html(data, inject=True, data_is_not_path=False)``: a path to an ``.html``
    file, a string of HTML or a file object."""

    def __init__(self, data: Any, inject: bool = True, data_is_not_path: bool = False) -> None:
        if hasattr(data, "read"):
            if hasattr(data, "seek"):
                data.seek(0)
            data = data.read()
        if isinstance(data, os.PathLike):
            data = os.fspath(data)
        if isinstance(data, str) and (data_is_not_path or not data.endswith(".html")):
            data = data.encode("utf-8")
        super().__init__(data)


class Object3D(_media.Object3D):
    """``wandb.Object3D(data_or_path, caption=None, **kwargs)``: a point array, a path
    (``.obj``, ``.glb``, ``.gltf``, ``.stl``, ``.pts.json``), a file object with
    ``file_type=``, or W&B's ``lidar/beta`` scene dict."""

    def __init__(self, data_or_path: Any, caption: str | None = None, **kwargs: Any) -> None:
        name = None
        if isinstance(data_or_path, dict):
            data_or_path, name = json.dumps(data_or_path).encode("utf-8"), "scene.pts.json"
        elif hasattr(data_or_path, "read"):
            file_type = kwargs.get("file_type")
            if not file_type:
                raise ValueError("wandb.Object3D from a file object needs file_type=")
            raw = data_or_path.read()
            data_or_path = raw.encode("utf-8") if isinstance(raw, str) else raw
            name = f"object.{file_type}"
        super().__init__(data_or_path)
        if name is not None:
            from bridge.spool.media import mime_for

            self._mime = "application/json" if name.endswith(".pts.json") else mime_for(name)
            self._name = name
        self.caption = None if caption is None else str(caption)


# -- watch --------------------------------------------------------------------------------

_HANDLES: dict[int, list[tuple[Any, Any]]] = {}  # id(model) -> (run, torch hook handle)


def watch(run: Any, models: Any, criterion: Any = None, log: str | None = "gradients",
          log_freq: int = 1000, idx: int | None = None, log_graph: bool = False) -> None:
    """Record parameter and/or gradient histograms of torch ``models`` (see the module
    docstring). ``run`` is the compat run whose current step the histograms take."""
    if log not in ("gradients", "parameters", "all", None):
        raise ValueError(f"log must be 'gradients', 'parameters', 'all' or None, not {log!r}")
    if not isinstance(log_freq, int) or log_freq < 1:
        raise ValueError(f"log_freq must be a positive integer, got {log_freq!r}")
    model_list = list(models) if isinstance(models, (list, tuple)) else [models]
    for n, model in enumerate(model_list):
        if not hasattr(model, "named_parameters") or not hasattr(model, "register_forward_hook"):
            raise ValueError(f"wandb.watch expects a torch.nn.Module, got {type(model).__name__}")
        prefix = f"{idx if idx is not None else n}/" if len(model_list) > 1 else ""
        handles = _HANDLES.setdefault(id(model), [])
        if log in ("parameters", "all"):
            handles.append((run, _watch_parameters(run, model, prefix, log_freq)))
        if log in ("gradients", "all"):
            handles.extend((run, h) for h in _watch_gradients(run, model, prefix, log_freq))


def unwatch(models: Any = None) -> None:
    """Remove the hooks :func:`watch` added (to ``models``, or to every model)."""
    if models is None:
        keys = list(_HANDLES)
    else:
        keys = [id(m) for m in (models if isinstance(models, (list, tuple)) else [models])]
    for key in keys:
        for _, handle in _HANDLES.pop(key, []):
            handle.remove()


def unwatch_run(run: Any) -> None:
    """Remove the hooks that record into ``run`` (called when it finishes)."""
    for key in list(_HANDLES):
        kept = []
        for owner, handle in _HANDLES[key]:
            if owner is run:
                handle.remove()
            else:
                kept.append((owner, handle))
        if kept:
            _HANDLES[key] = kept
        else:
            del _HANDLES[key]


class _Every:
    """True on every ``n``-th call (W&B counts up to ``log_freq`` before the first log)."""

    def __init__(self, n: int) -> None:
        self.n, self.count = n, 0

    def __call__(self) -> bool:
        self.count += 1
        if self.count < self.n:
            return False
        self.count = 0
        return True


def _watch_parameters(run: Any, model: Any, prefix: str, log_freq: int) -> Any:
    due = _Every(log_freq)

    def hook(module: Any, inputs: Any, output: Any) -> None:
        if not due() or not module.training:
            return
        for name, p in module.named_parameters():
            _record(run, f"parameters/{prefix}{name}", p)

    return model.register_forward_hook(hook)


def _watch_gradients(run: Any, model: Any, prefix: str, log_freq: int) -> Iterable[Any]:
    handles = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        due = _Every(log_freq)
        key = f"gradients/{prefix}{name}"

        def hook(grad: Any, due: _Every = due, key: str = key) -> None:
            if due():
                _record(run, key, grad)

        handles.append(p.register_hook(hook))
    return handles


def _record(run: Any, key: str, tensor: Any) -> None:
    """A 64-bin histogram of ``tensor``'s finite values at the run's current step."""
    import torch

    with torch.no_grad():
        flat = tensor.detach().reshape(-1).float()
        flat = flat[torch.isfinite(flat)]
        if flat.numel() == 0:
            return
        lo, hi = flat.min().item(), flat.max().item()
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        counts = torch.histc(flat, bins=_WATCH_BINS, min=lo, max=hi).cpu().tolist()
    step = (hi - lo) / _WATCH_BINS
    edges = [lo + i * step for i in range(_WATCH_BINS)] + [hi]
    log_media = getattr(run.bridge_run, "log_media", None)
    if log_media is not None:
        log_media(key, _media.Histogram(edges=edges, counts=counts), step=run.step)
