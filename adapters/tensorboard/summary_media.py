"""Bridge media values built from ``SummaryWriter`` arguments that have no class of their
own in :mod:`bridge.media`: PR curves (a ``curve`` with TensorBoard's counts kept), tensors,
meshes (point clouds or OBJ files) and embeddings (a table). ``bridge.SummaryWriter`` uses
them; the descriptors match what the importer writes for the same TensorBoard summaries.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

from bridge.media import Media

__all__ = ["CurveMedia", "TensorMedia", "embedding_table", "meshes", "pr_curve_media"]


class CurveMedia(Media):
    """A curve (x, y) with the source's own descriptor: a PR curve's counts."""

    type = "curve"

    def __init__(self, x: list, y: list, name: str, source: dict[str, Any]) -> None:
        self.x, self.y, self.name, self.source = x, y, name, source

    def data(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "name": self.name}


class TensorMedia(Media):
    """A tensor kept whole: dtype, shape and its values in row-major order."""

    type = "tensor"

    def __init__(self, array: Any) -> None:
        self.array = array

    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def data(self) -> dict[str, Any]:
        a = self.array
        values = a.reshape(-1).tolist()
        if a.dtype.kind == "f":
            values = [v if v == v and abs(v) != float("inf") else str(v) for v in values]
        return {"dtype": str(a.dtype), "shape": list(a.shape), "values": values}


def _pr_source(table: Any) -> dict[str, Any]:
    """The PR table's counts as a TensorBoard descriptor (precision and recall are the curve)."""
    from bridge.adapters.tensorboard.names import PLUGIN_PR_CURVES, PR_CURVE_ROWS, VENDOR

    rows = {name: [float(v) for v in table[i]] for i, name in enumerate(PR_CURVE_ROWS)
            if name not in ("precision", "recall")}
    return {"vendor": VENDOR, "descriptor": {"plugin": PLUGIN_PR_CURVES,
                                             "num_thresholds": int(table.shape[1]), **rows}}


def pr_curve_media(table: Any) -> CurveMedia:
    """A ``[6, t]`` PR table as a curve: recall on x, precision on y, the counts kept."""
    return CurveMedia([float(v) for v in table[5]], [float(v) for v in table[4]],
                      "precision/recall", _pr_source(table))


def meshes(tag: str, vertices: Any, colors: Any, faces: Any, config: Any) -> Any:
    """One Object3D per mesh of a ``(B, N, 3)`` batch (a list when B > 1)."""
    import numpy as np

    from bridge.adapters.tensorboard import compat
    from bridge.adapters.tensorboard.names import PLUGIN_MESH, VENDOR
    from bridge.media import Object3D

    v = compat.to_array(vertices).astype(np.float64)
    v = v[None] if v.ndim == 2 else v
    if v.ndim != 3 or v.shape[-1] != 3:
        raise ValueError(f"vertices must be (B, N, 3), got shape {tuple(v.shape)}")
    c = None if colors is None else compat.to_array(colors).reshape(v.shape)
    f = None if faces is None else compat.to_array(faces).reshape(v.shape[0], -1, 3)
    objects = []
    for b in range(v.shape[0]):
        if f is None:
            points = v[b] if c is None else np.concatenate([v[b], c[b].astype(float)], axis=1)
            obj = Object3D(points)
        else:
            with tempfile.TemporaryDirectory(prefix="bridge-mesh-") as tmp:
                path = Path(tmp) / f"{Path(tag).name or 'mesh'}_{b}.obj"
                path.write_bytes(compat.mesh_obj(v[b], f[b], None if c is None else c[b]))
                obj = Object3D(path)  # read now: the file goes with the directory
        if config is not None:
            obj.source = {"vendor": VENDOR, "descriptor": {"plugin": PLUGIN_MESH,
                                                           "config": config}}
        objects.append(obj)
    return objects[0] if len(objects) == 1 else objects


def embedding_table(mat: Any, metadata: Any, label_img: Any,
                    header: Sequence[str] | None) -> Any:
    """A table: metadata columns, ``dim_0``... and an ``image`` column for label images."""
    from bridge.adapters.tensorboard import compat
    from bridge.media import Image, Table

    m = compat.to_array(mat)
    if m.ndim != 2:
        raise ValueError(f"mat must be (N, D), got shape {tuple(m.shape)}")
    n, d = m.shape
    columns: list[str] = []
    meta_rows: list[list[Any]] = [[] for _ in range(n)]
    if metadata is not None:
        meta = list(metadata)
        if len(meta) != n:
            raise ValueError(f"{len(meta)} metadata rows for {n} vectors")
        if header is not None:
            columns = [str(h) for h in header]
            meta_rows = [[str(x) for x in row] for row in meta]
        else:
            columns = ["label"]
            meta_rows = [[str(x)] for x in meta]  # TensorBoard keeps metadata as text
    columns += [f"dim_{i}" for i in range(d)]
    rows = [meta_rows[i] + [float(x) for x in m[i]] for i in range(n)]
    if label_img is not None:
        images = compat.to_nhwc(compat.to_array(label_img), "NCHW")
        if len(images) != n:
            raise ValueError(f"{len(images)} label images for {n} vectors")
        columns.append("image")
        rows = [row + [Image(compat.image_uint8(images[i]))] for i, row in enumerate(rows)]
    return Table(columns=columns, data=rows)
