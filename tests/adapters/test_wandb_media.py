"""Media events through the W&B adapter (real wandb, offline), read back from W&B's own
files: the ``.wandb`` history rows, ``files/media/...`` and the run-table artifact."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.base import Outcome

pytest.importorskip("wandb")
np = pytest.importorskip("numpy")
pytest.importorskip("PIL")

from bridge.adapters.wandb.media_out import check_media, rebin  # noqa: E402
from bridge.media.encode import array_to_png, gif_from_frames, wav_from_array  # noqa: E402
from bridge.spool.media import media_item, media_payload  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_wandb_adapter import (  # noqa: E402
    T0,
    Events,
    add_blob,
    isolated_wandb,  # noqa: F401  (the autouse fixture)
    make_run,
    out,  # noqa: F401
    sync,
)
from wandb_readback import read_back  # noqa: E402


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png(seed: int, w: int = 12, h: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    return array_to_png(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))[0]


def item(run: Any, data: bytes, mime: str, name: str, **facts: Any) -> dict[str, Any]:
    b = add_blob(run.blob_root, data)
    return media_item(b["sha256"], b["size"], mime, name, **facts)


def file_of(out_dir: Path, back: Any, rel: str) -> bytes:
    for frag in back.fragments:
        p = frag.path.parent / "files" / rel
        if p.is_file():
            return p.read_bytes()
    raise AssertionError(f"{rel} is not in any fragment's files/")


def rows_with(back: Any, key: str) -> list[dict[str, Any]]:
    return [row for row in back.history if key in row]


def table_artifact_cells(back: Any, descriptor: dict[str, Any]) -> list[list[Any]]:
    """The rows of the table W&B logged as a run_table artifact, image cells as bytes."""
    client_id = descriptor["artifact_path"].split("//", 1)[1].split("/", 1)[0]
    (art,) = [a for f in back.fragments for a in [_with_client(f, client_id)] if a]
    files = {e["path"]: Path(e["local_path"]).read_bytes() for e in art["files"]}
    entry = descriptor["artifact_path"].rsplit("/", 1)[1]
    table = json.loads(files[entry])
    return [[files[c["path"]] if isinstance(c, dict) else c for c in row]
            for row in table["data"]]


def _with_client(fragment: Any, client_id: str) -> dict[str, Any] | None:
    return next((a for a in fragment.artifacts if a.get("client_id") == client_id), None)


def test_rebin_merges_adjacent_bins() -> None:
    edges = [float(i) for i in range(1001)]
    counts = [1.0] * 1000
    e, c = rebin(edges, counts)
    assert len(c) == 500 and len(e) == 501  # k = 2
    assert e[0] == 0.0 and e[-1] == 1000.0 and sum(c) == 1000.0
    assert set(e) <= set(edges)
    e, c = rebin(edges[:514], counts[:513])  # k = 2, last bin alone
    assert len(c) == 257 and c[-1] == 1.0 and e[-1] == 513.0
    assert rebin([0.0, 1.0], [3.0]) == ([0.0, 1.0], [3.0])


def test_every_media_type_lands_in_its_row(out: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ev = Events(run.run_id)
    img = png(1)
    cells = [png(2, 4, 4), png(3, 4, 4)]
    wav = wav_from_array(np.linspace(-1, 1, 800), 8000)[0]
    gif = gif_from_frames(np.zeros((3, 3, 8, 8), np.uint8), 4)[0]
    html = b"<html><body><b>unchanged</b></body></html>"
    pts = json.dumps([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]).encode()
    edges = [i / 10 for i in range(1001)]
    counts = [float(i % 7) for i in range(1000)]
    table = {"columns": ["id", "img"], "rows": [
        [i, {"media": media_payload("image", [item(run, c, "image/png", f"c{i}.png")])}]
        for i, c in enumerate(cells)]}
    batch = [
        ev.metric("loss", 3, 0.5, T0 + 3000),
        ev("media", "samples", step=3, ts=T0 + 3000, payload=media_payload(
            "image", [item(run, img, "image/png", "samples.png", caption="a cat",
                           width=12, height=8)])),
        ev("media", "pair", step=3, ts=T0 + 3000, payload=media_payload(
            "image", [item(run, cells[0], "image/png", "a.png"),
                      item(run, cells[1], "image/png", "b.png")])),
        ev("media", "weights", step=4, ts=T0 + 4000, payload=media_payload(
            "histogram", data={"edges": edges, "counts": counts})),
        ev("media", "small_hist", step=4, ts=T0 + 4000, payload=media_payload(
            "histogram", data={"edges": [0.0, 1.0, 3.0], "counts": [2.0, 5.0]})),
        ev("media", "preds", step=5, ts=T0 + 5000, payload=media_payload("table", data=table)),
        ev("media", "note", step=5, ts=T0 + 5000, payload=media_payload(
            "text", data={"text": "epoch five"})),
        ev("media", "clip", step=6, ts=T0 + 6000, payload=media_payload(
            "audio", [item(run, wav, "audio/wav", "clip.wav", sample_rate=8000)])),
        ev("media", "movie", step=6, ts=T0 + 6000, payload=media_payload(
            "video", [item(run, gif, "image/gif", "movie.gif", fps=4)])),
        ev("media", "page", step=7, ts=T0 + 7000, payload=media_payload(
            "html", [item(run, html, "text/html", "page.html")])),
        ev("media", "cloud", step=7, ts=T0 + 7000, payload=media_payload(
            "object3d", [item(run, pts, "application/json", "cloud.pts.json")])),
        ev("media", "pr", step=8, ts=T0 + 8000, payload=media_payload(
            "curve", data={"x": [0.0, 0.5, 1.0], "y": [1.0, 0.8, 0.2], "name": "pr"})),
        ev("media", "raw", step=8, ts=T0 + 8000, payload=media_payload(
            "tensor", data={"dtype": "float32", "shape": [2], "values": [1.0, 2.0]})),
    ]
    (res,) = sync(out, tmp_path, run, batch, close="FINISHED")
    assert res.outcome is Outcome.SUCCESS and not res.rejected

    back = read_back(out, run.run_id)
    # image: the stored PNG, byte for byte, in the row of step 3 with the metric of the call
    (row,) = rows_with(back, "samples")
    assert row["bridge/step"] == 3 and row["_timestamp"] == pytest.approx((T0 + 3000) / 1000)
    assert row["loss"] == 0.5
    d = row["samples"]
    assert d["_type"] == "image-file" and d["caption"] == "a cat"
    assert (d["width"], d["height"]) == (12, 8)
    assert sha(file_of(out, back, d["path"])) == sha(img) == d["sha256"]
    pair = row["pair"]
    assert pair["_type"] == "images/separated" and pair["count"] == 2
    assert [sha(file_of(out, back, p)) for p in pair["filenames"]] == [sha(c) for c in cells]
    # histograms: over 512 bins re-binned (adjacent pairs merged), else kept as given
    (row,) = rows_with(back, "weights")
    assert row["bridge/step"] == 4
    h = row["weights"]
    assert h["_type"] == "histogram" and len(h["values"]) == 500 and len(h["bins"]) == 501
    assert sum(h["values"]) == sum(counts) and h["bins"][0] == 0.0 and h["bins"][-1] == 100.0
    assert row["small_hist"]["bins"] == [0.0, 1.0, 3.0]
    assert row["small_hist"]["values"] == [2, 5]
    # table: the real images in W&B's run-table artifact; text: the string itself
    (row,) = rows_with(back, "preds")
    assert row["bridge/step"] == 5 and row["note"] == "epoch five"
    t = row["preds"]
    assert t["_type"] == "table-file" and (t["nrows"], t["ncols"]) == (2, 2)
    got = table_artifact_cells(back, t)
    assert [r[0] for r in got] == [0, 1]
    assert [sha(r[1]) for r in got] == [sha(c) for c in cells]
    # audio, video, html (not rewritten), object3d: the stored bytes
    (row,) = rows_with(back, "clip")
    assert row["bridge/step"] == 6 and row["clip"]["_type"] == "audio-file"
    assert file_of(out, back, row["clip"]["path"]) == wav
    assert row["movie"]["_type"] == "video-file"
    assert file_of(out, back, row["movie"]["path"]) == gif
    (row,) = rows_with(back, "page")
    assert row["page"]["_type"] == "html-file" and file_of(out, back, row["page"]["path"]) == html
    assert row["cloud"]["_type"] == "object3D-file"
    assert file_of(out, back, row["cloud"]["path"]) == pts
    # curve: a table of its points
    (row,) = rows_with(back, "pr")
    assert row["bridge/step"] == 8 and row["pr"]["_type"] == "table-file"
    rows = json.loads(file_of(out, back, row["pr"]["path"]))
    assert rows["columns"] == ["x", "y", "name"]
    assert rows["data"] == [[0.0, 1.0, "pr"], [0.5, 0.8, "pr"], [1.0, 0.2, "pr"]]
    # tensor: no W&B history type; a run file with the step in its path
    assert "raw" not in {k for r in back.history for k in r}
    (tensor,) = [k for k in back.files if k.startswith("bridge/media/tensor/8/")]
    assert tensor == f"bridge/media/tensor/8/{T0 + 8000}/raw/0-tensor.json"
    assert json.loads(back.files[tensor]) == {"dtype": "float32", "shape": [2],
                                              "values": [1.0, 2.0]}
    assert not (out / ".media-staging").exists() or not any((out / ".media-staging").iterdir())


def test_stepless_media_are_numbered_and_bad_media_rejected(out: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ev = Events(run.run_id)
    good = [ev("media", "note", ts=T0 + i, payload=media_payload("text", data={"text": t}))
            for i, t in enumerate(["a", "b"])]
    missing = ev("media", "gone", step=1, payload=media_payload(
        "image", [media_item("0" * 64, 10, "image/png", "gone.png")]))
    svg = ev("media", "svg", step=1, payload=media_payload(
        "image", [item(run, b"<svg/>", "image/svg+xml", "x.svg")]))
    reserved = ev("media", "_hidden", step=1, payload=media_payload("text", data={"text": "x"}))
    # refused by the SDK itself while the session writes (wandb.Html reads UTF-8 only)
    latin = ev("media", "page", step=1, payload=media_payload(
        "html", [item(run, b"<p>caf\xe9</p>", "text/html", "p.html")]))
    jpeg = ev("media", "photo", step=1, payload=media_payload(
        "image", [item(run, jpeg_bytes(), "image/jpeg", "photo.jpg")]))
    (res,) = sync(out, tmp_path, run, [*good, missing, svg, reserved, latin, jpeg])
    assert res.outcome is Outcome.SUCCESS
    assert set(res.rejected) == {missing.uid, svg.uid, reserved.uid, latin.uid}
    assert "missing" in res.rejected[missing.uid] and "svg" in res.rejected[svg.uid]
    assert "UnicodeDecodeError" in res.rejected[latin.uid]
    back = read_back(out, run.run_id)
    assert [(r["bridge/step"], r["note"]) for r in rows_with(back, "note")] == [(0, "a"), (1, "b")]
    (row,) = rows_with(back, "photo")  # a JPEG stays the JPEG it was: W&B copies the file
    assert row["photo"]["format"] == "jpg"
    assert file_of(out, back, row["photo"]["path"]) == jpeg_bytes()
    assert not rows_with(back, "page")


def jpeg_bytes() -> bytes:
    import io

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.full((4, 6, 3), 90, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_boxes_of_a_wandb_image_go_back_to_wandb(out: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ev = Events(run.run_id)
    box = {"position": {"minX": 0.1, "maxX": 0.5, "minY": 0.2, "maxY": 0.6}, "class_id": 1,
           "box_caption": "cat"}
    source = {"vendor": "wandb", "descriptor": {"_type": "image-file", "boxes": {
        "predictions": {"box_data": [box], "class_labels": {"1": "cat"}}}}}
    e = ev("media", "det", step=1, payload=media_payload(
        "image", [item(run, png(5), "image/png", "det.png")], source=source))
    (res,) = sync(out, tmp_path, run, [e])
    assert not res.rejected
    (row,) = rows_with(read_back(out, run.run_id), "det")
    d = row["det"]
    assert d["_type"] == "image-file" and "predictions" in d["boxes"]
    assert sha(file_of(out, read_back(out, run.run_id), d["path"])) == sha(png(5))


def test_a_value_wandb_fails_to_log_is_rejected_and_the_row_kept(tmp_path: Path) -> None:
    from bridge.adapters.wandb.media_out import MediaValue, SessionMedia

    class Wb:
        rows: list = []

        def log(self, row: dict) -> None:
            if "bad" in row:
                raise OSError("disk full")
            self.rows.append(row)

    media = SessionMedia(object(), lambda sha: tmp_path / sha, tmp_path / "staging")
    bad = MediaValue(("f", 1), "bad", media_payload("text", data={"text": "t"}))
    wb = Wb()
    media.log(wb, {"bridge/step": 1, "_timestamp": 1.0, "loss": 0.5, "bad": bad})
    assert wb.rows == [{"bridge/step": 1, "_timestamp": 1.0, "loss": 0.5}]
    assert "disk full" in media.failed[("f", 1)]
    with pytest.raises(OSError):  # a row without media fails the session, as before
        media.log(wb, {"bad": 1.0})


def test_check_media_explains_refusals(tmp_path: Path) -> None:
    def blob(sha: str) -> Path:
        return tmp_path / sha

    assert "histogram" in check_media(media_payload("histogram", data={"edges": [0.0],
                                                                      "counts": [1.0]}), blob)
    assert "missing" in check_media(media_payload("file", [
        media_item("1" * 64, 1, "application/octet-stream", "x.bin")]), blob)
    nested = media_payload("table", data={"columns": ["t"], "rows": [[{"media": media_payload(
        "table", data={"columns": [], "rows": []})}]]})
    assert "nest" in check_media(nested, blob)
    big = media_payload("table", data={"columns": ["n"], "rows": [[i] for i in range(200_001)]})
    assert "200,000 rows" in check_media(big, blob)


def test_replayed_media_batch_adds_no_duplicates(out: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ev = Events(run.run_id)
    img = png(7)
    b1 = [ev.metric("loss", 0, 1.0, T0)]
    b2 = [
        ev("media", "samples", step=1, ts=T0 + 1000, payload=media_payload(
            "image", [item(run, img, "image/png", "s.png")])),
        ev("media", "note", step=1, ts=T0 + 1000, payload=media_payload(
            "text", data={"text": "once"})),
        ev("media", "h", step=1, ts=T0 + 1000, payload=media_payload(
            "histogram", data={"edges": [0.0, 1.0], "counts": [4.0]})),
        ev.metric("loss", 1, 0.5, T0 + 1000),
        ev("media", "blob", step=1, ts=T0 + 1000, payload=media_payload(
            "file", [item(run, b"raw bytes", "application/octet-stream", "r.bin")])),
    ]
    sync(out, tmp_path, run, b1)
    saved = json.loads(json.dumps(run.state))  # the agent saved this with its cursor
    sync(out, tmp_path, run, b2)  # W&B wrote b2; the agent died before saving
    replay = make_run(tmp_path, run_id=run.run_id, state=copy.deepcopy(saved))
    (res,) = sync(out, tmp_path, replay, b2, close="FINISHED")
    assert res.outcome is Outcome.SUCCESS and not res.rejected
    back = read_back(out, run.run_id)
    for key in ("samples", "note", "h", "loss"):
        assert len(rows_with(back, key)) == (2 if key == "loss" else 1), key
    (row,) = rows_with(back, "samples")
    assert sha(file_of(out, back, row["samples"]["path"])) == sha(img)
    assert back.exit_code == 0
    # the run file of a file event is not saved again by the replay
    (_, lost, replayed) = back.fragments  # b1, b2 (its SUCCESS lost), the replay of b2
    assert [f for f in lost.files if f.startswith("bridge/media/")] == [
        f"bridge/media/file/1/{T0 + 1000}/blob/0-r.bin"]
    assert not [f for f in replayed.files if f.startswith("bridge/media/")]
    from bridge.adapters.wandb.importer import WandbImporter

    imp = WandbImporter(out)
    (src,) = list(imp.runs())
    media = [e for e in imp.events(src) if e.kind == "media"]
    assert sorted(e.key for e in media) == ["blob", "h", "note", "samples"]


def test_delivered_media_import_back_as_they_were(out: Path, tmp_path: Path) -> None:
    """What ``bridge verify`` reads: the adapter's run dir imported with bridge's W&B
    importer gives the same media at the same steps and times, with the same bytes."""
    from bridge.adapters.wandb.importer import WandbImporter

    run = make_run(tmp_path)
    ev = Events(run.run_id)
    img, cell = png(11), png(12, 4, 4)
    table = {"columns": ["n", "img"], "rows": [
        [1, {"media": media_payload("image", [item(run, cell, "image/png", "c.png")])}]]}
    batch = [
        ev("media", "samples", step=2, ts=T0 + 2000, payload=media_payload(
            "image", [item(run, img, "image/png", "s.png", caption="c")])),
        ev("media", "h", step=2, ts=T0 + 2000, payload=media_payload(
            "histogram", data={"edges": [0.0, 1.0, 2.0], "counts": [3.0, 4.0]})),
        ev("media", "t", step=3, ts=T0 + 3000, payload=media_payload("table", data=table)),
        ev("media", "note", step=4, ts=T0 + 4000, payload=media_payload(
            "text", data={"text": "hello"})),
        ev("media", "mesh/raw", step=5, ts=T0 + 5000, payload=media_payload(
            "file", [item(run, b"\x00mesh", "application/octet-stream", "m.bin"),
                     item(run, b"\x01mesh", "application/octet-stream", "n.bin")])),
        ev("media", "pr", step=5, ts=T0 + 5000, payload=media_payload(
            "tensor", data={"dtype": "float64", "shape": [1], "values": [0.5]})),
        ev("media", "roc", step=6, ts=T0 + 6000, payload=media_payload(
            "curve", data={"x": [0.0, 1.0], "y": [0.0, 0.9], "name": "roc"})),
        ev("media", "xy", step=6, ts=T0 + 6000, payload=media_payload(
            "curve", data={"x": [1, 2], "y": [3, 4]})),
    ]
    sync(out, tmp_path, run, batch[:3])
    sync(out, tmp_path, run, batch[3:], close="FINISHED")
    imp = WandbImporter(out)
    (src,) = list(imp.runs())
    got = {e.key: e for e in imp.events(src) if e.kind == "media"}
    assert imp.warnings == []
    assert {k: (e.step, e.ts_ms) for k, e in got.items()} == {
        "samples": (2, T0 + 2000), "h": (2, T0 + 2000), "t": (3, T0 + 3000),
        "note": (4, T0 + 4000), "mesh/raw": (5, T0 + 5000), "pr": (5, T0 + 5000),
        "roc": (6, T0 + 6000), "xy": (6, T0 + 6000)}
    assert got["roc"].payload["type"] == "curve"
    assert got["roc"].payload["data"] == {"x": [0.0, 1.0], "y": [0.0, 0.9], "name": "roc"}
    assert got["xy"].payload["data"] == {"x": [1, 2], "y": [3, 4]}
    raw = got["mesh/raw"]
    assert [i["name"] for i in raw.payload["items"]] == ["m.bin", "n.bin"]
    assert [Path(f).read_bytes() for _, f in raw.files] == [b"\x00mesh", b"\x01mesh"]
    assert got["pr"].payload["data"] == {"dtype": "float64", "shape": [1], "values": [0.5]}
    (ref, f), = got["samples"].files
    assert sha(Path(f).read_bytes()) == sha(img)
    assert got["samples"].payload["items"][0]["caption"] == "c"
    assert got["h"].payload["data"] == {"edges": [0.0, 1.0, 2.0], "counts": [3.0, 4.0]}
    rows = got["t"].payload["data"]["rows"]
    assert rows[0][0] == 1 and rows[0][1]["media"]["type"] == "image"
    files = dict(got["t"].files)
    assert Path(files[rows[0][1]["media"]["items"][0]["file"]]).read_bytes() == cell
    assert got["note"].payload["data"] == {"text": "hello"}
