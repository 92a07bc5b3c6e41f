"""W&B media through bridge: ``bridge.compat.wandb``'s media classes in a ``wandb.log`` loop,
and real ``wandb`` SDK media objects passed to bridge's ``run.log``, read back from the spool."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import wave
from pathlib import Path
from typing import Any

import pytest

import bridge
import bridge.compat.wandb as cw
from bridge.errors import BridgeWarning
from bridge.spool.blobs import blob_path
from bridge.spool.reader import iter_events, list_runs

np = pytest.importorskip("numpy")
PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def no_wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-own"))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-env" / var.lower()))
    yield
    cw.finish()


def media_events(spool: Path, run_id: str) -> dict[str, list[Any]]:
    rec = [r for r in list_runs(spool) if r.run_id == run_id][0]
    out: dict[str, list[Any]] = {}
    for e in iter_events(rec.files, run_id):
        if e.kind == "media":
            out.setdefault(e.key, []).append(e)
    return out


def blob(spool: Path, item: dict[str, Any]) -> bytes:
    data = blob_path(spool, item["sha256"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == item["sha256"]
    return data


def pixels(data: bytes) -> Any:
    return np.asarray(PIL.open(io.BytesIO(data)))


def wav_bytes(n: int = 400, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x02" * n)
    return buf.getvalue()


# -- bridge.compat.wandb's own classes ------------------------------------------------------


def test_compat_classes_in_a_wandb_log_loop(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    run = cw.init(project="media", dir=spool, mode="offline")
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    cw.log({"loss": 1.0, "sample": cw.Image(rgb, caption="first")})  # step 0
    cw.log({"weights": cw.Histogram(np.arange(100.0), num_bins=10),
            "given": cw.Histogram(np_histogram=(np.array([1, 2]), np.array([0.0, 1.0, 3.0])))},
           commit=False)
    cw.log({"note": "a text point"})  # still step 1 (commit=False above)
    table = cw.Table(columns=["id", "img"])
    table.add_data(1, cw.Image(rgb[:2, :2]))
    table.add_data(2, cw.Image(rgb[2:4, :2]))
    table.add_column("label", ["a", "b"])
    wav = wav_bytes()
    (tmp_path / "clip.wav").write_bytes(wav)
    frames = np.zeros((3, 3, 8, 8), np.uint8)  # (T, C, H, W), as W&B takes them
    cw.log({"preds": table, "clip": cw.Audio(str(tmp_path / "clip.wav"), caption="hum"),
            "movie": cw.Video(frames, fps=2), "page": cw.Html("<p>hi</p>"),
            "cloud": cw.Object3D(np.zeros((4, 3))), "pair": [cw.Image(rgb), cw.Image(rgb)]},
           step=5)
    cw.finish()
    ev = media_events(spool, run.bridge_run.id)
    (s,) = ev["sample"]
    assert s.step == 0 and s.payload["items"][0]["caption"] == "first"
    assert (pixels(blob(spool, s.payload["items"][0])) == rgb).all()
    (w,) = ev["weights"]
    assert w.step == 1 and len(w.payload["data"]["counts"]) == 10
    assert sum(w.payload["data"]["counts"]) == 100
    assert ev["given"][0].payload["data"] == {"edges": [0.0, 1.0, 3.0], "counts": [1.0, 2.0]}
    (note,) = ev["note"]
    assert note.step == 1 and note.payload["data"] == {"text": "a text point"}
    (t,) = ev["preds"]
    assert t.step == 5 and t.payload["data"]["columns"] == ["id", "img", "label"]
    rows = t.payload["data"]["rows"]
    assert [r[0] for r in rows] == [1, 2] and [r[2] for r in rows] == ["a", "b"]
    cell = rows[1][1]["media"]["items"][0]
    assert (pixels(blob(spool, cell)) == rgb[2:4, :2]).all()
    (clip,) = ev["clip"]
    assert blob(spool, clip.payload["items"][0]) == wav
    assert clip.payload["items"][0]["caption"] == "hum"
    movie = ev["movie"][0].payload["items"][0]
    assert movie["mime"] == "image/gif" and movie["frames"] == 3 and movie["fps"] == 2
    assert blob(spool, ev["page"][0].payload["items"][0]) == b"<p>hi</p>"
    cloud = ev["cloud"][0].payload["items"][0]
    assert json.loads(blob(spool, cloud)) == [[0.0, 0.0, 0.0]] * 4
    assert len(ev["pair"][0].payload["items"]) == 2


def test_compat_signatures_follow_wandb(tmp_path: Path) -> None:
    h = cw.Histogram(np_histogram=([3, 4], [0.0, 1.0, 2.0]))
    assert h.histogram == [3.0, 4.0] and h.bins == [0.0, 1.0, 2.0]
    seq = cw.Histogram([1.0, 2.0, 2.0, 3.0], num_bins=2)
    assert seq.histogram == [1.0, 3.0] and seq.bins == [1.0, 2.0, 3.0]
    assert cw.Histogram(np.arange(2000.0), num_bins=1000).histogram  # over W&B's 512: kept
    with pytest.raises(ValueError):
        cw.Histogram()
    assert cw.Table().columns == ["Input", "Output", "Expected"]
    t = cw.Table(columns=["a"], data=[[1], [2]])
    assert t.data == [[1], [2]] and t.get_column("a") == [1, 2]
    img = cw.Image(np.zeros((2, 2, 3), np.uint8), caption="c",
                   boxes={"p": {"box_data": [{"position": {"minX": 0, "maxX": 1, "minY": 0,
                                                           "maxY": 1}, "class_id": 1}]}})
    assert img.source["descriptor"]["boxes"]["p"]["box_data"][0]["class_id"] == 1
    assert cw.Image(img).caption == "c"
    gray = cw.Image(np.full((2, 2, 3), 255, np.uint8), mode="L")
    assert gray.nbytes() > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cw.Image(np.zeros((2, 2), np.uint8), masks={"m": {"mask_data": np.zeros((2, 2))}})
    assert any(issubclass(w.category, BridgeWarning) and "masks" in str(w.message)
               for w in caught)
    page = tmp_path / "p.html"
    page.write_text("<i>file</i>")
    assert cw.Html(str(page))._bytes == b"<i>file</i>"
    assert cw.Html(io.StringIO("<u>io</u>"))._bytes == b"<u>io</u>"
    scene = cw.Object3D({"type": "lidar/beta", "points": [[0, 0, 0]]})
    assert scene._name == "scene.pts.json" and scene._mime == "application/json"


# -- real wandb objects through bridge's run.log ---------------------------------------------


def test_real_wandb_objects_become_bridge_media(tmp_path: Path) -> None:
    wandb = pytest.importorskip("wandb")
    spool = tmp_path / "spool"
    run = bridge.init(project="media", dir=spool, sync="offline")
    rgb = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    wimg = wandb.Image(rgb, caption="from wandb")
    (tmp_path / "clip.wav").write_bytes(wav_bytes())
    frames = [PIL.fromarray(np.full((8, 8, 3), i * 40, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "m.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "shape.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    table = wandb.Table(columns=["n", "img"], data=[[1, wandb.Image(rgb[:2, :2])]])
    run.log({"img": wimg,
             "imgs": [wandb.Image(rgb), wandb.Image(rgb[:3])],
             "hist": wandb.Histogram(np_histogram=([1, 2, 3], [0, 1, 2, 3])),
             "table": table,
             "clip": wandb.Audio(str(tmp_path / "clip.wav"), caption="hum"),
             "movie": wandb.Video(str(tmp_path / "m.gif")),
             "page": wandb.Html("<b>raw</b>", inject=False),
             "cloud": wandb.Object3D(np.ones((3, 3))),
             "mesh": wandb.Object3D(str(tmp_path / "shape.obj"))}, step=4)
    run.finish()
    ev = {k: v[0] for k, v in media_events(spool, run.id).items()}
    assert {e.step for e in ev.values()} == {4}
    img = ev["img"].payload
    (item,) = img["items"]
    # the bytes W&B encoded itself, pixels equal to the array
    assert blob(spool, item) == Path(wimg._path).read_bytes()
    assert (pixels(blob(spool, item)) == rgb).all()
    assert item["caption"] == "from wandb" and (item["width"], item["height"]) == (7, 5)
    assert img["source"] == {"vendor": "wandb", "descriptor": {
        "_type": "image-file", "format": "png", "width": 7, "height": 5,
        "caption": "from wandb"}}
    assert len(ev["imgs"].payload["items"]) == 2
    assert ev["hist"].payload["data"] == {"edges": [0.0, 1.0, 2.0, 3.0],
                                          "counts": [1.0, 2.0, 3.0]}
    rows = ev["table"].payload["data"]["rows"]
    assert rows[0][0] == 1
    assert (pixels(blob(spool, rows[0][1]["media"]["items"][0])) == rgb[:2, :2]).all()
    clip = ev["clip"].payload["items"][0]
    assert blob(spool, clip) == (tmp_path / "clip.wav").read_bytes() and clip["caption"] == "hum"
    movie = ev["movie"].payload["items"][0]
    assert blob(spool, movie) == (tmp_path / "m.gif").read_bytes()
    assert movie["mime"] == "image/gif"
    assert blob(spool, ev["page"].payload["items"][0]) == b"<b>raw</b>"
    cloud = ev["cloud"].payload["items"][0]
    assert cloud["mime"] == "application/json" and json.loads(blob(spool, cloud)) == [
        [1, 1, 1]] * 3
    mesh = ev["mesh"].payload["items"][0]
    assert mesh["mime"] == "model/obj" and mesh["name"].endswith(".obj")
    assert blob(spool, mesh) == (tmp_path / "shape.obj").read_bytes()


def test_wandb_objects_through_the_compat_shim(tmp_path: Path) -> None:
    wandb = pytest.importorskip("wandb")
    spool = tmp_path / "spool"
    run = cw.init(project="media", dir=spool, mode="offline")
    rgb = np.full((2, 3, 3), 9, np.uint8)
    table = cw.Table(columns=["img"], data=[[wandb.Image(rgb)]])
    table.add_data(wandb.Image(rgb))
    cw.log({"real": wandb.Histogram([1.0, 2.0, 3.0], num_bins=3), "loss": 0.1,
            "mixed": table}, step=2)
    cw.finish()
    ev = media_events(spool, run.bridge_run.id)
    (h,) = ev["real"]
    assert h.step == 2 and h.payload["data"]["counts"] == [1.0, 1.0, 1.0]
    rows = ev["mixed"][0].payload["data"]["rows"]
    assert [(pixels(blob(spool, r[0]["media"]["items"][0])) == rgb).all() for r in rows] == [
        True, True]
