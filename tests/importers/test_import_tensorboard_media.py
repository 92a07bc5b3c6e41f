"""TensorBoard media import: images, video, histograms, audio, text, PR curves, tensors.

The corpus is written by TensorBoard's own ``EventFileWriter`` (``tb_events.MediaWriter``)
in the records torch's ``SummaryWriter`` writes (legacy ``image``/``histo``/``audio``
values, ``text`` and ``pr_curves`` plugin tensors) and in the tensor forms of
``tf.summary`` v2 (``images``, ``histograms``, ``audio`` plugin tensors, metadata on a tag's
first value only). What TensorBoard itself reads from the file (``EventAccumulator``) is
what the imported media events must hold: the same encoded bytes, steps and wall times.
Projector embeddings (files beside the event files) import as tables; whatever is left out
is counted on the run and printed by ``bridge import``.
The torch-written variant is tests/integrations/test_tensorboard_media_torch.py.
"""

from __future__ import annotations

import base64
import io
import math
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from bridge.adapters.tensorboard.importer import TensorboardImporter  # noqa: E402
from bridge.adapters.tensorboard.media import histogram_edges  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.spool.blobs import blob_path  # noqa: E402
from bridge.spool.reader import find_run, iter_events  # noqa: E402
from tb_events import MediaWriter, png_bytes, torch_histogram, wav_bytes  # noqa: E402

W0 = 1_700_000_000.0


def _ms(t: float) -> int:
    return int(round(t * 1000))


def _accumulator(run_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={
        "images": 0, "audio": 0, "histograms": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def _import(logdir: Path, spool: Path) -> tuple[dict[str, Any], TensorboardImporter]:
    imp = TensorboardImporter(logdir, project="tb")
    done = import_runs(imp, spool)
    out: dict[str, Any] = {}
    for r in done:
        rec = find_run(spool, r.run_id)
        media: dict[str, list] = {}
        tags: dict[str, str] = {}
        for ev in iter_events(rec.files, r.run_id):
            if ev.kind == "media":
                media.setdefault(ev.key, []).append(ev)
            elif ev.kind == "tag":
                tags[ev.key] = ev.payload
        out[r.name] = {"media": media, "tags": tags}
    return out, imp


def _bytes(spool: Path, item: dict) -> bytes:
    data = blob_path(spool, item["sha256"]).read_bytes()
    assert len(data) == item["size"]
    return data


@pytest.fixture
def torch_records(tmp_path: Path) -> dict[str, Any]:
    """One run with the legacy records of torch's add_image/add_video/add_histogram/
    add_audio and its add_text/add_pr_curve tensors, plus a graph (not importable)."""
    rng = np.random.default_rng(7)
    logdir = tmp_path / "logs"
    w = MediaWriter(str(logdir / "train"))
    made: dict[str, Any] = {"logdir": logdir, "images": {}, "hist": {}, "audio": {}}
    for s in range(3):
        img = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
        made["images"][s] = w.add_image("samples/input", img, s, W0 + s)
        values = rng.normal(size=500) * (s + 1)
        made["hist"][s] = (values, w.add_histogram("weights/fc1", values, s, W0 + s + 0.25))
        samples = np.sin(np.arange(1600) * (s + 1) / 20.0) * 0.5
        made["audio"][s] = w.add_audio("speech", samples, s, W0 + s + 0.5, sample_rate=16000)
        w.add_scalar("loss", 1.0 / (s + 1), s, W0 + s)
    made["gray"] = w.add_image("gray", rng.integers(0, 256, (5, 7), dtype=np.uint8), 9, W0 + 9)
    made["video"] = w.add_video("rollout", rng.integers(0, 256, (4, 8, 6, 3), dtype=np.uint8),
                                5, W0 + 5, fps=5)
    w.add_text("notes", "first *note*", 3, W0 + 3.75)
    w.add_text("notes", "second", 4, W0 + 4.75)
    labels = rng.integers(0, 2, 200)
    predictions = np.clip(labels * 0.3 + rng.random(200) * 0.7, 0, 1)
    made["pr"] = w.add_pr_curve("pr/val", labels, predictions, 6, W0 + 6, num_thresholds=21)
    w.add_mesh_vertices("mesh", rng.random((1, 4, 3)), 7, W0 + 7)
    w.add_graph_def(b"\n\x03\n\x01x", W0 + 8)
    w.close()
    return made


def test_torch_records_become_media(torch_records: dict[str, Any], tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    runs, imp = _import(torch_records["logdir"], spool)
    got = runs["train"]["media"]
    acc = _accumulator(torch_records["logdir"] / "train")

    # images: one event per step, the PNG exactly as the event file holds it
    assert [e.step for e in got["samples/input"]] == [0, 1, 2]
    seen = {e.step: e for e in acc.Images("samples/input")}
    for ev in got["samples/input"]:
        assert ev.ts_ms == _ms(W0 + ev.step)
        p = ev.payload
        assert p["type"] == "image" and len(p["items"]) == 1
        item = p["items"][0]
        assert (item["mime"], item["width"], item["height"]) == ("image/png", 10, 12)
        assert item["name"] == f"samples_input_{ev.step}.png"
        data = _bytes(spool, item)
        assert data == torch_records["images"][ev.step] == seen[ev.step].encoded_image_string
        assert p["source"]["vendor"] == "tensorboard"
        assert p["source"]["descriptor"] == {"plugin": "images", "form": "legacy",
                                             "tag": "samples/input", "colorspace": 3}
    gray = got["gray"][0].payload["items"][0]
    assert _bytes(spool, gray) == torch_records["gray"]
    assert (gray["width"], gray["height"]) == (7, 5)

    # add_video's animated GIF: a video with its frames and rate
    video = got["rollout"][0]
    item = video.payload["items"][0]
    assert (video.payload["type"], video.step, item["mime"]) == ("video", 5, "image/gif")
    assert (item["frames"], item["fps"], item["width"], item["height"]) == (4, 5.0, 6, 8)
    assert _bytes(spool, item) == torch_records["video"]

    # histograms: np.histogram's edges and counts over the data's support, stats kept
    hist_seen = {e.step: e.histogram_value for e in acc.Histograms("weights/fc1")}
    for ev in got["weights/fc1"]:
        values, proto = torch_records["hist"][ev.step]
        counts, edges = np.histogram(values, bins=10)
        filled = np.flatnonzero(counts)
        lo, hi = filled[0], filled[-1]
        assert ev.payload["type"] == "histogram" and ev.payload["items"] == []
        assert ev.payload["data"] == {"edges": edges[lo:hi + 2].tolist(),
                                      "counts": counts[lo:hi + 1].astype(float).tolist()}
        assert sum(ev.payload["data"]["counts"]) == 500
        assert ev.ts_ms == _ms(W0 + ev.step + 0.25)
        d = ev.payload["source"]["descriptor"]
        assert (d["min"], d["max"], d["num"]) == (values.min(), values.max(), 500)
        assert d["sum"] == pytest.approx(values.sum())
        assert d["sum_squares"] == pytest.approx(float(values.dot(values)))
        assert hist_seen[ev.step].num == 500 and proto.num == 500

    # audio: the WAV bytes, its sample rate and duration
    audio_seen = {e.step: e for e in acc.Audio("speech")}
    for ev in got["speech"]:
        item = ev.payload["items"][0]
        assert ev.payload["type"] == "audio" and ev.ts_ms == _ms(W0 + ev.step + 0.5)
        assert (item["mime"], item["sample_rate"], item["duration"]) == ("audio/wav", 16000, 0.1)
        assert _bytes(spool, item) == torch_records["audio"][ev.step]
        assert _bytes(spool, item) == audio_seen[ev.step].encoded_audio_string
        assert ev.payload["source"]["descriptor"]["num_channels"] == 1

    # text: a text series under the user's tag (torch appends /text_summary)
    notes = [(e.step, e.ts_ms, e.payload["data"]) for e in got["notes"]]
    assert notes == [(3, _ms(W0 + 3.75), {"text": "first *note*"}),
                     (4, _ms(W0 + 4.75), {"text": "second"})]
    assert all(e.payload["type"] == "text" for e in got["notes"])
    assert got["notes"][0].payload["source"]["descriptor"]["tag"] == "notes/text_summary"

    # PR curve: recall -> precision points, the counts behind them in the descriptor
    pr = got["pr/val"][0]
    tensor = acc.Tensors("pr/val")[0].tensor_proto
    from tensorboard.util import tensor_util

    stored = tensor_util.make_ndarray(tensor)
    assert np.array_equal(stored, torch_records["pr"])
    assert pr.payload["type"] == "curve" and pr.step == 6
    assert pr.payload["data"]["x"] == stored[5].astype(float).tolist()
    assert pr.payload["data"]["y"] == stored[4].astype(float).tolist()
    d = pr.payload["source"]["descriptor"]
    assert d["num_thresholds"] == 21
    assert d["true_positives"] == stored[0].astype(float).tolist()
    assert d["false_negatives"] == stored[3].astype(float).tolist()

    # a mesh part: a numeric tensor kept whole, with the plugin's own metadata
    mesh = got["mesh_VERTEX"][0].payload
    assert mesh["type"] == "tensor" and mesh["data"]["shape"] == [1, 4, 3]
    assert mesh["data"]["dtype"] == "float32" and len(mesh["data"]["values"]) == 12
    assert mesh["source"]["descriptor"]["plugin"] == "mesh"
    assert base64.b64decode(mesh["source"]["descriptor"]["plugin_content"])

    # what is not imported is counted, on the run and as an importer warning
    assert runs["train"]["tags"]["tensorboard.skipped"] == "graphs:1"
    assert any("graphs:1" in w for w in imp.warnings)


def test_v2_tensor_forms(tmp_path: Path) -> None:
    """tf.summary v2 writes images, histograms and audio as plugin tensors, its metadata on
    a tag's first value only: later values still import as the same plugin."""
    rng = np.random.default_rng(3)
    logdir = tmp_path / "logs"
    w = MediaWriter(str(logdir / "v2"))
    batches = {}
    for s in range(3):
        batch = [png_bytes(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)) for _ in range(2)]
        batches[s] = batch
        w.add_v2_images("batch", batch, 6, 4, s, W0 + s, first=s == 0)
        w.add_v2_histogram("h", np.array([[0.0, 0.5, 2], [0.5, 1.0, 3], [1.0, 1.5, 0]]) * (s + 1),
                           s, W0 + s, first=s == 0)
    clips = [wav_bytes(np.zeros(441), 44100), wav_bytes(np.ones(2205) * 0.1, 22050)]
    w.add_v2_audio("voices", clips, ["a *cat*", ""], 4, W0 + 4)
    w.add_v2_histogram("gapped", np.array([[0.0, 1.0, 2], [2.0, 3.0, 1]]), 5, W0 + 5)
    w.add_v2_histogram("empty", np.zeros((0, 3)), 5, W0 + 5)
    w.add_tensor("big", rng.random((70, 70)), 6, W0 + 6)
    w.close()

    spool = tmp_path / "spool"
    runs, _ = _import(logdir, spool)
    got = runs["v2"]["media"]
    acc = _accumulator(logdir / "v2")
    assert [e.step for e in got["batch"]] == [0, 1, 2]
    for ev, seen in zip(got["batch"], acc.Tensors("batch")):
        items = ev.payload["items"]
        assert [_bytes(spool, i) for i in items] == batches[ev.step] == list(
            seen.tensor_proto.string_val[2:])
        assert [(i["width"], i["height"], i["name"]) for i in items] == [
            (6, 4, f"batch_{ev.step}_0.png"), (6, 4, f"batch_{ev.step}_1.png")]
        assert ev.payload["source"]["descriptor"]["form"] == "tensor"
    for ev in got["h"]:
        k = ev.step + 1
        assert ev.payload["data"] == {"edges": [0.0, 0.5 * k, 1.0 * k, 1.5 * k],
                                      "counts": [2.0 * k, 3.0 * k, 0.0]}
    voices = got["voices"][0].payload["items"]
    assert [_bytes(spool, i) for i in voices] == clips
    assert [(i["sample_rate"], i["duration"], i.get("caption")) for i in voices] == [
        (44100, 0.01, "a *cat*"), (22050, 0.1, None)]
    gapped = got["gapped"][0].payload
    assert gapped["data"] == {"edges": [0.0, 1.0, 3.0], "counts": [2.0, 1.0]}
    assert gapped["source"]["descriptor"]["lefts"] == [0.0, 2.0]  # the gap is kept
    big = got["big"][0].payload  # too large to inline: an .npy file
    assert big["type"] == "file" and big["items"][0]["mime"] == "application/x-npy"
    loaded = np.load(io.BytesIO(_bytes(spool, big["items"][0])))
    assert np.array_equal(loaded, tensor_util_array(acc.Tensors("big")[0].tensor_proto))
    assert "empty" not in got
    assert runs["v2"]["tags"]["tensorboard.skipped"] == "histograms(empty):1"


def tensor_util_array(proto: Any) -> np.ndarray:
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(proto)


def test_tf1_histogram_with_default_buckets(tmp_path: Path) -> None:
    """TF1's default buckets end at ±DBL_MAX and its first bucket may hold data: the
    data's min and max stand for those edges."""
    from tensorboard.compat.proto import summary_pb2

    big = 1.7976931348623157e308
    logdir = tmp_path / "logs"
    w = MediaWriter(str(logdir / "tf1"))
    w.add_histogram_proto("tf1", summary_pb2.HistogramProto(
        min=-5.0, max=7.0, num=6, sum=3.0, sum_squares=40.0,
        bucket_limit=[-1.0, 0.0, 1.0, big], bucket=[2, 0, 1, 3]), 1, W0)
    w.add_histogram_proto("allempty", summary_pb2.HistogramProto(
        bucket_limit=[1.0, 2.0], bucket=[0, 0]), 1, W0)
    w.close()
    runs, imp = _import(logdir, tmp_path / "spool")
    data = runs["tf1"]["media"]["tf1"][0].payload["data"]
    assert data == {"edges": [-5.0, -1.0, 0.0, 1.0, 7.0], "counts": [2.0, 0.0, 1.0, 3.0]}
    assert runs["tf1"]["tags"]["tensorboard.skipped"] == "histograms(empty):1"
    assert any("histograms(empty):1" in w for w in imp.warnings)


@pytest.mark.parametrize("bins", [10, 1, "auto"])
def test_histogram_edges_recover_torch_bins(bins: Any) -> None:
    values = np.concatenate([np.full(5, 3.0), np.linspace(-2, 9, 40)])
    proto = torch_histogram(values, bins)
    edges, counts = histogram_edges(list(proto.bucket_limit), list(proto.bucket),
                                     proto.min, proto.max)
    want_counts, want_edges = np.histogram(values, bins=bins)
    filled = np.flatnonzero(want_counts)
    assert edges == want_edges[filled[0]:filled[-1] + 2].tolist()
    assert counts == want_counts[filled[0]:filled[-1] + 1].astype(float).tolist()
    assert all(math.isfinite(e) for e in edges)


def test_unreadable_summary_is_counted(tmp_path: Path) -> None:
    """An image tensor whose size fields are not numbers: counted, the rest imports."""
    from tensorboard.plugins.image import metadata as image_metadata

    logdir = tmp_path / "logs"
    w = MediaWriter(str(logdir / "bad"))
    w.add_tensor("broken", np.array([b"wide", b"high", b"\x89PNG..."], dtype=object), 1, W0,
                 image_metadata.create_summary_metadata("broken", ""))
    w.add_scalar("loss", 0.5, 1, W0)
    w.close()
    runs, _ = _import(logdir, tmp_path / "spool")
    assert runs["bad"]["tags"]["tensorboard.skipped"] == "images(unreadable):1"
    assert "broken" not in runs["bad"]["media"]


def test_wav_header_matches_descriptor(torch_records: dict[str, Any]) -> None:
    """The corpus itself: the WAV torch's add_audio writes is 16-bit mono at the rate."""
    with wave.open(io.BytesIO(torch_records["audio"][0])) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)


def test_projector_embeddings_become_tables(tmp_path: Path) -> None:
    """add_embedding's projector files (no summary in the event file) become a table
    ``embeddings/<tag>`` at the step: metadata, the vectors, the sprite's tiles."""
    from PIL import Image

    rng = np.random.default_rng(9)
    logdir = tmp_path / "logs"
    w = MediaWriter(str(logdir / "run"))
    mat = rng.random((5, 3)).astype(np.float32)
    label_img = rng.random((5, 3, 4, 6))  # NCHW, 6 wide and 4 high
    w.add_embedding(mat, metadata=list("abcde"), label_img=label_img, global_step=3,
                    tag="feats")
    w.add_embedding(np.eye(2), metadata=[["x", 1], ["y", 2]], metadata_header=["n", "k"])
    w.add_scalar("loss", 0.5, 1, W0)
    w.close()
    spool = tmp_path / "spool"
    runs, imp = _import(logdir, spool)
    got = runs["run"]["media"]

    table = got["embeddings/feats"][0]
    assert (table.step, table.payload["type"]) == (3, "table")
    data = table.payload["data"]
    assert data["columns"] == ["label", "dim_0", "dim_1", "dim_2", "image"]
    assert [r[0] for r in data["rows"]] == list("abcde")
    assert [r[1:4] for r in data["rows"]] == mat.astype(float).tolist()
    for n, row in enumerate(data["rows"]):
        item = row[4]["media"]["items"][0]
        assert (item["width"], item["height"], item["mime"]) == (6, 4, "image/png")
        tile = np.asarray(Image.open(io.BytesIO(_bytes(spool, item))))
        want = np.uint8((label_img[n].transpose(1, 2, 0) * 255).clip(0, 255))
        assert np.array_equal(tile, want)
    d = table.payload["source"]["descriptor"]
    assert (d["plugin"], d["tensor_name"], d["single_image_dim"]) == (
        "projector", "feats:00003", [6, 4])
    plain = got["embeddings/default"][0]
    assert plain.step == 0 and plain.payload["data"] == {
        "columns": ["n", "k", "dim_0", "dim_1"],
        "rows": [["x", "1", 1.0, 0.0], ["y", "2", 0.0, 1.0]]}
    assert "tensorboard.skipped" not in runs["run"]["tags"] and not imp.warnings


def test_projector_config_pointing_outside_is_counted(tmp_path: Path) -> None:
    """A config naming a file outside the log dir imports nothing of it, counted."""
    outside = tmp_path / "secret.tsv"
    outside.write_text("1\t2\n")
    logdir = tmp_path / "logs"
    w = MediaWriter(str(logdir / "run"))
    w.add_embedding(np.eye(2), global_step=1, tag="ok")
    w.add_scalar("loss", 0.5, 1, W0)
    w.close()
    config = logdir / "run" / "projector_config.pbtxt"
    config.write_text(config.read_text() + 'embeddings {\n  tensor_name: "evil:00001"\n'
                      '  tensor_path: "../../secret.tsv"\n}\n')
    runs, imp = _import(logdir, tmp_path / "spool")
    assert list(runs["run"]["media"]) == ["embeddings/ok"]
    assert runs["run"]["tags"]["tensorboard.skipped"] == "projector(unreadable):1"
    assert any("projector(unreadable):1" in w for w in imp.warnings)


def test_cli_import_says_what_was_not_imported(torch_records: dict[str, Any],
                                               tmp_path: Path) -> None:
    """``bridge import tensorboard`` prints the count of what it left out (the graph)."""
    from typer.testing import CliRunner

    from bridge.cli.main import app

    out = CliRunner().invoke(app, ["import", "tensorboard", str(torch_records["logdir"]),
                                   "--dir", str(tmp_path / "cli-spool")])
    assert out.exit_code == 0, out.output
    assert "skipped: run train: not imported (graphs:1)" in " ".join(out.output.split())
