"""Embeddings of TensorBoard's projector as media events.

torch's ``add_embedding`` writes no summary: it writes ``projector_config.pbtxt`` in the run
directory, naming for each embedding (``<tag>:<step>``) a ``tensors.tsv`` (a row of floats
per point), an optional ``metadata.tsv`` (one label per line, or a header line and columns)
and an optional ``sprite.png`` (the points' images tiled row by row, each
``single_image_dim`` = width, height). Each embedding becomes a ``table`` event
``embeddings/<tag>`` at its step — metadata columns, ``dim_0``..., an ``image`` column cut
from the sprite — the same table ``bridge.SummaryWriter.add_embedding`` records. The sprite
tiles are re-encoded as PNG (the sprite's own bytes are a composite); an embedding too large
for an inline table keeps its files byte for byte as a ``file`` event. The files carry no
wall time: the event's timestamp is ``tensors.tsv``'s modification time.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from bridge.adapters.importing import ImportError_, ImportEvent, MediaFile, media_event, \
    resolve_source
from bridge.adapters.tensorboard.names import (
    EMBEDDING_TABLE_VALUES,
    EMBEDDINGS_PREFIX,
    PLUGIN_PROJECTOR,
    PROJECTOR_CONFIG,
    VENDOR,
)

__all__ = ["embeddings"]


def embeddings(run_dir: Path, roots: list[Path], skipped: Counter[str]) -> Iterator[ImportEvent]:
    """Every embedding the run directory's projector config names; one that cannot be read
    is counted in ``skipped`` as ``projector(unreadable)``."""
    config_path = run_dir / PROJECTOR_CONFIG
    if not config_path.is_file():
        return
    try:
        from google.protobuf import text_format
        from tensorboard.plugins.projector import projector_config_pb2

        config = text_format.Parse(
            resolve_source(config_path, roots).read_text("utf-8"),
            projector_config_pb2.ProjectorConfig())
    except Exception:  # a config TensorBoard could not read either
        skipped[f"{PLUGIN_PROJECTOR}(unreadable)"] += 1
        return
    for info in config.embeddings:
        try:
            yield _embedding(run_dir, roots, info)
        except (ImportError_, OSError, ValueError, IndexError):
            skipped[f"{PLUGIN_PROJECTOR}(unreadable)"] += 1


def _file(run_dir: Path, roots: list[Path], rel: str) -> Path:
    return resolve_source(run_dir / rel, roots)  # inside the log dir, whatever the config says


def _embedding(run_dir: Path, roots: list[Path], info: Any) -> ImportEvent:
    tag, _, step_text = info.tensor_name.rpartition(":")
    if not tag or not step_text.isdigit():
        tag, step_text = info.tensor_name or "default", ""
    step = int(step_text) if step_text else None
    tensors = _file(run_dir, roots, info.tensor_path)
    ts = int(round(tensors.stat().st_mtime * 1000))
    key = EMBEDDINGS_PREFIX + tag
    meta = _file(run_dir, roots, info.metadata_path) if info.metadata_path else None
    sprite = _file(run_dir, roots, info.sprite.image_path) if info.sprite.image_path else None
    descriptor: dict[str, Any] = {"plugin": PLUGIN_PROJECTOR, "tensor_name": info.tensor_name,
                                  "tensor_path": info.tensor_path}
    if meta is not None:
        descriptor["metadata_path"] = info.metadata_path
    if sprite is not None:
        descriptor["sprite"] = info.sprite.image_path
        descriptor["single_image_dim"] = list(info.sprite.single_image_dim)
    source = {"vendor": VENDOR, "descriptor": descriptor}

    text = tensors.read_text("utf-8")
    vectors = [[float(x) for x in line.split("\t")] for line in text.splitlines() if line]
    if sum(len(v) for v in vectors) > EMBEDDING_TABLE_VALUES:
        files = [MediaFile(p, mime, p.name) for p, mime in (
            (tensors, "text/tab-separated-values"), (meta, "text/tab-separated-values"),
            (sprite, "image/png")) if p is not None]
        return media_event(key, step, ts, "file", files, source=source)

    columns: list[str] = []
    labels: list[list[str]] = [[] for _ in vectors]
    if meta is not None:
        lines = meta.read_text("utf-8").splitlines()
        if lines and "\t" in lines[0]:  # a header line names the columns
            columns = lines[0].split("\t")
            labels = [line.split("\t") for line in lines[1:]]
        else:
            columns = ["label"]
            labels = [[line] for line in lines]
        if len(labels) != len(vectors):
            raise ValueError(f"{len(labels)} metadata rows for {len(vectors)} points")
    width = max((len(v) for v in vectors), default=0)
    columns += [f"dim_{i}" for i in range(width)]
    rows: list[list[Any]] = [labels[i] + vectors[i] for i in range(len(vectors))]
    cells: dict[str, MediaFile] = {}
    if sprite is not None:
        columns.append("image")
        for n, (ref, tile) in enumerate(_tiles(sprite, info.sprite.single_image_dim,
                                               len(vectors), tag, step)):
            cells[ref] = tile
            rows[n].append({"media": {"type": "image", "data": None, "items": [
                {"file": ref, "mime": tile.mime, "name": tile.name, **tile.facts}]}})
    return media_event(key, step, ts, "table", data={"columns": columns, "rows": rows},
                       source=source, cells=cells)


def _tiles(sprite: Path, dim: Any, count: int, tag: str,
           step: int | None) -> Iterator[tuple[str, MediaFile]]:
    """The first ``count`` tiles of a sprite, row by row, each as PNG bytes."""
    from PIL import Image

    w, h = int(dim[0]), int(dim[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"sprite tile size {list(dim)}")
    with Image.open(sprite) as img:
        img.load()
        per_row = img.width // w
        if per_row == 0 or -(-count // per_row) * h > img.height:
            raise ValueError(f"a {img.width}x{img.height} sprite holds fewer than {count} "
                             f"tiles of {w}x{h}")
        stem = tag.replace("/", "_")
        for n in range(count):
            x, y = (n % per_row) * w, (n // per_row) * h
            buf = io.BytesIO()
            img.crop((x, y, x + w, y + h)).save(buf, format="PNG")
            name = f"{stem}_{step if step is not None else 0}_{n}.png"
            yield f"tile{n}", MediaFile(buf.getvalue(), "image/png", name,
                                        {"width": w, "height": h})
