"""TensorBoard media written by ``torch.utils.tensorboard.SummaryWriter`` import whole.

``add_image``, ``add_images``, ``add_histogram``, ``add_audio``, ``add_text`` and
``add_pr_curve`` write a log directory; TensorBoard's ``EventAccumulator`` reads it back,
and the imported media events must hold the same encoded bytes, histogram counts, text and
curve values at the same steps and wall times. tensorboardX, the writer torch's was taken
from, writes the same records and runs the same test where it is installed; each writer is
skipped, with the reason, where its package is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from bridge.adapters.tensorboard.importer import TensorboardImporter  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.spool.blobs import blob_path  # noqa: E402
from bridge.spool.reader import find_run, iter_events  # noqa: E402

W0 = 1_700_000_000.0
WRITERS = ["torch.utils.tensorboard"]


def _ms(t: float) -> int:
    return int(round(t * 1000))


def _write(module: str, run_dir: Path) -> dict[str, Any]:
    tb = pytest.importorskip(module, reason=f"{module} is not installed")
    rng = np.random.default_rng(11)
    w = tb.SummaryWriter(str(run_dir))
    made: dict[str, Any] = {"hist": {}}
    for s in range(3):
        w.add_image("input", rng.integers(0, 256, (3, 16, 20), dtype=np.uint8), s,
                    walltime=W0 + s)  # CHW, torch's default dataformats
        w.add_image("hwc", rng.random((9, 7, 3)), s, walltime=W0 + s, dataformats="HWC")
        w.add_images("batch", rng.random((4, 3, 8, 8)), s, walltime=W0 + s + 0.5)  # NCHW
        values = rng.normal(size=1000) * (s + 1)
        made["hist"][s] = values
        w.add_histogram("weights", values, s, walltime=W0 + s + 0.25, bins="auto")
        w.add_histogram("default_bins", values, s, walltime=W0 + s + 0.25)  # "tensorflow"
        w.add_audio("tone", np.sin(np.arange(800) / (s + 2.0)) * 0.5, s, sample_rate=8000,
                    walltime=W0 + s + 0.75)
        w.add_text("notes", f"step **{s}**", s, walltime=W0 + s + 0.125)
        labels = rng.integers(0, 2, 100)
        w.add_pr_curve("pr", labels, np.clip(labels * 0.4 + rng.random(100) * 0.6, 0, 1), s,
                       walltime=W0 + s + 0.375, num_thresholds=31)
        w.add_scalar("loss", 1.0 / (s + 1), s, walltime=W0 + s)
    w.close()
    return made


def _accumulator(run_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={
        "images": 0, "audio": 0, "histograms": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize("module", WRITERS)
def test_summary_writer_media_import(module: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "logs" / "train"
    made = _write(module, run_dir)
    spool = tmp_path / "spool"
    done = import_runs(TensorboardImporter(tmp_path / "logs"), spool)
    assert [r.name for r in done] == ["train"]
    rec = find_run(spool, done[0].run_id)
    media: dict[str, dict[int, Any]] = {}
    tags: dict[str, str] = {}
    for ev in iter_events(rec.files, done[0].run_id):
        if ev.kind == "media":
            media.setdefault(ev.key, {})[ev.step] = ev
        elif ev.kind == "tag":
            tags[ev.key] = ev.payload
    acc = _accumulator(run_dir)

    def blob(item: dict) -> bytes:
        return blob_path(spool, item["sha256"]).read_bytes()

    for tag, shape in (("input", (20, 16)), ("hwc", (7, 9)), ("batch", None)):
        assert sorted(media[tag]) == [0, 1, 2]
        for seen in acc.Images(tag):  # the bytes TensorBoard shows, at the same step
            ev = media[tag][seen.step]
            item = ev.payload["items"][0]
            assert ev.payload["type"] == "image" and ev.ts_ms == _ms(seen.wall_time)
            assert blob(item) == seen.encoded_image_string
            assert (item["width"], item["height"]) == (seen.width, seen.height)
            if shape:
                assert (item["width"], item["height"]) == shape

    for tag in ("weights", "default_bins"):
        for seen in acc.Histograms(tag):
            ev = media[tag][seen.step]
            data = ev.payload["data"]
            assert ev.payload["type"] == "histogram" and ev.ts_ms == _ms(seen.wall_time)
            assert sum(data["counts"]) == 1000 == seen.histogram_value.num
            assert len(data["edges"]) == len(data["counts"]) + 1
            assert data["edges"] == sorted(data["edges"])
            values = made["hist"][seen.step]
            assert data["edges"][0] <= values.min() and data["edges"][-1] >= values.max()
    for s, values in made["hist"].items():
        counts, edges = np.histogram(values, bins="auto")
        assert media["weights"][s].payload["data"] == {
            "edges": edges.tolist(), "counts": counts.astype(float).tolist()}

    for seen in acc.Audio("tone"):
        item = media["tone"][seen.step].payload["items"][0]
        assert blob(item) == seen.encoded_audio_string
        assert (item["mime"], item["sample_rate"], item["duration"]) == ("audio/wav", 8000, 0.1)

    assert {s: (ev.payload["type"], ev.payload["data"]["text"], ev.ts_ms)
            for s, ev in media["notes"].items()} == {
        s: ("text", f"step **{s}**", _ms(W0 + s + 0.125)) for s in range(3)}

    from tensorboard.util import tensor_util

    for seen in acc.Tensors("pr"):
        table = tensor_util.make_ndarray(seen.tensor_proto)
        ev = media["pr"][seen.step]
        assert ev.payload["type"] == "curve" and ev.ts_ms == _ms(seen.wall_time)
        assert ev.payload["data"]["x"] == table[5].astype(float).tolist()
        assert ev.payload["data"]["y"] == table[4].astype(float).tolist()
        assert ev.payload["source"]["descriptor"]["num_thresholds"] == 31
    assert "tensorboard.skipped" not in tags  # nothing written here was left out
