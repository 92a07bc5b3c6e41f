"""Media in the spool: what ``run.log`` records for each media value, read back from the
spool and the blob store, bad inputs, copies of caller-owned data, and the schema version."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import warnings
import wave

import pytest

import bridge
from bridge.errors import InvalidValueError
from bridge.spool.blobs import blob_path
from bridge.spool.media import blob_items, describe
from bridge.spool.reader import iter_events, list_runs

np = pytest.importorskip("numpy")
PIL = pytest.importorskip("PIL.Image")


def _media(tmp_path, run):
    run.flush()
    rec = [r for r in list_runs(tmp_path) if r.run_id == run.id][0]
    return [e for e in iter_events(rec.files, run.id) if e.kind == "media"]


def _bytes(tmp_path, item) -> bytes:
    data = blob_path(tmp_path, item["sha256"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == item["sha256"]
    assert len(data) == item["size"]
    return data


def _pixels(data: bytes):
    return np.asarray(PIL.open(io.BytesIO(data)))


@pytest.fixture
def run(tmp_path):
    r = bridge.init(project="media", dir=tmp_path, sync="offline")
    yield r
    r.finish()


def test_image_from_arrays_keeps_pixels_step_and_caption(tmp_path, run):
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    chw = np.random.default_rng(1).random((3, 8, 10))  # float in [0, 1], channels first
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    run.log({"rgb": bridge.Image(rgb, caption="a cat"), "loss": 0.5}, step=7)
    run.log({"chw": bridge.Image(chw), "gray": bridge.Image(gray[:, :, None])}, step=8)
    by_key = {e.key: e for e in _media(tmp_path, run)}
    ev = by_key["rgb"]
    assert (ev.step, ev.payload["type"]) == (7, "image")
    (item,) = ev.payload["items"]
    assert item["mime"] == "image/png" and item["caption"] == "a cat"
    assert (item["width"], item["height"]) == (32, 24)
    assert (_pixels(_bytes(tmp_path, item)) == rgb).all()
    chw_item = by_key["chw"].payload["items"][0]
    expect = np.clip(np.rint(np.transpose(chw, (1, 2, 0)) * 255), 0, 255).astype(np.uint8)
    assert (_pixels(_bytes(tmp_path, chw_item)) == expect).all()
    assert (_pixels(_bytes(tmp_path, by_key["gray"].payload["items"][0])) == gray).all()
    assert describe(ev.payload) == "image 32x24 image/png 'a cat'"


def test_image_from_file_bytes_pil_and_figure(tmp_path, run):
    src = tmp_path / "photo.jpg"
    PIL.fromarray(np.full((5, 6, 3), 200, np.uint8)).save(src, format="JPEG")
    original = src.read_bytes()
    pil = PIL.fromarray(np.zeros((4, 4, 3), np.uint8))
    run.log({"file": bridge.Image(str(src)), "raw": bridge.Image(original), "pil": pil}, step=1)
    src.write_bytes(b"overwritten later")  # the file was read when logged
    pil.paste((255, 0, 0), (0, 0, 4, 4))  # the PIL image was copied when logged
    by_key = {e.key: e for e in _media(tmp_path, run)}
    f = by_key["file"].payload["items"][0]
    assert _bytes(tmp_path, f) == original and f["mime"] == "image/jpeg"
    assert f["name"] == "photo.jpg" and (f["width"], f["height"]) == (6, 5)
    assert by_key["raw"].payload["items"][0]["sha256"] == f["sha256"]  # one blob, deduplicated
    assert (_pixels(_bytes(tmp_path, by_key["pil"].payload["items"][0])) == 0).all()


def test_figure_is_rendered_when_logged(tmp_path, run):
    plt = pytest.importorskip("matplotlib.pyplot")
    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    ax.plot([0, 1], [0, 1])
    run.log({"fig": fig}, step=3)
    plt.close(fig)
    (ev,) = _media(tmp_path, run)
    item = ev.payload["items"][0]
    assert ev.step == 3 and (item["width"], item["height"]) == (100, 100)
    assert _bytes(tmp_path, item).startswith(b"\x89PNG")


def test_arrays_are_copied_at_the_call(tmp_path, run):
    buf = np.zeros((4, 4, 3), np.uint8)
    values = np.zeros(100)
    for step in range(3):
        buf[:] = step * 50
        values[:] = step
        run.log({"frame": bridge.Image(buf), "h": bridge.Histogram(values, bins=4)}, step=step)
    media = _media(tmp_path, run)
    frames = sorted((e.step, e.payload["items"][0]) for e in media if e.key == "frame")
    for step, item in frames:
        assert (_pixels(_bytes(tmp_path, item)) == step * 50).all()
    hists = sorted((e.step, e.payload["data"]) for e in media if e.key == "h")
    for step, data in hists:
        assert sum(data["counts"]) == 100 and data["edges"][0] == pytest.approx(step - 0.5)


def test_histogram_values_and_precomputed(tmp_path, run):
    values = np.concatenate([np.arange(10.0), [np.nan, np.inf]])
    run.log({"w": bridge.Histogram(values, bins=5),
             "given": bridge.Histogram(edges=[0, 1, 2], counts=[3, 4])}, step=0)
    by_key = {e.key: e.payload for e in _media(tmp_path, run)}
    counts, edges = np.histogram(np.arange(10.0), bins=5)
    assert by_key["w"]["data"] == {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}
    assert by_key["w"]["items"] == []
    assert by_key["given"]["data"] == {"edges": [0.0, 1.0, 2.0], "counts": [3.0, 4.0]}


def test_table_with_image_cells(tmp_path, run):
    img = np.full((3, 3, 3), 9, np.uint8)
    table = bridge.Table(columns=["id", "pred", "image"], data=[[1, "cat", bridge.Image(img)]])
    table.add_data(2, np.float32(0.5), None)
    run.log({"preds": table}, step=2)
    (ev,) = _media(tmp_path, run)
    data = ev.payload["data"]
    assert data["columns"] == ["id", "pred", "image"]
    assert data["rows"][1] == [2, 0.5, None]
    cell = data["rows"][0][2]["media"]
    assert cell["type"] == "image"
    (item,) = list(blob_items(ev.payload))
    assert item is cell["items"][0] and (_pixels(_bytes(tmp_path, item)) == 9).all()
    import pandas as pd

    run.log({"df": bridge.Table(dataframe=pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))})
    df_ev = [e for e in _media(tmp_path, run) if e.key == "df"][0]
    assert df_ev.payload["data"] == {"columns": ["a", "b"], "rows": [[1, "x"], [2, "y"]]}


def test_audio_video_html_object3d(tmp_path, run):
    samples = np.sin(np.linspace(0, 100, 8000))
    frames = np.random.default_rng(2).integers(0, 256, (5, 3, 8, 12), dtype=np.uint8)
    points = np.random.default_rng(3).random((20, 3))
    run.log({"audio": bridge.Audio(samples, sample_rate=8000, caption="tone"),
             "video": bridge.Video(frames, fps=10),
             "page": bridge.Html("<h1>report</h1>"),
             "cloud": bridge.Object3D(points)}, step=4)
    by_key = {e.key: e.payload for e in _media(tmp_path, run)}
    a = by_key["audio"]["items"][0]
    with wave.open(io.BytesIO(_bytes(tmp_path, a))) as w:
        assert (w.getframerate(), w.getnframes(), w.getsampwidth()) == (8000, 8000, 2)
    assert a["sample_rate"] == 8000 and a["duration"] == 1.0 and a["caption"] == "tone"
    v = by_key["video"]["items"][0]
    gif = PIL.open(io.BytesIO(_bytes(tmp_path, v)))
    assert (gif.n_frames, gif.size, v["frames"], v["fps"]) == (5, (12, 8), 5, 10)
    h = by_key["page"]["items"][0]
    assert _bytes(tmp_path, h) == b"<h1>report</h1>" and h["mime"] == "text/html"
    o = by_key["cloud"]["items"][0]
    import json

    assert np.allclose(json.loads(_bytes(tmp_path, o)), points) and o["name"] == "cloud.pts.json"


def test_strings_are_text_points_and_lists_are_one_event(tmp_path, run):
    for step in range(3):
        run.log({"status": f"epoch {step}",
                 "grid": [bridge.Image(np.full((2, 2), step, np.uint8), caption=str(i))
                          for i in range(4)]}, step=step)
    media = _media(tmp_path, run)
    texts = sorted((e.step, e.payload["data"]["text"]) for e in media if e.key == "status")
    assert texts == [(0, "epoch 0"), (1, "epoch 1"), (2, "epoch 2")]
    grids = [e for e in media if e.key == "grid"]
    assert len(grids) == 3 and all(len(e.payload["items"]) == 4 for e in grids)
    assert [i["caption"] for i in grids[0].payload["items"]] == ["0", "1", "2", "3"]
    df = bridge.data(dir=tmp_path, event="media", key="status")
    assert df["value"].tolist() == ["epoch 0", "epoch 1", "epoch 2"]


def test_log_media_keeps_step_and_timestamp(tmp_path, run):
    run.log_media("sample", bridge.Image(np.zeros((2, 2), np.uint8)), step=40,
                  timestamp=1_700_000_000_123)
    (ev,) = _media(tmp_path, run)
    assert (ev.step, ev.ts_ms) == (40, 1_700_000_000_123)
    assert run.step == 0  # log_media does not advance the run's step


def test_bad_media_warns_counts_and_strict_raises(tmp_path, run):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.log({"a": object()})
        run.log_media("b", 42)
        run.log_media("c", [bridge.Image(np.zeros((2, 2), np.uint8)), bridge.Histogram([1.0])])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3 == run.warnings
    assert "metric value must be numeric" in messages[0]
    assert "is not media" in messages[1] and "is not media" in messages[2]
    for bad in (lambda: bridge.Image(tmp_path / "missing.png"),
                lambda: bridge.Image(np.zeros((2, 2, 7))),
                lambda: bridge.Histogram(edges=[0, 1], counts=[1, 2]),
                lambda: bridge.Audio(np.zeros(10)),
                lambda: bridge.Video(np.zeros((2, 2)))):
        with pytest.raises(InvalidValueError):
            bad()
    assert _media(tmp_path, run) == []
    strict = bridge.init(project="media", dir=tmp_path, sync="offline", strict=True)
    with pytest.raises(InvalidValueError, match="is not media"):
        strict.log_media("x", 1.5)
    strict.finish()


def test_media_reaches_an_adapter_with_its_blobs(tmp_path):
    from bridge.adapters import memory
    from bridge.agent.sync import Syncer

    run = bridge.init(project="media", dir=tmp_path, sync="offline",
                      backends=[{"name": "memory", "store": "media-test"}])
    run.log({"img": bridge.Image(np.full((2, 3), 7, np.uint8)), "note": "hi"}, step=5)
    run.finish()
    assert Syncer(tmp_path).run_once().complete
    got = [e for e in memory.STORE["media-test"]["events"][run.id] if e.kind == "media"]
    assert sorted((e.key, e.step) for e in got) == [("img", 5), ("note", 5)]
    img = [e for e in got if e.key == "img"][0].payload["items"][0]
    assert (_pixels(_bytes(tmp_path, img)) == 7).all()


@pytest.mark.parametrize("older", ["1", "2", "3"])
def test_spool_schema_is_4_and_older_files_still_read(tmp_path, run, older):
    run.log({"x": 1.0}, step=0)
    run.flush()
    path = list_runs(tmp_path)[0].files[0].path
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("4",)
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (older,))
    rec = list_runs(tmp_path)[0]
    assert [e.value for e in iter_events(rec.files, run.id) if e.kind == "metric"] == [1.0]
