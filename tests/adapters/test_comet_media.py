"""Media events delivered to Comet by the real comet_ml SDK in offline mode.

Each test opens the offline archive comet_ml wrote (``messages.json`` and the uploaded
members) and compares it with what was exported: image bytes, steps, the original times,
histogram bins, table cells, audio, video, html, curves and text samples.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

comet_ml = pytest.importorskip("comet_ml")
np = pytest.importorskip("numpy")
pytest.importorskip("PIL")

from bridge.adapters.base import Event, Outcome, RunInfo  # noqa: E402
from bridge.adapters.comet import CometAdapter, names  # noqa: E402
from bridge.media.encode import array_to_png, gif_from_frames, wav_from_array  # noqa: E402

RUN_ID = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMET_API_KEY", "dummy")
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")
    for var in ("COMET_OFFLINE_DIRECTORY", "COMET_PROJECT_NAME", "COMET_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)


# --- helpers -----------------------------------------------------------------------------


def put_blob(root: Path, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    (root / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha[:2] / sha).write_bytes(data)
    return {"sha256": sha, "size": len(data)}


class Events:
    """Media events with increasing (file_id, seq) and ts_ms, as the agent hands them."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, key: str, step: int | None, type: str, items: list | None = None,
                 data: Any = None, source: dict | None = None) -> Event:
        self.seq += 1
        payload = {"type": type, "items": items or [], "data": data}
        if source:
            payload["source"] = source
        return Event("f0", self.seq, RUN_ID, "media", key, step, T0 + 1000 * self.seq,
                     payload=payload)


@dataclass
class Upload:
    upload_type: str
    params: dict
    metadata: dict
    data: bytes
    ts: int

    @property
    def name(self) -> str | None:
        return self.params.get("fileName") or self.params.get("figName")

    @property
    def step(self) -> int | None:
        return self.params.get("step")

    @property
    def marker(self) -> dict:
        return self.metadata.get(names.META_MEDIA) or {}


@dataclass
class Archive:
    types: list[str]
    params: dict
    uploads: list[Upload]
    html: list[str]


def read(directory: Path, key: str = RUN_ID) -> Archive:
    """Every archive of the run, merged in write order (comet_ml's own files only)."""
    out = Archive([], {}, [], [])
    paths = sorted(directory.glob(f"{key}-*.zip"),
                   key=lambda p: json.loads(zipfile.ZipFile(p).read(names.LEDGER_NAME))[
                       names.LEDGER_ARCHIVE_SEQ])
    for path in paths:
        with zipfile.ZipFile(path) as zf:
            for line in zf.read("messages.json").decode("utf-8").splitlines():
                msg = json.loads(line)
                kind, p = msg["type"], msg["payload"]
                out.types.append(kind)
                if kind == "file_upload":
                    out.uploads.append(Upload(p["upload_type"], p.get("additional_params") or {},
                                              p.get("metadata") or {}, zf.read(p["file_path"]),
                                              p["local_timestamp"]))
                elif kind == "parameter_msg":
                    param = p.get("param") or p.get("params")
                    out.params[param["paramName"]] = param["paramValue"]
                elif kind == "html":
                    out.html.append(p["html"])
    return out


def export(tmp_path: Path, batch: list[Event]) -> Any:
    run = RunInfo(run_id=RUN_ID, project="vision", name="media", blob_root=tmp_path / "blobs",
                  start_ms=T0)
    adapter = CometAdapter(mode="offline", offline_directory=str(tmp_path / "comet"),
                           spool_dir=str(tmp_path))
    adapter.open_run(run)
    result = adapter.export(run, batch)
    adapter.close_run(run, "FINISHED", T0 + 99_999)
    adapter.shutdown()
    assert result.outcome is Outcome.SUCCESS, result
    return result


def png(seed: int) -> tuple[bytes, int, int]:
    arr = (np.arange(8 * 6 * 3).reshape(8, 6, 3) * (seed + 1) % 256).astype(np.uint8)
    return array_to_png(arr)


# --- every media type in its Comet form --------------------------------------------------


def test_each_media_type_becomes_its_comet_form(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    ev = Events()
    (png0, w, h), (png1, _, _) = png(0), png(1)
    img0 = {**put_blob(blobs, png0), "mime": "image/png", "name": "samples.png", "width": w,
            "height": h, "caption": "a cat"}
    img1 = {**put_blob(blobs, png1), "mime": "image/png", "name": "samples.png", "width": w,
            "height": h}
    wav, _ = wav_from_array(np.sin(np.arange(800) / 10) * 0.5, 8000)
    gif, *_ = gif_from_frames(np.zeros((3, 8, 8, 3), np.uint8), 2.0)
    webm = b"\x1aE\xdf\xa3" + b"\0" * 40
    page = "<p>héllo -- <b>world</b></p>"
    glb = b"glTF" + b"\1" * 20
    hist = {"edges": [-1.0, 0.0, 0.5, 2.0, 3.0], "counts": [2.0, 0.0, 5.0, 1.0]}
    batch = [
        ev("samples", 3, "image", [img0, img1]),
        ev("weights", 5, "histogram", data=hist),
        ev("preds", 6, "table", data={"columns": ["id", "image", "note"], "rows": [
            [1, {"media": {"type": "image", "items": [img1], "data": None}}, "a, b"],
            [2.5, None, True]]}),
        ev("tone", 7, "audio", [{**put_blob(blobs, wav), "mime": "audio/wav", "name": "tone.wav",
                                 "sample_rate": 8000}]),
        ev("clip", 8, "video", [{**put_blob(blobs, gif), "mime": "image/gif", "name": "clip.gif",
                                 "fps": 2}]),
        ev("movie", 8, "video", [{**put_blob(blobs, webm), "mime": "video/webm",
                                  "name": "movie.webm"}]),
        ev("page", 9, "html", [{**put_blob(blobs, page.encode()), "mime": "text/html",
                                "name": "page.html"}]),
        ev("roc", 10, "curve", data={"x": [0, 0.5, 1], "y": [0, 0.8, 1]}),
        ev("status", 11, "text", data={"text": "epoch 11"}),
        ev("grad", 12, "tensor", data={"dtype": "float32", "shape": [2], "values": [1.5, 2.0]}),
        ev("mesh", 13, "object3d", [{**put_blob(blobs, glb), "mime": "model/gltf-binary",
                                     "name": "mesh.glb"}]),
    ]
    export(tmp_path, batch)
    arch = read(tmp_path / "comet")
    by = {}
    for u in arch.uploads:
        by.setdefault(u.marker.get(names.MEDIA_KEY), []).append(u)

    # images: one log_image per item, named by the key, the very bytes, step, original time
    a, b = by["samples"]
    assert (a.upload_type, a.name, a.step, a.data, a.ts) == ("visualization", "samples", 3, png0,
                                                             batch[0].ts_ms)
    assert (b.name, b.step, b.data) == ("samples", 3, png1)
    assert a.params["extension"] == "png"
    assert a.metadata["caption"] == "a cat" and "caption" not in b.metadata
    assert a.marker[names.MEDIA_ITEM]["name"] == "samples.png"
    assert [a.marker[names.MEDIA_PART], b.marker[names.MEDIA_PART]] == [0, 1]
    assert a.marker[names.MEDIA_EVENT] == b.marker[names.MEDIA_EVENT] == "f0:1"

    # histogram: Comet's 3-D histogram at the step; each bin's count in the Comet bin of its
    # midpoint; the exact edges and counts ride in the metadata
    (hu,) = by["weights"]
    assert (hu.upload_type, hu.name, hu.step) == ("histogram3d", "weights", 5)
    body = json.loads(hu.data)
    index = comet_ml.Histogram()
    want: dict[int, int] = {}
    for i, c in enumerate(hist["counts"]):
        if c:
            mid = (hist["edges"][i] + hist["edges"][i + 1]) / 2
            want[index.get_bin_index(mid)] = want.get(index.get_bin_index(mid), 0) + int(c)
    assert {i: c for i, c in body["index_values"]} == want
    assert hu.marker[names.MEDIA_DATA] == hist and hu.ts == batch[1].ts_ms

    # table: <key>.csv at the step, media cells as their own image uploads named in the cell
    csv_up = [u for u in by["preds"] if u.upload_type == "asset"]
    cell_up = [u for u in by["preds"] if u.upload_type == "visualization"]
    assert [u.name for u in csv_up] == ["preds.csv"] and csv_up[0].step == 6
    assert list(csv.reader(io.StringIO(csv_up[0].data.decode()))) == [
        ["id", "image", "note"], ["1", "preds_0_1", "a, b"], ["2.5", "", "true"]]
    assert [(u.name, u.step, u.data) for u in cell_up] == [("preds_0_1", 6, png1)]
    assert cell_up[0].marker[names.MEDIA_CELL] == [0, 1]
    assert csv_up[0].marker[names.MEDIA_PARTS] == 2

    (au,) = by["tone"]
    assert (au.upload_type, au.name, au.step, au.data) == ("audio", "tone.wav", 7, wav)
    assert au.metadata["sample_rate"] == 8000
    (vu,) = by["clip"]
    assert (vu.upload_type, vu.name, vu.step, vu.data) == ("video", "clip.gif", 8, gif)
    (mu,) = by["movie"]  # log_video takes MP4, MOV, WMV and GIF only: WebM as an asset
    assert (mu.upload_type, mu.name, mu.step, mu.data) == ("asset", "movie.webm", 8, webm)

    # html: Comet's HTML tab, the page whole after bridge's marker comment
    (html,) = arch.html
    assert html.startswith(names.HTML_MARK) and html.endswith(names.HTML_MARK_END + page)
    mark = json.loads(html[len(names.HTML_MARK):html.index(names.HTML_MARK_END)])
    assert (mark[names.MEDIA_KEY], mark[names.MEDIA_STEP], mark[names.MEDIA_TS]) == (
        "page", 9, batch[6].ts_ms)
    assert "--" not in html[:html.index(names.HTML_MARK_END)][4:]  # a valid HTML comment

    (cu,) = by["roc"]
    assert (cu.upload_type, cu.name, cu.step) == ("curve", "roc", 10)
    assert json.loads(cu.data) == {"x": [0, 0.5, 1], "y": [0, 0.8, 1], "name": "roc"}
    (tu,) = by["status"]
    assert (tu.upload_type, tu.step, tu.data, tu.ts) == ("text-sample", 11, b"epoch 11",
                                                         batch[8].ts_ms)
    (gu,) = by["grad"]
    assert (gu.upload_type, gu.name, gu.step) == ("asset", "grad.json", 12)
    assert json.loads(gu.data) == batch[9].payload["data"]
    (ou,) = by["mesh"]
    assert (ou.upload_type, ou.name, ou.step, ou.data) == ("asset", "mesh.glb", 13, glb)

    # each upload at its event's original time; no step parameter logged by comet_ml
    ts = {f"f0:{e.seq}": e.ts_ms for e in batch}
    assert all(u.ts == ts[u.marker[names.MEDIA_EVENT]] for u in arch.uploads)
    assert "curr_step" not in arch.params


def test_histogram_without_step_and_with_many_bins(tmp_path: Path) -> None:
    ev = Events()
    edges = [float(x) for x in np.linspace(-5, 5, 2001)]
    counts = [float(i % 7) for i in range(2000)]
    batch = [ev("w", None, "histogram", data={"edges": edges, "counts": counts}),
             ev("z", 4, "histogram", data={"edges": [0.0, 1.0], "counts": [0.0]})]
    export(tmp_path, batch)
    arch = read(tmp_path / "comet")
    w = next(u for u in arch.uploads if u.name == "w")
    # Comet needs a step for a 3-D histogram: 0, the original (none) in the marker
    assert w.step == 0 and w.marker[names.MEDIA_STEP] is None
    assert names.MEDIA_DATA not in w.marker  # too large to copy into the metadata
    assert sum(c for _, c in json.loads(w.data)["index_values"]) == sum(counts)
    # an empty histogram: log_histogram_3d ignores it, so its data goes as a JSON asset
    z = next(u for u in arch.uploads if u.marker.get(names.MEDIA_KEY) == "z")
    assert (z.upload_type, z.name, z.step) == ("asset", "z.json", 4)
    assert json.loads(z.data) == {"edges": [0.0, 1.0], "counts": [0.0]}


def test_media_comet_cannot_hold_are_refused_with_a_reason(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    ev = Events()
    good = {**put_blob(blobs, png(0)[0]), "mime": "image/png", "name": "ok.png"}
    missing = {"sha256": "ab" * 32, "size": 3, "mime": "image/png", "name": "gone.png"}
    batch = [ev("ok", 1, "image", [good]),
             ev("gone", 1, "image", [missing]),
             ev("odd", 1, "hologram", data={}),
             ev("bad", 1, "curve", data={"x": [1, 2], "y": [1]})]
    result = export(tmp_path, batch)
    assert set(result.rejected) == {batch[1].uid, batch[2].uid, batch[3].uid}
    assert "missing" in result.rejected[batch[1].uid]
    assert "hologram" in result.rejected[batch[2].uid]
    assert "curve" in result.rejected[batch[3].uid]
    arch = read(tmp_path / "comet")
    assert [u.marker[names.MEDIA_KEY] for u in arch.uploads] == ["ok"]


def test_media_from_a_comet_import_go_back_in_their_own_form(tmp_path: Path) -> None:
    ev = Events()
    comet_hist = {"version": 2, "index_values": [[1041, 1], [1058, 2]], "values": None,
                  "offset": 0, "start": 1e-12, "stop": 1e20, "step": 1.1}
    matrix = {"version": 1, "title": "CM", "labels": ["a", "b"], "matrix": [[1, 0], [2, 3]],
              "rowLabel": "Actual", "columnLabel": "Predicted", "type": "integer"}
    src = lambda kind, body, name: {"vendor": "comet", "descriptor": {  # noqa: E731
        "upload_type": kind, "name": name, "json": body}}
    batch = [ev("weights", 2, "histogram", data={"edges": [0.0, 1.0], "counts": [3.0]},
                source=src("histogram3d", comet_hist, "weights")),
             ev("confusion-matrix", 3, "table",
                data={"columns": ["Actual", "a", "b"], "rows": [["a", 1, 0], ["b", 2, 3]]},
                source=src("confusion-matrix", matrix, "confusion-matrix.json"))]
    export(tmp_path, batch)
    arch = read(tmp_path / "comet")
    h, cm = arch.uploads
    assert (h.upload_type, h.step) == ("histogram3d", 2)
    assert json.loads(h.data)["index_values"] == comet_hist["index_values"]
    assert (cm.upload_type, cm.name, cm.step) == ("confusion-matrix", "confusion-matrix.json", 3)
    assert json.loads(cm.data) == matrix


# --- through bridge's API, the agent and bridge verify -----------------------------------


def test_logged_media_reach_comet_and_verify_whole(tmp_path: Path) -> None:
    import bridge
    from bridge.agent.sync import Syncer
    from bridge.verify import verify_run

    spool, out = tmp_path / "spool", tmp_path / "comet"
    run = bridge.init(project="media", name="media", dir=spool, sync="offline",
                      backends=[{"name": "comet", "mode": "offline",
                                 "offline_directory": str(out)}])
    arrays = [(np.arange(8 * 8 * 3).reshape(8, 8, 3) * (s + 1) % 256).astype(np.uint8)
              for s in range(4)]
    for s in range(3):
        run.log({"samples": bridge.Image(arrays[s], caption=f"step {s}"),
                 "weights": bridge.Histogram(np.arange(10 + s), bins=4),
                 "status": f"epoch {s}",
                 "pair": [bridge.Image(arrays[s]), bridge.Image(arrays[s + 1])]}, step=s)
    run.log({"preds": bridge.Table(columns=["id", "image"], data=[[1, bridge.Image(arrays[0])]]),
             "tone": bridge.Audio(np.sin(np.arange(800) / 10) * 0.5, sample_rate=8000),
             "clip": bridge.Video(np.zeros((3, 3, 8, 8), np.uint8), fps=2),
             "page": bridge.Html("<p>hi</p>")}, step=3)
    run.finish()
    (result,) = Syncer(spool).run_once().results
    assert result.error is None and result.pending == 0 and result.dead == 0, result

    arch = read(out, names.experiment_key_for(run.id))
    samples = sorted((u.step, u.data) for u in arch.uploads if u.name == "samples")
    assert [s for s, _ in samples] == [0, 1, 2]
    assert all(data == array_to_png(arrays[s])[0] for s, data in samples)

    rep = verify_run(spool, run.id, "comet")
    for field in ("media", "media_files", "media_data"):
        count = rep.fields[field]
        assert count.kept == count.expected > 0, (field, rep.per_key)
