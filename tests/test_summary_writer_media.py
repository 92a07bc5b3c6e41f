"""``bridge.SummaryWriter`` media: every ``add_*`` of torch's writer becomes a media event
at its ``global_step`` and ``walltime``, with arrays taken as torch takes them; what has no
bridge form warns and is counted on the run. Runs without torch (numpy arrays); the torch
variant is in tests/integrations/test_tensorboard_media_torch.py."""

from __future__ import annotations

import hashlib
import io
import warnings
import wave
from pathlib import Path
from typing import Any

import pytest

import bridge
from bridge.errors import BridgeWarning, InvalidValueError
from bridge.spool.blobs import blob_path
from bridge.spool.reader import iter_events, list_runs
from bridge.summary_writer import SummaryWriter

np = pytest.importorskip("numpy")
PIL = pytest.importorskip("PIL.Image")

W0 = 1_700_000_000.0


def _ms(t: float) -> int:
    return int(round(t * 1000))


@pytest.fixture
def writer(tmp_path: Path) -> Any:
    w = SummaryWriter("runs/media", dir=tmp_path, sync="offline", project="tb")
    yield w
    if w.run.status == "RUNNING":
        w.close()


def _media(tmp_path: Path, w: SummaryWriter) -> dict[str, list]:
    w.flush()
    rec = [r for r in list_runs(tmp_path) if r.run_id == w.run.id][0]
    out: dict[str, list] = {}
    for e in iter_events(rec.files, w.run.id):
        if e.kind == "media":
            out.setdefault(e.key, []).append(e)
    return out


def _bytes(tmp_path: Path, item: dict) -> bytes:
    data = blob_path(tmp_path, item["sha256"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == item["sha256"] and len(data) == item["size"]
    return data


def _pixels(data: bytes) -> Any:
    return np.asarray(PIL.open(io.BytesIO(data)))


def _torch_uint8(a: Any) -> Any:
    """How torch's writer turns a float image into pixels: x 255, clipped, truncated."""
    return np.clip(a.astype(np.float32) * 255, 0, 255).astype(np.uint8)


def test_images_in_torch_dataformats(tmp_path: Path, writer: SummaryWriter) -> None:
    rng = np.random.default_rng(0)
    chw = rng.random((3, 8, 10))
    hwc = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    hw = rng.random((5, 7))
    nchw = rng.random((3, 3, 4, 5))
    writer.add_image("chw", chw, 0, walltime=W0)
    writer.add_image("hwc", hwc, 1, walltime=W0 + 1, dataformats="HWC")
    writer.add_image("hw", hw, 2, dataformats="HW")
    writer.add_image("whc", hwc.transpose(1, 0, 2), 2, dataformats="WHC")
    writer.add_images("batch", nchw, 3, walltime=W0 + 3)
    writer.add_images("nhwc", nchw.transpose(0, 2, 3, 1), 4, dataformats="NHWC")
    got = _media(tmp_path, writer)

    ev = got["chw"][0]
    (item,) = ev.payload["items"]
    assert (ev.step, ev.ts_ms, ev.payload["type"]) == (0, _ms(W0), "image")
    assert (item["mime"], item["width"], item["height"]) == ("image/png", 10, 8)
    assert (_pixels(_bytes(tmp_path, item)) == _torch_uint8(chw.transpose(1, 2, 0))).all()
    item = got["hwc"][0].payload["items"][0]
    assert got["hwc"][0].ts_ms == _ms(W0 + 1)
    assert (_pixels(_bytes(tmp_path, item)) == hwc).all()
    assert (_pixels(_bytes(tmp_path, got["whc"][0].payload["items"][0])) == hwc).all()
    assert (_pixels(_bytes(tmp_path, got["hw"][0].payload["items"][0])) == _torch_uint8(hw)).all()

    for key in ("batch", "nhwc"):
        items = got[key][0].payload["items"]  # one event, an item per image
        assert len(items) == 3 and [i["name"] for i in items] == [
            f"{key}_0.png", f"{key}_1.png", f"{key}_2.png"]
        for n, i in enumerate(items):
            want = _torch_uint8(nchw[n].transpose(1, 2, 0))
            assert (_pixels(_bytes(tmp_path, i)) == want).all()
    assert writer.run.warnings == 0


def test_histograms_keep_tensorboard_bins(tmp_path: Path, writer: SummaryWriter) -> None:
    from bridge.adapters.tensorboard.compat import tensorflow_bins

    rng = np.random.default_rng(1)
    values = rng.normal(size=2000)
    writer.add_histogram("default", values, 0, walltime=W0)
    writer.add_histogram("ten", values, 1, bins=10)
    writer.add_histogram("edges", values, 2, bins=[-10, -1, 0, 1, 10])
    writer.add_histogram("capped", values, 3, bins=100, max_bins=20)
    writer.add_histogram_raw("raw", min=-3.0, max=4.0, num=6, sum=3.0, sum_squares=30.0,
                             bucket_limits=[0.0, 1.0, 4.0], bucket_counts=[2, 0, 4],
                             global_step=4, walltime=W0 + 4)
    got = _media(tmp_path, writer)

    data = got["default"][0].payload["data"]
    counts, edges = np.histogram(values, bins=tensorflow_bins())
    filled = np.flatnonzero(counts)
    assert data == {"edges": edges[filled[0]:filled[-1] + 2].tolist(),
                    "counts": counts[filled[0]:filled[-1] + 1].astype(float).tolist()}
    assert got["default"][0].ts_ms == _ms(W0) and got["default"][0].payload["items"] == []
    counts, edges = np.histogram(values, bins=10)
    assert got["ten"][0].payload["data"] == {"edges": edges.tolist(),
                                             "counts": counts.astype(float).tolist()}
    assert got["edges"][0].payload["data"]["edges"] == [-10.0, -1.0, 0.0, 1.0, 10.0]
    capped = got["capped"][0].payload["data"]
    assert len(capped["counts"]) <= 20 and sum(capped["counts"]) == 2000
    raw = got["raw"][0].payload
    assert raw["data"] == {"edges": [-3.0, 0.0, 1.0, 4.0], "counts": [2.0, 0.0, 4.0]}
    assert raw["source"]["descriptor"]["sum_squares"] == 30.0


def test_audio_video_text(tmp_path: Path, writer: SummaryWriter) -> None:
    rng = np.random.default_rng(2)
    writer.add_audio("tone", np.sin(np.arange(1600) / 5.0)[None] * 2, 0, sample_rate=16000,
                     walltime=W0)  # (1, L) and out of range: squeezed and clipped, as torch
    batch = rng.random((2, 5, 3, 6, 4))  # (N, T, C, H, W)
    writer.add_video("rollout", batch, 1, fps=10)
    writer.add_video("single", rng.integers(0, 256, (1, 3, 3, 6, 4), dtype=np.uint8), 1)
    for s in range(3):
        writer.add_text("notes", f"step *{s}*", s, walltime=W0 + s)
    got = _media(tmp_path, writer)

    item = got["tone"][0].payload["items"][0]
    assert (item["mime"], item["sample_rate"], item["duration"]) == ("audio/wav", 16000, 0.1)
    with wave.open(io.BytesIO(_bytes(tmp_path, item))) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (16000, 1, 1600)
        pcm = np.frombuffer(wav.readframes(1600), dtype="<i2")
    assert pcm.max() == 32767 and pcm.min() == -32767  # clipped to [-1, 1]

    videos = got["rollout"][0].payload
    assert videos["type"] == "video" and len(videos["items"]) == 2
    for v in videos["items"]:
        assert (v["mime"], v["frames"], v["fps"], v["width"], v["height"]) == (
            "image/gif", 5, 10, 4, 6)
        assert PIL.open(io.BytesIO(_bytes(tmp_path, v))).n_frames == 5
    assert len(got["single"][0].payload["items"]) == 1

    assert [(e.step, e.ts_ms, e.payload["type"], e.payload["data"]) for e in got["notes"]] == [
        (s, _ms(W0 + s), "text", {"text": f"step *{s}*"}) for s in range(3)]


def test_pr_curve_matches_tensorboard(tmp_path: Path, writer: SummaryWriter) -> None:
    """The same curve TensorBoard stores (tb_events writes its [6, t] table)."""
    from tb_events import MediaWriter

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    predictions = np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1)
    writer.add_pr_curve("pr", labels, predictions, 5, num_thresholds=33, walltime=W0 + 5)
    tb = MediaWriter(str(tmp_path / "tb"))
    table = tb.add_pr_curve("pr", labels, predictions, 5, W0 + 5, num_thresholds=33)
    tb.close()
    writer.add_pr_curve_raw("raw", [3, 2, 1], [3, 1, 0], [0, 2, 3], [0, 1, 2],
                            [0.5, 0.66, 1.0], [1.0, 0.66, 0.33], 6, num_thresholds=3)
    got = _media(tmp_path, writer)

    ev = got["pr"][0]
    assert (ev.step, ev.ts_ms, ev.payload["type"]) == (5, _ms(W0 + 5), "curve")
    np.testing.assert_allclose(ev.payload["data"]["x"], table[5], rtol=1e-6)
    np.testing.assert_allclose(ev.payload["data"]["y"], table[4], rtol=1e-6)
    d = ev.payload["source"]["descriptor"]
    assert d["plugin"] == "pr_curves" and d["num_thresholds"] == 33
    np.testing.assert_allclose(d["true_positives"], table[0])
    raw = got["raw"][0].payload
    assert raw["data"] == {"x": [1.0, 0.66, 0.33], "y": [0.5, 0.66, 1.0],
                           "name": "precision/recall"}
    assert raw["source"]["descriptor"]["false_negatives"] == [0.0, 1.0, 2.0]


def test_figure_boxes_mesh_embedding_tensor(tmp_path: Path, writer: SummaryWriter) -> None:
    plt = pytest.importorskip("matplotlib.pyplot")
    rng = np.random.default_rng(4)
    fig = plt.figure(figsize=(2, 2), dpi=50)
    plt.plot([1, 2, 3])
    writer.add_figure("plots/curve", fig, global_step=2, walltime=W0 + 2)
    assert not plt.fignum_exists(fig.number)  # closed, as torch's writer does
    figs = [plt.figure(figsize=(1, 1), dpi=40) for _ in range(2)]
    writer.add_figure("plots/many", figs, global_step=3, close=False)
    assert all(plt.fignum_exists(f.number) for f in figs)
    for f in figs:
        plt.close(f)
    writer.add_image_with_boxes("boxes", np.zeros((3, 20, 30)), np.array([[2, 2, 12, 15]]),
                                4, labels=["cat"])
    vertices = rng.random((1, 5, 3))
    colors = rng.integers(0, 256, (1, 5, 3))
    writer.add_mesh("cloud", vertices, colors=colors, global_step=5)
    writer.add_mesh("solid", vertices, faces=np.array([[[0, 1, 2], [2, 3, 4]]]), global_step=5,
                    config_dict={"camera": {"fov": 75}})
    writer.add_embedding(rng.random((3, 4)), metadata=["a", "b", "c"],
                         label_img=rng.random((3, 3, 4, 4)), global_step=6, tag="feats")
    writer.add_embedding(np.eye(2), metadata=[["x", 1], ["y", 2]], metadata_header=["n", "k"])
    writer.add_tensor("weights", np.arange(6, dtype=np.float32).reshape(2, 3), 7)
    got = _media(tmp_path, writer)

    ev = got["plots/curve"][0]
    item = ev.payload["items"][0]
    assert (ev.step, ev.ts_ms, item["mime"], item["width"], item["height"]) == (
        2, _ms(W0 + 2), "image/png", 100, 100)
    assert len(got["plots/many"][0].payload["items"]) == 2

    pixels = _pixels(_bytes(tmp_path, got["boxes"][0].payload["items"][0]))
    assert pixels.shape == (20, 30, 3) and (pixels[2, 5] == [255, 0, 0]).all()  # red edge

    cloud = got["cloud"][0].payload["items"][0]
    assert (cloud["mime"], cloud["points"]) == ("application/json", 5)
    import json

    points = json.loads(_bytes(tmp_path, cloud))
    np.testing.assert_allclose(np.array(points)[:, :3], vertices[0])
    assert np.array(points)[:, 3:].tolist() == colors[0].astype(float).tolist()
    solid = got["solid"][0].payload
    obj = _bytes(tmp_path, solid["items"][0]).decode()
    assert solid["items"][0]["mime"] == "model/obj" and obj.count("\nv ") + 1 == 5
    assert "f 1 2 3" in obj and "f 3 4 5" in obj
    assert solid["source"]["descriptor"]["config"] == {"camera": {"fov": 75}}

    table = got["embeddings/feats"][0].payload
    assert table["type"] == "table" and got["embeddings/feats"][0].step == 6
    assert table["data"]["columns"] == ["label", "dim_0", "dim_1", "dim_2", "dim_3", "image"]
    assert [r[0] for r in table["data"]["rows"]] == ["a", "b", "c"]
    assert all(r[-1]["media"]["type"] == "image" for r in table["data"]["rows"])
    assert got["embeddings/default"][0].step == 0  # torch files a stepless embedding at 0
    default = got["embeddings/default"][0].payload["data"]
    assert default == {"columns": ["n", "k", "dim_0", "dim_1"],
                       "rows": [["x", "1", 1.0, 0.0], ["y", "2", 0.0, 1.0]]}
    assert got["weights"][0].payload["data"] == {"dtype": "float32", "shape": [2, 3],
                                                 "values": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}
    assert writer.run.warnings == 0


def test_unsupported_and_bad_inputs_warn_and_count(tmp_path: Path,
                                                   writer: SummaryWriter) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer.add_graph(object(), None)
        writer.add_graph(object(), None)
        writer.add_custom_scalars({"a": {"b": ["Multiline", ["x"]]}})
        writer.add_image("bad", np.zeros(5), 0)  # not CHW
        writer.add_histogram("nan", np.array([1.0, np.nan]), 0)  # TensorBoard refuses NaN
        writer.add_figure("nofig", object(), 0)
    messages = [str(w.message) for w in caught if issubclass(w.category, BridgeWarning)]
    assert len(messages) == 6
    assert sum("add_graph" in m and "no bridge form" in m for m in messages) == 2
    assert any("add_custom_scalars" in m for m in messages)
    assert any("add_image" in m and "'bad'" in m for m in messages)
    assert writer.run.warnings == 6  # counted on the run, and in the spool's run record
    writer.close()
    rec = [r for r in list_runs(tmp_path) if r.run_id == writer.run.id][0]
    assert rec.warnings == 6
    assert not _media(tmp_path, writer)
    with pytest.raises(AttributeError):
        writer.add_nonsense  # noqa: B018 - a typo is still an error


def test_strict_run_raises_on_unsupported(tmp_path: Path) -> None:
    run = bridge.init(project="tb", dir=tmp_path, sync="offline", strict=True)
    w = SummaryWriter(run=run)
    with pytest.raises(InvalidValueError, match="add_graph"):
        w.add_graph(object())
    w.close()
    run.finish()


def test_bridge_writer_and_import_agree(tmp_path: Path, writer: SummaryWriter) -> None:
    """The histogram and text a TensorBoard script logs through bridge equal what the
    importer reads from the event file torch's writer makes of the same calls."""
    from tb_events import MediaWriter

    from bridge.adapters.tensorboard.importer import TensorboardImporter
    from bridge.importers.sink import import_runs

    values = np.random.default_rng(5).normal(size=500)
    writer.add_histogram("w", values, 3, bins=10)
    writer.add_text("notes", "hello", 3)
    tb = MediaWriter(str(tmp_path / "logs" / "run"))
    tb.add_histogram("w", values, 3, W0, bins=10)
    tb.add_text("notes", "hello", 3, W0)
    tb.close()
    mine = _media(tmp_path, writer)
    spool = tmp_path / "imported"
    (done,) = import_runs(TensorboardImporter(tmp_path / "logs"), spool)
    rec = [r for r in list_runs(spool) if r.run_id == done.run_id][0]
    imported = {e.key: e for e in iter_events(rec.files, done.run_id) if e.kind == "media"}
    assert imported["w"].payload["data"] == mine["w"][0].payload["data"]
    assert imported["notes"].payload["data"] == mine["notes"][0].payload["data"]
    assert imported["w"].step == mine["w"][0].step == 3
