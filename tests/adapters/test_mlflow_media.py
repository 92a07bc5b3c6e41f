"""Media events delivered to MLflow, read back as an MLflow user reads them.

Runs are logged with ``bridge.init(..., backends=[mlflow])`` and ``run.log`` (images, a list
of images, histograms, a table with images, audio, video, html, a 3-D object, text points),
synced by the agent to three targets — a real ``mlflow server`` through bridge's REST client,
the same server through ``MlflowClient``, and the embedded sqlite store — and read back with
``MlflowClient``: step images in ``log_image``'s layout (parsed here as MLflow's UI parses
them), their thumbnails, the tags MLflow's UI reads, ``load_table``, and every other type in
bridge's documented ``media/<key>/step_<N>/`` layout, byte for byte against the spool.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")

import bridge  # noqa: E402
from bridge.adapters.base import Event, RunInfo  # noqa: E402
from bridge.adapters.mlflow import MlflowAdapter  # noqa: E402
from bridge.adapters.mlflow.importer import MlflowImporter  # noqa: E402
from bridge.agent.sync import Syncer  # noqa: E402
from bridge.config import AgentSettings  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.spool import blobs  # noqa: E402
from bridge.spool.reader import iter_events, list_runs  # noqa: E402

FAST = AgentSettings(retry_initial=0.05, retry_max=0.5, retry_attempts=4)
T0 = 1_700_000_000_000
# What MLflow's UI accepts as a step image (its image grid): "+" or "%" as separator.
UI_NAME = re.compile(r"^images/(?P<key>[^+%]+)(?P<s>[+%])step(?P=s)(?P<step>\d+)(?P=s)timestamp"
                     r"(?P=s)(?P<ts>\d+)(?P=s)(?P<uuid>[^+%]+?)(?P<c>(?P=s)compressed)?"
                     r"\.(?P<ext>png|webp)$")


@pytest.fixture(autouse=True)
def quick_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


@pytest.fixture(params=["rest", "mlflow-client", "embedded"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[list[dict], str]:
    """(bridge backends, tracking URI to read back) for each of the adapter's clients."""
    if request.param == "embedded":
        spool = tmp_path / "spool"
        return [{"name": "mlflow"}], f"sqlite:///{(spool / 'mlflow.db').resolve()}"
    server = request.getfixturevalue("mlflow_server")
    opts: dict[str, Any] = {"name": "mlflow", "tracking_uri": server.url}
    if request.param == "mlflow-client":
        opts["client"] = "mlflow"
    return [opts], server.url


def _img(seed: int, h: int = 20, w: int = 30) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _log_corpus(spool: Path, backends: list[dict], project: str) -> str:
    with bridge.init(project=project, dir=spool, sync="offline", backends=backends) as run:
        for i in range(3):
            run.log({"samples": bridge.Image(_img(i), caption=f"epoch {i}"),
                     "weights": bridge.Histogram(np.arange(50) * (i + 1), bins=10),
                     "note": f"step {i} went fine"}, step=i)
        run.log({"val/pair": [bridge.Image(_img(10)), bridge.Image(_img(11), caption="b")]},
                step=4)
        table = bridge.Table(columns=["id", "score", "picture"])
        table.add_data(1, 0.5, bridge.Image(_img(20, 8, 8)))
        table.add_data(2, float("nan"), bridge.Image(_img(21, 8, 8)))
        run.log({"preds": table}, step=5)
        run.log({"speech": bridge.Audio(np.sin(np.arange(800) / 9.0), sample_rate=8000,
                                        caption="hum"),
                 "clip": bridge.Video(np.zeros((3, 3, 8, 8), np.uint8), fps=2),
                 "page": bridge.Html("<b>hello</b>"),
                 "cloud": bridge.Object3D(np.arange(12, dtype=float).reshape(4, 3))}, step=6)
        run.log_media("late", bridge.Image(_img(30)), step=7, timestamp=T0)
        return run.id


def _spool_media(spool: Path, run_id: str) -> list[Event]:
    rec = [r for r in list_runs(spool) if r.run_id == run_id][0]
    return [e for e in iter_events(rec.files, run_id) if e.kind == "media"]


def _blob(spool: Path, sha: str) -> bytes:
    return blobs.blob_path(spool, sha).read_bytes()


def _remote(client: Any, project: str, run_id: str) -> Any:
    exp = client.get_experiment_by_name(project)
    [run] = client.search_runs([exp.experiment_id], f"tags.`bridge.run_id` = '{run_id}'")
    return run


def _files(client: Any, remote: str, path: str | None = None) -> list[str]:
    out = []
    for f in client.list_artifacts(remote, path):
        out.extend(_files(client, remote, f.path) if f.is_dir else [f.path])
    return out


def _read(client: Any, remote: str, path: str, dst: Path) -> bytes:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(remote, path, str(dst))).read_bytes()


def test_every_media_type_reaches_mlflow(target: tuple[list[dict], str], tmp_path: Path) -> None:
    backends, uri = target
    spool = tmp_path / "spool"
    project = f"media-{uuid.uuid4().hex[:8]}"
    run_id = _log_corpus(spool, backends, project)
    summary = Syncer(spool, settings=FAST).run_once()
    assert summary.complete and all(r.dead == 0 for r in summary.results), summary
    client = mlflow.MlflowClient(uri)
    remote = _remote(client, project, run_id)
    rid = remote.info.run_id
    tags = remote.data.tags
    assert tags["mlflow.loggedImages"] == "True"
    files = _files(client, rid)
    spooled = {(e.key, e.step): e for e in _spool_media(spool, run_id)}
    dl = tmp_path / "dl"

    # -- images: the UI's step images, exact bytes, one per item, thumbnails beside them
    grid: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for path in (p for p in files if p.startswith("images/")):
        m = UI_NAME.match(path)
        assert m, f"{path} is not a step image MLflow's UI reads"
        entry = grid.setdefault((m["key"].replace("~", "/"), int(m["step"])), [])
        entry.append({"ts": int(m["ts"]), "uuid": m["uuid"], "compressed": bool(m["c"]),
                      "path": path})
    want = {k: e for k, e in spooled.items() if e.payload["type"] == "image"}
    assert set(grid) == set(want)
    for (key, step), entries in grid.items():
        ev = want[(key, step)]
        full = sorted(e["path"] for e in entries if not e["compressed"])
        thumbs = [e for e in entries if e["compressed"]]
        assert len(full) == len(ev.payload["items"]) == len(thumbs)
        assert {e["ts"] for e in entries} == {ev.ts_ms}
        got = sorted(_read(client, rid, p, dl) for p in full)
        assert got == sorted(_blob(spool, i["sha256"]) for i in ev.payload["items"])
        from PIL import Image

        for t in thumbs:
            img = Image.open(io.BytesIO(_read(client, rid, t["path"], dl)))
            assert img.format == "WEBP" and max(img.size) == 256
    assert grid[("late", 7)][0]["ts"] == T0
    # captions and item order are in the event's descriptor
    desc = json.loads(_read(client, rid, _one(files, "media/val/pair/step_4/image-", ".json"), dl))
    assert desc["key"] == "val/pair" and desc["step"] == 4
    assert [i.get("caption") for i in desc["items"]] == [None, "b"]
    assert [i["file"] for i in desc["items"]][1] in files

    # -- histograms: data in JSON, a PNG chart beside it
    for step in range(3):
        ev = spooled[("weights", step)]
        desc = json.loads(_read(client, rid, f"media/weights/step_{step}/histogram-{ev.ts_ms}.json", dl))
        assert desc["data"] == ev.payload["data"] and desc["step"] == step
        png = _read(client, rid, desc["render"], dl)
        assert png.startswith(b"\x89PNG")
    # -- text points
    for step in range(3):
        ev = spooled[("note", step)]
        desc = json.loads(_read(client, rid, f"media/note/step_{step}/text-{ev.ts_ms}.json", dl))
        assert desc["data"] == {"text": f"step {step} went fine"}
    # -- audio, video, html, 3-D: the item's bytes under media/<key>/step_<N>/
    for key in ("speech", "clip", "page", "cloud"):
        ev = spooled[(key, 6)]
        [item] = ev.payload["items"]
        kind = ev.payload["type"]
        desc = json.loads(_read(client, rid, f"media/{key}/step_6/{kind}-{ev.ts_ms}.json", dl))
        assert desc["items"][0]["file"].startswith(f"media/{key}/step_6/")
        assert _read(client, rid, desc["items"][0]["file"], dl) == _blob(spool, item["sha256"])
        assert desc["items"][0].get("caption") == item.get("caption")

    # -- the table: log_table's JSON, listed in the tag, its images as log_table stores them
    listed = json.loads(tags["mlflow.loggedArtifacts"])
    assert {"path": "tables/preds/step_5.json", "type": "table"} in listed
    table = json.loads(_read(client, rid, "tables/preds/step_5.json", dl))
    assert table["columns"] == ["id", "score", "picture"]
    assert [r[:2] for r in table["data"]] == [[1, 0.5], [2, None]]
    rows = spooled[("preds", 5)].payload["data"]["rows"]
    for row, cell in zip(rows, (r[2] for r in table["data"])):
        assert cell["type"] == "image" and cell["filepath"].startswith("table_images/tables/preds/")
        assert _read(client, rid, cell["filepath"], dl) == _blob(
            spool, row[2]["media"]["items"][0]["sha256"])
        assert cell["compressed_filepath"].endswith(".webp") and cell["compressed_filepath"] in files
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:  # MLflow's own reader of log_table files
        frame = client.load_table(remote.info.experiment_id, "tables/preds/step_5.json",
                                  run_ids=[rid])
    finally:
        mlflow.set_tracking_uri(previous)
    assert list(frame["id"]) == [1, 2]


def _one(files: list[str], prefix: str, suffix: str = "") -> str:
    [path] = [f for f in files if f.startswith(prefix) and f.endswith(suffix)]
    return path


# -- the adapter alone: replays, refusals ------------------------------------------------------

_seq = itertools.count(1)


def _put(root: Path, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    path = root / sha[:2] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"sha256": sha, "size": len(data)}


def _png(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_img(seed)).save(buf, format="PNG")
    return buf.getvalue()


def _event(key: str, step: int | None, payload: Any, ts: int = T0) -> Event:
    return Event("f1", next(_seq), "", "media", key, step, ts, payload=payload)


def test_replays_write_the_same_files(tmp_path: Path) -> None:
    run = RunInfo(run_id=uuid.uuid4().hex, project="media-replay", name="r", start_ms=T0,
                  blob_root=tmp_path / "blobs")
    jpeg = io.BytesIO()
    from PIL import Image

    Image.fromarray(_img(3)).save(jpeg, format="JPEG")
    items = [{**_put(run.blob_root, _png(1)), "mime": "image/png", "name": "a.png"},
             {**_put(run.blob_root, jpeg.getvalue()), "mime": "image/jpeg", "name": "b.jpg",
              "caption": "a photo"}]
    wav = {**_put(run.blob_root, b"RIFF....WAVEfmt "), "mime": "audio/wav", "name": "s.wav"}
    cell = {"media": {"type": "image", "data": None, "items": [dict(items[0])]}}  # twice
    batch = [
        _event("pics", 2, {"type": "image", "items": items, "data": None}),
        _event("sound", 2, {"type": "audio", "items": [wav], "data": None}),
        _event("tab", None, {"type": "table", "items": [], "data": {
            "columns": ["x", "same"], "rows": [[1, cell], [2, cell]]}}),
    ]
    adapter = MlflowAdapter(spool_dir=tmp_path / "spool")
    try:
        assert adapter.export(run, batch).rejected == {}
        client = mlflow.MlflowClient(adapter.tracking_uri)
        remote = run.state["mlflow_run_id"]
        first = {p: _read(client, remote, p, tmp_path / "a") for p in _files(client, remote)}
        assert adapter.export(run, batch).rejected == {}  # the same batch again
        second = {p: _read(client, remote, p, tmp_path / "b") for p in _files(client, remote)}
    finally:
        adapter.shutdown()
    assert first == second
    grid = sorted(p for p in first if p.startswith("images/") and p.endswith(".png"))
    assert len(grid) == 2  # the JPEG as PNG for the grid, its original kept under media/
    desc = json.loads(first[_one(list(first), "media/pics/step_2/image-", ".json")])
    jpg = desc["items"][1]
    assert first[jpg["file"]] == jpeg.getvalue() and jpg["grid"] in grid
    assert jpg["caption"] == "a photo"
    tags = client.get_run(remote).data.tags
    table = json.loads(first["tables/tab/step_0.json"])
    assert table["data"][0][1] == table["data"][1][1]
    assert first[table["data"][0][1]["filepath"]] == _png(1)
    assert hashlib.sha256(_png(1)).hexdigest() == items[0]["sha256"]  # the blob is intact
    assert (run.blob_root / items[0]["sha256"][:2] / items[0]["sha256"]).read_bytes() == _png(1)
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [
        {"path": "tables/tab/step_0.json", "type": "table"}]


def test_bad_media_is_a_dead_letter_the_rest_arrives(tmp_path: Path) -> None:
    run = RunInfo(run_id=uuid.uuid4().hex, project="media-bad", name="r", start_ms=T0,
                  blob_root=tmp_path / "blobs")
    good = {**_put(run.blob_root, _png(5)), "mime": "image/png", "name": "ok.png"}
    lost = {"sha256": "ab" * 32, "size": 3, "mime": "image/png", "name": "gone.png"}
    batch = [_event("ok", 1, {"type": "image", "items": [good], "data": None}),
             _event("gone", 1, {"type": "image", "items": [lost], "data": None}),
             _event("odd", 1, {"type": "hologram", "items": [], "data": None}),
             _event("evil", 1, {"type": "audio", "items": [{"sha256": "../../etc/passwd"}]})]
    adapter = MlflowAdapter(spool_dir=tmp_path / "spool")
    try:
        result = adapter.export(run, batch)
    finally:
        adapter.shutdown()
    assert set(result.rejected) == {e.uid for e in batch[1:]}
    assert "missing from the spool" in result.rejected[batch[1].uid]
    assert "hologram" in result.rejected[batch[2].uid]
    client = mlflow.MlflowClient(adapter.tracking_uri)
    files = _files(client, run.state["mlflow_run_id"])
    assert any(p.startswith("images/ok+step+1+") for p in files)
    assert not any("gone" in p for p in files)


def test_media_round_trip_through_mlflow(tmp_path: Path) -> None:
    """bridge -> MLflow -> bridge: every media event comes back with its key, step, time,
    bytes, captions and data (what ``bridge verify`` compares)."""
    spool = tmp_path / "spool"
    run_id = _log_corpus(spool, [{"name": "mlflow"}], "media-rt")
    assert Syncer(spool, settings=FAST).run_once().complete
    imp = MlflowImporter(f"sqlite:///{(spool / 'mlflow.db').resolve()}",
                         experiments=["media-rt"])
    back = tmp_path / "back"
    [imported] = import_runs(imp, back)
    assert imp.warnings == []

    def shape(spool_dir: Path, rid: str) -> dict:
        out = {}
        for e in _spool_media(spool_dir, rid):
            p = e.payload
            items = [(i["sha256"], i.get("caption"), i["mime"]) for i in p["items"]]
            data = p["data"]
            if p["type"] == "table":
                data = [[(c["media"]["items"][0]["sha256"] if isinstance(c, dict) else c)
                         for c in row] for row in data["rows"]]
            out[(e.key, e.step, e.ts_ms)] = (p["type"], items, json.dumps(data, sort_keys=True))
        return out

    assert shape(back, imported.run_id) == shape(spool, run_id)
    from bridge.verify import verify_run

    report = verify_run(spool, run_id, "mlflow")  # what `bridge verify` reports
    for field in ("media", "media_files", "media_data"):
        count = report.fields[field]
        assert count.expected > 0 and count.lost == 0, (field, count)
    rec = [r for r in list_runs(back) if r.run_id == imported.run_id][0]
    artifacts = [e.key for e in iter_events(rec.files, imported.run_id) if e.kind == "artifact"]
    assert not {"images", "media", "tables", "table_images"} & set(artifacts), artifacts


def test_curves_tensors_and_files_keep_their_data_and_source(tmp_path: Path) -> None:
    """Kinds MLflow has no form for: files per step with a JSON descriptor, read back whole
    (inline data, the source vendor's descriptor, stepless stays stepless)."""
    run = RunInfo(run_id=uuid.uuid4().hex, project="media-data", name="r", start_ms=T0,
                  blob_root=tmp_path / "blobs")
    npy = {**_put(run.blob_root, b"\x93NUMPY fake"), "mime": "application/x-npy",
           "name": "emb.npy"}
    source = {"vendor": "tensorboard", "descriptor": {"plugin": "pr_curves"}}
    batch = [
        _event("pr", 3, {"type": "curve", "items": [], "source": source,
                         "data": {"x": [0.0, 0.5, 1.0], "y": [1.0, 0.7, 0.2], "name": "pr"}}),
        _event("w", 8, {"type": "tensor", "items": [], "data": {
            "dtype": "float32", "shape": [2, 2], "values": [1.0, 2.0, 3.5, -1.0]}}),
        _event("emb", None, {"type": "file", "items": [npy], "data": None}),
    ]
    adapter = MlflowAdapter(spool_dir=tmp_path / "spool")
    try:
        assert adapter.export(run, batch).rejected == {}
        adapter.close_run(run, "FINISHED", T0 + 10)
    finally:
        adapter.shutdown()
    client = mlflow.MlflowClient(adapter.tracking_uri)
    files = _files(client, run.state["mlflow_run_id"])
    assert "media/pr/step_3/curve-%d.json" % batch[0].ts_ms in files
    assert "media/emb/step_0/file-%d-0.npy" % batch[2].ts_ms in files
    imp = MlflowImporter(adapter.tracking_uri, experiments=["media-data"])
    [res] = import_runs(imp, tmp_path / "back")
    back = {e.key: e for e in _spool_media(tmp_path / "back", res.run_id)}
    for sent in batch:
        got = back[sent.key]
        assert (got.step, got.ts_ms) == (sent.step, sent.ts_ms)
        assert got.payload["type"] == sent.payload["type"]
        assert got.payload["data"] == sent.payload["data"]
        assert [i["sha256"] for i in got.payload["items"]] == [
            i["sha256"] for i in sent.payload["items"]]
    assert back["pr"].payload["source"] == source
