"""Comet media imported as bridge media events: archives written by comet_ml's own
OfflineExperiment, archives bridge's Comet adapter wrote (back whole), and archives whose
media cannot be read (a counted, visible reason each)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

comet_ml = pytest.importorskip("comet_ml")
np = pytest.importorskip("numpy")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402

from bridge.adapters.comet import names  # noqa: E402
from bridge.adapters.comet.importer import CometImporter  # noqa: E402
from bridge.adapters.comet.media_in import comet_bin_edges, histogram_from_comet  # noqa: E402
from bridge.adapters.importing import ImportEvent  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.media.encode import array_to_png, gif_from_frames, wav_from_array  # noqa: E402

T0 = 1_700_000_000_000
KEY = "abcdefabcdefabcdefabcdefabcdef12"
RID = "0123456789abcdef0123456789abcdef"
VALUES = [0.1, 0.5, 0.5, 2.0, -3.0]
_QUIET = dict(log_code=False, log_graph=False, parse_args=False, display_summary_level=0,
              log_git_metadata=False, log_git_patch=False, log_env_details=False,
              log_env_gpu=False, log_env_host=False, log_env_cpu=False, log_env_network=False,
              log_env_disk=False, auto_output_logging=False, auto_param_logging=False,
              auto_metric_logging=False)


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMET_API_KEY", "dummy")
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")
    for var in ("COMET_OFFLINE_DIRECTORY", "COMET_PROJECT_NAME", "COMET_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)


def _image(step: int) -> Any:
    return (np.arange(8 * 6 * 3).reshape(8, 6, 3) * (step + 1) % 256).astype(np.uint8)


def _native(directory: Path, work: Path) -> None:
    """One experiment with every media call comet_ml has, written by its OfflineExperiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    gif, *_ = gif_from_frames(np.zeros((2, 8, 8, 3), np.uint8), 2.0)
    (work / "clip.gif").write_bytes(gif)
    cfg = comet_ml.ExperimentConfig(offline_directory=str(directory), **_QUIET)
    exp = comet_ml.start(project_name="native", experiment_key=KEY, mode="get_or_create",
                         online=False, experiment_config=cfg)
    for s in range(3):
        exp.log_image(_image(s), name="samples", step=s, image_minmax=(0, 255))
    fig = plt.figure()
    plt.plot([1, 2, 3])
    exp.log_figure(figure_name="loss curve", figure=fig, step=4)
    plt.close(fig)
    exp.log_histogram_3d(np.array(VALUES), name="weights", step=5)
    exp.log_audio(np.sin(np.arange(800) / 10).astype(np.float32) * 0.5, sample_rate=8000,
                  file_name="tone.wav", step=6)
    exp.log_video(str(work / "clip.gif"), name="clip.gif", step=7)
    exp.log_curve("roc", x=[0, 0.5, 1], y=[0, 0.8, 1], step=8)
    exp.log_confusion_matrix(y_true=[0, 1, 1], y_predicted=[0, 1, 0], labels=["cat", "dog"],
                             step=9)
    exp.log_html("<b>report</b>")
    exp.log_text("a sample", step=10, metadata={"m": 1})
    exp.log_table("preds.csv", [[1, "a"], [2, "b"]], headers=["id", "label"])
    exp.log_table("frame.json", pd.DataFrame({"x": [1, 2], "y": ["u", "v"]}))
    exp.end()


def _members(directory: Path) -> dict[tuple[str, Any], bytes]:
    """(upload_type, name) -> the bytes comet_ml wrote into its archive."""
    out = {}
    for path in directory.glob("*.zip"):
        with zipfile.ZipFile(path) as zf:
            for line in zf.read("messages.json").decode().splitlines():
                msg = json.loads(line)
                if msg["type"] == "file_upload":
                    p, extra = msg["payload"], msg["payload"]["additional_params"]
                    name = extra.get("fileName") or extra.get("figName")
                    out[(p["upload_type"], name, extra.get("step"))] = zf.read(p["file_path"])
    return out


def _read(imp: CometImporter) -> list[tuple[ImportEvent, dict[str, bytes]]]:
    """Every event with the bytes of its files, read while the importer's files exist."""
    (run,) = list(imp.runs())
    out = []
    for e in imp.events(run):
        files = {ref: c if isinstance(c, bytes) else Path(c).read_bytes() for ref, c in e.files}
        out.append((e, files))
    return out


def _media(events: list[tuple[ImportEvent, dict[str, bytes]]]) -> dict[tuple, tuple]:
    return {(e.key, e.step): (e, files) for e, files in events if e.kind == "media"}


# --- archives comet_ml wrote --------------------------------------------------------------


def test_comet_media_become_media_events(tmp_path: Path) -> None:
    _native(tmp_path / "arch", tmp_path)
    members = _members(tmp_path / "arch")
    imp = CometImporter(tmp_path / "arch")
    events = _read(imp)
    media = _media(events)
    assert imp.warnings == []
    assert not [e for e, _ in events if e.kind in ("artifact", "event")]  # nothing misfiled

    for s in range(3):  # log_image: the PNG comet_ml wrote, at its step
        e, files = media[("samples", s)]
        (item,) = e.payload["items"]
        assert e.payload["type"] == "image" and item["mime"] == "image/png"
        assert (item["width"], item["height"]) == (6, 8)
        assert files[item["file"]] == members[("visualization", "samples", s)]
        assert e.payload["source"]["descriptor"]["upload_type"] == "visualization"
        with Image.open(io.BytesIO(files[item["file"]])) as img:
            assert np.array_equal(np.asarray(img.convert("RGB")), _image(s))

    e, files = media[("loss curve", 4)]  # log_figure: matplotlib's SVG, refused before
    (item,) = e.payload["items"]
    assert item["mime"] == "image/svg+xml" and item["name"] == "loss curve.svg"
    assert files[item["file"]] == members[("visualization", "loss curve", 4)]

    e, _ = media[("weights", 5)]  # log_histogram_3d: Comet's bins as edges and counts
    data = e.payload["data"]
    assert e.payload["type"] == "histogram" and sum(data["counts"]) == len(VALUES)
    assert len(data["edges"]) == len(data["counts"]) + 1
    for v in VALUES:  # every value lies in a counted bin
        assert any(lo <= v <= hi and c for lo, hi, c in zip(data["edges"], data["edges"][1:],
                                                             data["counts"]))
    assert e.payload["source"]["descriptor"]["json"]["index_values"]

    e, files = media[("tone", 6)]
    (item,) = e.payload["items"]
    assert (e.payload["type"], item["mime"], item["name"], item["sample_rate"]) == (
        "audio", "audio/wav", "tone.wav", 8000)
    assert files[item["file"]] == members[("audio", "tone.wav", 6)]

    e, files = media[("clip", 7)]
    (item,) = e.payload["items"]
    assert (e.payload["type"], item["mime"]) == ("video", "image/gif")
    assert files[item["file"]] == (tmp_path / "clip.gif").read_bytes()

    e, _ = media[("roc", 8)]
    assert (e.payload["type"], e.payload["data"]) == ("curve", {"x": [0, 0.5, 1],
                                                               "y": [0, 0.8, 1]})

    e, _ = media[("confusion-matrix", 9)]
    assert e.payload["type"] == "table"
    assert e.payload["data"] == {"columns": ["Actual Category", "cat", "dog"],
                                 "rows": [["cat", 1, 0], ["dog", 1, 1]]}

    e, files = media[(names.HTML_SERIES, None)]  # log_html: no step in Comet
    (item,) = e.payload["items"]
    assert (e.payload["type"], files[item["file"]]) == ("html", b"<b>report</b>")
    assert e.ts_ms > 0

    e, _ = media[(names.TEXT_SERIES, 10)]
    assert e.payload["data"] == {"text": "a sample"}
    assert e.payload["source"]["descriptor"]["metadata"] == {"m": 1}

    e, _ = media[("preds", 10)]  # log_table of rows (Comet's step was still 10)
    assert e.payload["data"] == {"columns": ["id", "label"], "rows": [[1, "a"], [2, "b"]]}
    e, _ = media[("frame", 10)]  # log_table of a DataFrame, as its JSON
    assert e.payload["data"] == {"columns": ["x", "y"], "rows": [[1, "u"], [2, "v"]]}


def test_comet_media_through_the_sink(tmp_path: Path) -> None:
    from bridge.spool.blobs import blob_path
    from bridge.spool.media import blob_items
    from bridge.spool.reader import find_run, iter_events

    _native(tmp_path / "arch", tmp_path)
    members = _members(tmp_path / "arch")
    (res,) = import_runs(CometImporter(tmp_path / "arch"), tmp_path / "spool")
    assert res.counts["media"] == 13 and "artifact" not in res.counts
    rec = find_run(tmp_path / "spool", res.run_id)
    got = {(e.key, e.step): e.payload for e in iter_events(rec.files, res.run_id)
           if e.kind == "media"}
    (item,) = blob_items(got[("samples", 1)])
    assert item["sha256"] == hashlib.sha256(members[("visualization", "samples", 1)]).hexdigest()
    assert blob_path(tmp_path / "spool", item["sha256"]).read_bytes() == members[
        ("visualization", "samples", 1)]


def test_comet_media_go_back_to_comet_in_their_own_form(tmp_path: Path) -> None:
    """Comet -> bridge -> Comet: the same image bytes, 3-D histogram bins and confusion
    matrix at the same steps, and ``bridge verify`` finds every media event whole."""
    from bridge.agent.sync import Syncer
    from bridge.verify import verify_run

    _native(tmp_path / "arch", tmp_path)
    before = _members(tmp_path / "arch")
    out = tmp_path / "out"
    (res,) = import_runs(CometImporter(tmp_path / "arch"), tmp_path / "spool",
                         backends=[{"name": "comet", "mode": "offline",
                                    "offline_directory": str(out)}])
    (result,) = Syncer(tmp_path / "spool").run_once().results
    assert result.error is None and result.pending == 0 and result.dead == 0, result
    after = _members(out)
    for key in [("visualization", "samples", s) for s in range(3)] + [
            ("histogram3d", "weights", 5), ("confusion-matrix", "confusion-matrix.json", 9),
            ("audio", "tone.wav", 6), ("curve", "roc", 8)]:
        assert key in after, key
        if key[0] in ("histogram3d", "confusion-matrix", "curve"):
            assert json.loads(after[key]) == json.loads(before[key]), key
        else:
            assert after[key] == before[key], key
    rep = verify_run(tmp_path / "spool", res.run_id, "comet")
    for field in ("media", "media_files", "media_data"):
        count = rep.fields[field]
        assert count.kept == count.expected > 0, (field, rep.per_key)


def test_histogram_bins_are_comets() -> None:
    index = comet_ml.Histogram()
    assert comet_bin_edges(1e-12, 1e20, 1.1, 0) == list(index.values)
    index.add(VALUES)
    data = histogram_from_comet(index.to_json())
    assert sum(data["counts"]) == len(VALUES)
    lo = min(i for i, c in enumerate(index.counts) if c)
    assert data["edges"][0] == index.values[lo]


# --- archives bridge wrote: back whole ----------------------------------------------------


def _blob(root: Path, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    (root / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha[:2] / sha).write_bytes(data)
    return {"sha256": sha, "size": len(data)}


def _without_files(payload: Any) -> Any:
    """A payload with every item reduced to what survives a trip (no blob or file ref)."""
    if isinstance(payload, list):
        return [_without_files(x) for x in payload]
    if isinstance(payload, dict):
        return {k: _without_files(v) for k, v in payload.items()
                if k not in ("sha256", "size", "file")}
    return payload


def test_bridge_written_media_come_back_whole(tmp_path: Path) -> None:
    from bridge.adapters.base import Event, RunInfo
    from bridge.adapters.comet import CometAdapter

    blobs = tmp_path / "blobs"
    png0, w, h = array_to_png(_image(0))
    png1, _, _ = array_to_png(_image(1))
    wav, _ = wav_from_array(np.sin(np.arange(400) / 7) * 0.3, 4000)
    img0 = {**_blob(blobs, png0), "mime": "image/png", "name": "a.png", "width": w, "height": h,
            "caption": "first"}
    img1 = {**_blob(blobs, png1), "mime": "image/png", "name": "b.png", "width": w, "height": h}
    big = {"edges": [float(x) for x in range(1201)], "counts": [float(x % 5) for x in range(1200)]}
    payloads = [
        ("samples", 2, {"type": "image", "items": [img0, img1], "data": None}),
        ("weights", None, {"type": "histogram", "items": [], "data": {
            "edges": [0.0, 0.5, 1.0], "counts": [2.0, 3.0]}}),
        ("wide", 3, {"type": "histogram", "items": [], "data": big}),
        ("preds", 4, {"type": "table", "items": [], "data": {
            "columns": ["id", "img", "ok"],
            "rows": [[1, {"media": {"type": "image", "items": [img1], "data": None}}, True],
                     [2, None, "07"]]}}),
        ("tone", 5, {"type": "audio", "items": [{**_blob(blobs, wav), "mime": "audio/wav",
                                                  "name": "tone.wav", "sample_rate": 4000}],
                     "data": None}),
        ("page", 6, {"type": "html", "items": [{**_blob(blobs, "<p>é -- ok</p>".encode()),
                                                 "mime": "text/html", "name": "page.html"}],
                     "data": None}),
        ("roc", 7, {"type": "curve", "items": [], "data": {"x": [0, 1], "y": [1, 0]}}),
        ("status", 8, {"type": "text", "items": [], "data": {"text": "epoch 8"}}),
        ("grad", 9, {"type": "tensor", "items": [], "data": {"dtype": "int8", "shape": [1],
                                                              "values": [3]}}),
    ]
    batch = [Event("f0", n, RID, "media", key, step, T0 + 10 * n, payload=p)
             for n, (key, step, p) in enumerate(payloads, start=1)]
    adapter = CometAdapter(mode="offline", offline_directory=str(tmp_path / "comet"),
                           spool_dir=str(tmp_path))
    info = RunInfo(run_id=RID, project="vision", blob_root=blobs, start_ms=T0)
    adapter.open_run(info)
    assert not adapter.export(info, batch).rejected
    adapter.close_run(info, "FINISHED", T0 + 999)
    adapter.shutdown()

    imp = CometImporter(tmp_path / "comet")
    media = _media(_read(imp))
    assert imp.warnings == []
    assert len(media) == len(batch)
    blob_bytes = {p.name: p.read_bytes() for p in blobs.rglob("*") if p.is_file()}
    for sent in batch:
        e, files = media[(sent.key, sent.step)]
        assert e.ts_ms == sent.ts_ms
        if sent.key == "wide":  # over MAX_META_DATA: Comet's own bins come back
            assert sum(e.payload["data"]["counts"]) == sum(big["counts"])
            continue
        assert _without_files(e.payload) == _without_files(sent.payload), sent.key
        for item, back in zip(sent.payload["items"], e.payload["items"]):
            assert files[back["file"]] == blob_bytes[item["sha256"]]
    e, files = media[("preds", 4)]
    cell = e.payload["data"]["rows"][0][1]["media"]["items"][0]
    assert files[cell["file"]] == png1


# --- what cannot be read: a counted, visible reason ---------------------------------------


def _archive(path: Path, messages: list[dict], members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("experiment.json", json.dumps({"offline_id": "odd1", "project_name": "p",
                                                   "start_time": T0, "tags": []}))
        zf.writestr("messages.json", "\n".join(json.dumps(m) for m in messages))
        for name, data in members.items():
            zf.writestr(name, data)


def _upload(member: str, upload_type: str, step: int, metadata: dict | None = None,
            **extra: Any) -> dict:
    return {"type": "file_upload", "payload": {
        "file_path": member, "upload_type": upload_type, "local_timestamp": T0 + step,
        "metadata": metadata or {}, "additional_params": {"step": step, **extra}}}


def test_unreadable_media_are_reported_and_kept(tmp_path: Path) -> None:
    marker = {names.META_MEDIA: {names.MEDIA_KEY: "pair", names.MEDIA_TYPE: "image",
                                 names.MEDIA_EVENT: "f0:1", names.MEDIA_TS: T0,
                                 names.MEDIA_STEP: 1, names.MEDIA_PART: 0, names.MEDIA_PARTS: 2,
                                 names.MEDIA_ITEM: {"mime": "image/png", "name": "a.png"}}}
    png0 = array_to_png(_image(0))[0]
    _archive(tmp_path / "odd1-x.zip", [
        _upload("a", "visualization", 1, figName="noise"),  # neither a known format nor bytes
        _upload("b", "histogram3d", 2, fileName="weights"),  # not Comet's histogram JSON
        _upload("c", "embeddings", 3),  # a kind of upload bridge does not know, no file name
        _upload("d", "visualization", 4, marker, figName="pair"),  # one part of two
        {"type": "html", "payload": {}},
    ], {"a": b"\x00\x01 not an image", "b": b"{not json", "c": b"[]", "d": png0})
    imp = CometImporter(tmp_path / "odd1-x.zip")
    (res,) = import_runs(imp, tmp_path / "spool")
    assert len(imp.warnings) == 5, imp.warnings
    text = "\n".join(imp.warnings)
    assert "'noise'" in text and "kept as a file" in text
    assert "'weights'" in text and "embeddings" in text and "without a file name" in text
    assert "1 of 2 parts" in text and "html message without a page" in text
    assert "unsafe artifact path" not in text
    assert res.counts["media"] == 3  # noise and weights as files, the pair's one image

    from bridge.spool.reader import find_run, iter_events

    rec = find_run(tmp_path / "spool", res.run_id)
    got = {(e.key, e.step): e.payload for e in iter_events(rec.files, res.run_id)
           if e.kind == "media"}
    assert got[("noise", 1)]["type"] == "file" and got[("weights", 2)]["type"] == "file"
    assert got[("pair", 1)]["type"] == "image" and len(got[("pair", 1)]["items"]) == 1
