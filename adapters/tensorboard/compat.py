"""The input conventions of torch's ``SummaryWriter``, for ``bridge.SummaryWriter``.

A script written for TensorBoard passes arrays the way torch takes them: images as ``CHW``
(or any ``dataformats`` such as ``HWC``, ``HW``, ``NCHW``), floats in [0, 1] scaled by 255
and uint8 kept, videos as ``(N, T, C, H, W)``, histogram ``bins`` as a number, a sequence of
edges, a numpy rule name or ``"tensorflow"`` (TensorBoard's default buckets), PR curves from
labels and predictions. These helpers turn such inputs into what bridge records, so a value
logged through bridge matches what the same call shows in TensorBoard (and what the
importer reads from an event file torch wrote). numpy is imported lazily.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["draw_boxes", "histogram", "image_uint8", "mesh_obj", "pr_curve",
           "tensorflow_bins", "to_array", "to_hwc", "to_nhwc", "videos"]


def to_array(x: Any) -> Any:
    """A private numpy copy of a numpy array, torch tensor (detached, on the CPU) or list."""
    import numpy as np

    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.array(x, copy=True)


def _permute(a: Any, fmt: str, target: str) -> Any:
    fmt = fmt.upper()
    if len(set(fmt)) != len(fmt) or set(fmt) != set(target) or a.ndim != len(fmt):
        raise ValueError(f"an array of shape {tuple(a.shape)} does not match "
                         f"dataformats {fmt!r}")
    return a.transpose([fmt.index(c) for c in target])


def to_hwc(array: Any, dataformats: str = "CHW") -> Any:
    """One image as HWC (HW for ``HW``/``WH``), from any order of ``dataformats``."""
    fmt = dataformats.upper()
    if len(fmt) == 2:
        return _permute(array, fmt, "HW")
    return _permute(array, fmt, "HWC")


def to_nhwc(array: Any, dataformats: str = "NCHW") -> Any:
    """A batch of images as NHWC; ``NHW`` batches gain a channel."""
    fmt = dataformats.upper()
    if fmt in ("NHW", "NWH"):
        return _permute(array, fmt, "NHW")[..., None]
    return _permute(array, fmt, "NHWC")


def image_uint8(array: Any) -> Any:
    """Pixels as TensorBoard's writer stores them: uint8 kept, anything else in [0, 1]
    scaled by 255, clipped and truncated."""
    import numpy as np

    a = np.asarray(array)
    if a.dtype == np.uint8:
        return a
    return np.clip(a.astype(np.float32) * 255.0, 0, 255).astype(np.uint8)


def videos(array: Any) -> list[Any]:
    """Each video of a ``(N, T, C, H, W)`` batch (or one ``(T, C, H, W)``) as
    ``(T, H, W, C)`` uint8 frames."""
    a = to_array(array)
    if a.ndim == 4:
        a = a[None]
    if a.ndim != 5:
        raise ValueError(f"video must be (N, T, C, H, W), got shape {tuple(a.shape)}")
    a = image_uint8(a)
    return [v.transpose(0, 2, 3, 1) for v in a]


def tensorflow_bins() -> list[float]:
    """TensorBoard's default histogram edges: ±1e-12 growing by 10% up to 1e20, and 0."""
    v, positive = 1e-12, []
    while v < 1e20:
        positive.append(v)
        v *= 1.1
    return [-x for x in reversed(positive)] + [0.0] + positive


def histogram(values: Any, bins: Any = "tensorflow",
              max_bins: int | None = None) -> tuple[list[float], list[float]]:
    """Edges (n + 1) and counts (n) as TensorBoard keeps a histogram of ``values``: numpy's
    bins (``"tensorflow"`` for TensorBoard's default edges), about ``max_bins`` of them
    (neighbours merged in groups of ``bins // max_bins``, as torch's writer does), trimmed
    to the buckets from the first to the last non-empty one."""
    import numpy as np

    v = to_array(values).astype(np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("histogram of no values")
    if not np.all(np.isfinite(v)):
        raise ValueError("histogram values must be finite (TensorBoard refuses NaN and inf)")
    if isinstance(bins, str) and bins == "tensorflow":
        bins = tensorflow_bins()
    counts, edges = np.histogram(v, bins=bins)
    if max_bins is not None and len(counts) > max_bins:
        group = len(counts) // max_bins  # as torch's writer groups them (may leave a few more)
        pad = (-len(counts)) % group
        counts = np.pad(counts, (0, pad)).reshape(-1, group).sum(axis=1)
        edges = np.append(edges[:-1:group], edges[-1])
    filled = np.flatnonzero(counts)
    if filled.size == 0:  # every value outside the given edges
        return [float(x) for x in edges], [float(c) for c in counts]
    first, last = int(filled[0]), int(filled[-1])
    return ([float(x) for x in edges[first:last + 2]],
            [float(c) for c in counts[first:last + 1]])


def pr_curve(labels: Any, predictions: Any, num_thresholds: int = 127,
             weights: Any = None) -> Any:
    """TensorBoard's PR curve of boolean ``labels`` and ``predictions`` in [0, 1]: a
    ``[6, num_thresholds]`` array of true/false positives, true/false negatives, precision
    and recall at thresholds ``i / (num_thresholds - 1)``."""
    import numpy as np

    t = min(int(num_thresholds), 127)  # TensorBoard's writers cap it here
    if t < 2:
        raise ValueError("num_thresholds must be at least 2")
    pos = to_array(labels).astype(np.float64).reshape(-1)
    pred = to_array(predictions).astype(np.float64).reshape(-1)
    if pos.shape != pred.shape:
        raise ValueError(f"{pos.size} labels for {pred.size} predictions")
    w = 1.0 if weights is None else to_array(weights).astype(np.float64).reshape(-1)
    w = np.broadcast_to(w, pos.shape)
    index = np.floor(pred * (t - 1))
    inside = (index >= 0) & (index <= t - 1)  # a prediction outside [0, 1] counts nowhere
    index = index[inside].astype(np.int64)
    tp_b = np.bincount(index, weights=(pos * w)[inside], minlength=t)
    fp_b = np.bincount(index, weights=((1.0 - pos) * w)[inside], minlength=t)
    tp, fp = np.cumsum(tp_b[::-1])[::-1], np.cumsum(fp_b[::-1])[::-1]
    tn, fn = fp[0] - fp, tp[0] - tp
    precision = tp / np.maximum(1e-7, tp + fp)
    recall = tp / np.maximum(1e-7, tp + fn)
    return np.stack((tp, fp, tn, fn, precision, recall))


def draw_boxes(hwc: Any, boxes: Any, labels: Sequence[str] | None = None) -> Any:
    """``hwc`` (uint8) with each ``(xmin, ymin, xmax, ymax)`` box drawn in red and its label,
    as TensorBoard's ``add_image_with_boxes`` shows it."""
    import numpy as np
    from PIL import Image, ImageDraw

    img = Image.fromarray(hwc).convert("RGB")
    draw = ImageDraw.Draw(img)
    for n, box in enumerate(to_array(boxes).reshape(-1, 4).tolist()):
        x0, y0, x1, y1 = box
        draw.rectangle([x0, y0, x1, y1], outline="red", width=2)
        if labels is not None and n < len(labels) and labels[n]:
            draw.text((x0 + 2, y0 + 2), str(labels[n]), fill="red")
    return np.asarray(img)


def mesh_obj(vertices: Any, faces: Any = None, colors: Any = None) -> bytes:
    """A Wavefront OBJ of one mesh: ``v x y z [r g b]`` lines (colors 0-255 become 0-1)
    and ``f`` lines with 1-based vertex indices."""
    import numpy as np

    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    lines = []
    rgb = None if colors is None else np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if rgb is not None and rgb.shape[0] != v.shape[0]:
        raise ValueError(f"{rgb.shape[0]} colors for {v.shape[0]} vertices")
    if rgb is not None and rgb.max(initial=0) > 1:
        rgb = rgb / 255.0
    for i, (x, y, z) in enumerate(v.tolist()):
        extra = "" if rgb is None else " " + " ".join(f"{c:.6g}" for c in rgb[i])
        lines.append(f"v {x:.9g} {y:.9g} {z:.9g}{extra}")
    if faces is not None:
        for face in np.asarray(faces, dtype=np.int64).reshape(-1, 3).tolist():
            lines.append("f " + " ".join(str(i + 1) for i in face))
    return ("\n".join(lines) + "\n").encode()
