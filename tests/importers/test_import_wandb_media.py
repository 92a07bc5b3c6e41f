"""W&B media imported from offline run dirs written by the real wandb SDK: each history
media value joined with its file as a media event at its step, tables with their images."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("wandb")
pytest.importorskip("numpy")
pytest.importorskip("PIL")

from bridge.adapters.importing import ImportEvent  # noqa: E402
from bridge.adapters.wandb.importer import WandbImporter  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.spool.blobs import blob_path  # noqa: E402

SCRIPT = textwrap.dedent(
    """
    import json, sys, wave, numpy as np, wandb
    from PIL import Image
    out = sys.argv[1]
    settings = wandb.Settings(silent=True, console="off", disable_git=True,
        disable_code=True, x_disable_stats=True, x_disable_meta=True,
        x_disable_machine_info=True, x_save_requirements=False)
    rng = np.random.default_rng(0)
    def png(name, seed, size=(6, 5)):
        arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(f"{out}/{name}")
        return f"{out}/{name}"
    with wave.open(f"{out}/clip.wav", "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
        w.writeframes(bytes(range(256)) * 4)
    frames = [Image.fromarray(np.full((8, 8, 3), i * 60, np.uint8)) for i in range(3)]
    frames[0].save(f"{out}/movie.gif", save_all=True, append_images=frames[1:], duration=250)
    with open(f"{out}/page.html", "w") as f:
        f.write("<p>kept as written</p>")
    with open(f"{out}/cloud.pts.json", "w") as f:
        json.dump([[0, 0, 0], [1, 2, 3]], f)
    run = wandb.init(project="media", id="media01", mode="offline", dir=out, settings=settings)
    box = {"position": {"minX": 0.1, "maxX": 0.5, "minY": 0.2, "maxY": 0.6}, "class_id": 1}
    for step in range(2):
        run.log({"loss": 1.0 / (step + 1),
                 "sample": wandb.Image(png(f"s{step}.png", step), caption=f"step {step}"),
                 "note": f"text at {step}"}, step=step)
    run.log({"det": wandb.Image(png("d.png", 30), boxes={"predictions": {
        "box_data": [box], "class_labels": {1: "cat"}}})}, step=1)
    run.log({"pair": [wandb.Image(png("p0.png", 10)), wandb.Image(png("p1.png", 11))],
             "weights": wandb.Histogram(np_histogram=([1, 4, 2], [0.0, 0.5, 1.0, 2.0]))},
            step=2)
    table = wandb.Table(columns=["id", "img"],
                        data=[[i, wandb.Image(png(f"t{i}.png", 20 + i, (4, 4)))] for i in range(2)])
    run.log({"preds": table, "clip": wandb.Audio(f"{out}/clip.wav", caption="hum"),
             "movie": wandb.Video(f"{out}/movie.gif"),
             "page": wandb.Html(f"{out}/page.html", inject=False),
             "cloud": wandb.Object3D(f"{out}/cloud.pts.json")}, step=3)
    run.finish()
    """
)


def write_corpus(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(out),
               WANDB_CONFIG_DIR=str(out / "cfg"), WANDB_CACHE_DIR=str(out / "cache"),
               WANDB_DATA_DIR=str(out / "data"), WANDB_ARTIFACT_DIR=str(out / "arts"),
               HOME=str(out / "home"))
    env.pop("WANDB_API_KEY", None)
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("wandb_media"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content(f: Path | bytes) -> bytes:
    return f if isinstance(f, bytes) else Path(f).read_bytes()


def media(events: list[ImportEvent], key: str) -> list[ImportEvent]:
    return [e for e in events if e.kind == "media" and e.key == key]


def files_of(ev: ImportEvent) -> dict[str, bytes]:
    return {ref: content(f) for ref, f in ev.files}


def test_history_media_are_joined_with_their_files(corpus: Path) -> None:
    imp = WandbImporter(corpus)
    (run,) = list(imp.runs())
    events = list(imp.events(run))
    # images at their steps, with the bytes of the file the user logged
    samples = media(events, "sample")
    assert [e.step for e in samples] == [0, 1]
    for e in samples:
        (ref, data), = files_of(e).items()
        assert data == (corpus / f"s{e.step}.png").read_bytes()
        (item,) = e.payload["items"]
        assert item["file"] == ref and item["mime"] == "image/png"
        assert item["caption"] == f"step {e.step}" and (item["width"], item["height"]) == (6, 5)
        assert e.payload["source"]["vendor"] == "wandb"
        assert e.payload["source"]["descriptor"]["_type"] == "image-file"
    loss = {e.step: e.ts_ms for e in events if e.kind == "metric" and e.key == "loss"}
    assert {e.step: e.ts_ms for e in samples} == loss  # the row's own time
    # a text series, not an event
    assert [(e.step, e.payload["data"]) for e in media(events, "note")] == [
        (0, {"text": "text at 0"}), (1, {"text": "text at 1"})]
    (pair,) = media(events, "pair")
    assert pair.step == 2 and len(pair.payload["items"]) == 2
    assert [sha(files_of(pair)[i["file"]]) for i in pair.payload["items"]] == [
        sha((corpus / f"p{n}.png").read_bytes()) for n in range(2)]
    (det,) = media(events, "det")  # bounding boxes inline, from W&B's boxes2D file
    assert det.payload["source"]["descriptor"]["boxes"]["predictions"] == {
        "box_data": [{"position": {"minX": 0.1, "maxX": 0.5, "minY": 0.2, "maxY": 0.6},
                      "class_id": 1}], "class_labels": {"1": "cat"}}
    (hist,) = media(events, "weights")
    assert hist.payload["data"] == {"edges": [0.0, 0.5, 1.0, 2.0], "counts": [1.0, 4.0, 2.0]}
    # a table with its real images, from the run-table artifact W&B staged
    (table,) = media(events, "preds")
    assert table.step == 3 and table.payload["data"]["columns"] == ["id", "img"]
    rows = table.payload["data"]["rows"]
    assert [r[0] for r in rows] == [0, 1]
    got = files_of(table)
    for n, row in enumerate(rows):
        cell = row[1]["media"]
        assert cell["type"] == "image"
        assert got[cell["items"][0]["file"]] == (corpus / f"t{n}.png").read_bytes()
    for key, kind, name in [("clip", "audio", "clip.wav"), ("movie", "video", "movie.gif"),
                            ("page", "html", "page.html"), ("cloud", "object3d", "cloud.pts.json")]:
        (ev,) = media(events, key)
        assert ev.step == 3 and ev.payload["type"] == kind, key
        (data,) = files_of(ev).values()
        assert data == (corpus / name).read_bytes(), key
    (clip,) = media(events, "clip")
    assert clip.payload["items"][0]["caption"] == "hum"
    # nothing arrives a second time as a disconnected file or table artifact
    assert not [e for e in events if e.kind == "artifact" and ("media" in (e.key or "")
                                                                 or e.artifact_type == "run_table")]
    assert not [e for e in events if e.kind == "event"]
    # W&B's automatic summary of a media key (its last value) is not a summary
    assert not {e.key for e in events if e.kind == "summary"} & {"sample", "note", "preds"}
    assert imp.warnings == []


def test_media_through_the_sink_land_in_the_blob_store(corpus: Path, tmp_path: Path) -> None:
    (result,) = import_runs(WandbImporter(corpus), tmp_path)
    conn = sqlite3.connect(result.path)
    rows = conn.execute("SELECT key, step, payload FROM events WHERE kind='media' "
                        "ORDER BY key, step").fetchall()
    by_key = {(k, s): json.loads(p) for k, s, p in rows}
    sample = by_key[("sample", 1)]
    (item,) = sample["items"]
    stored = blob_path(tmp_path, item["sha256"]).read_bytes()
    assert stored == (corpus / "s1.png").read_bytes() and item["size"] == len(stored)
    cell = by_key[("preds", 3)]["data"]["rows"][1][1]["media"]["items"][0]
    assert blob_path(tmp_path, cell["sha256"]).read_bytes() == (corpus / "t1.png").read_bytes()


def test_table_without_its_staged_artifact_warns(tmp_path: Path) -> None:
    own = write_corpus(tmp_path / "own")
    shutil.rmtree(own / "data")  # W&B's artifact staging (WANDB_DATA_DIR) is gone
    imp = WandbImporter(own)
    (run,) = list(imp.runs())
    events = list(imp.events(run))
    (table,) = media(events, "preds")
    assert [r[1] for r in table.payload["data"]["rows"]] == ["Image", "Image"]
    assert not table.files
    (warning,) = [w for w in imp.warnings if "placeholder" in w]
    assert "'preds' at step 3" in warning and "2 media cell(s)" in warning
    # the run-table artifact itself cannot be imported either, and says so
    assert [w for w in imp.warnings if "run-media01-preds" in w and "no local copy" in w]
    assert len(media(events, "sample")) == 2  # everything else still joined


def test_missing_media_file_is_a_counted_warning(corpus: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(corpus / "wandb", copy)
    (session,) = [d for d in copy.iterdir() if d.name.startswith("offline-run-")]
    s1 = (corpus / "s1.png").read_bytes()  # W&B's own file names do not follow the step
    (gone,) = [p for p in (session / "files" / "media" / "images").iterdir()
               if p.read_bytes() == s1]
    gone.unlink()
    imp = WandbImporter(copy)
    (run,) = list(imp.runs())
    events = list(imp.events(run))
    assert [e.step for e in media(events, "sample")] == [0]
    assert [w for w in imp.warnings if "'sample' at step 1" in w]
    # the staged table is outside the copy, and read because its MD5 matches the manifest
    assert len(media(events, "preds")[0].files) == 2
