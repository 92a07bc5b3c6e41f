"""Neptune media imported: neptune-exporter Parquet ``file_series`` and ``histogram_series``,
``FileSeries`` values (``LogImages``) of offline runs written by the real neptune 1.x client,
and the media bridge's own Neptune adapter wrote, through the sink and back out again."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
Image = pytest.importorskip("PIL.Image")

from bridge.adapters.importing import ImportEvent  # noqa: E402
from bridge.adapters.neptune.importer import NeptuneImporter, sanitize_path_part  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402

T0 = 1_700_000_000_000
RID = "0123456789abcdef0123456789abcdef"

# neptune-exporter's model.SCHEMA (file_value as the exporter writes it: path, size, hash)
SCHEMA = pa.schema([
    ("project_id", pa.string()), ("run_id", pa.string()), ("attribute_path", pa.string()),
    ("attribute_type", pa.string()), ("step", pa.decimal128(18, 6)),
    ("timestamp", pa.timestamp("ms", tz="UTC")), ("int_value", pa.int64()),
    ("float_value", pa.float64()), ("string_value", pa.string()), ("bool_value", pa.bool_()),
    ("datetime_value", pa.timestamp("ms", tz="UTC")), ("string_set_value", pa.list_(pa.string())),
    ("file_value", pa.struct([("path", pa.string()), ("size", pa.int64()), ("hash", pa.string())])),
    ("histogram_value", pa.struct([("type", pa.string()), ("edges", pa.list_(pa.float64())),
                                   ("values", pa.list_(pa.float64()))])),
])
_QUIET = dict(capture_stdout=False, capture_stderr=False, capture_hardware_metrics=False,
              capture_traceback=False, git_ref=False, source_files=[])


def png(color: str, size: tuple[int, int] = (5, 3)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _table(project: str, run: str, rows: list[dict[str, Any]]) -> Any:
    full = []
    for r in rows:
        row = {name: None for name in SCHEMA.names}
        row.update(project_id=project, run_id=run, **r)
        full.append(row)
    return pa.Table.from_pylist(full, schema=SCHEMA)


def _events(imp: NeptuneImporter) -> tuple[Any, list[ImportEvent]]:
    (run,) = list(imp.runs())
    return run, list(imp.events(run))


def _content(ev: ImportEvent, ref: str) -> bytes:
    content = dict(ev.files)[ref]
    return content if isinstance(content, bytes) else Path(content).read_bytes()


def _media(events: list[ImportEvent]) -> dict[tuple[str | None, int | None], ImportEvent]:
    return {(e.key, e.step): e for e in events if e.kind == "media"}


# -- neptune-exporter Parquet ----------------------------------------------------------


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """data/<project>/<run>_part_<n>.parquet and files/<project>/<file_value.path>."""
    project, run = "ws/proj", "PROJ-7"
    data = tmp_path / "exports" / "data" / sanitize_path_part(project)
    files = tmp_path / "exports" / "files" / sanitize_path_part(project)
    (files / run / "preds").mkdir(parents=True)
    data.mkdir(parents=True)
    for step, color in ((0, "red"), (1, "green")):
        (files / run / "preds" / f"{step}.png").write_bytes(png(color))
    (files / run / "preds" / "2.bin").write_bytes(b"\x00raw")

    def fs(step: str, ts: int, rel: str) -> dict[str, Any]:
        return dict(attribute_path="eval/preds", attribute_type="file_series", step=Decimal(step),
                    timestamp=_utc(ts), file_value={"path": rel, "size": 0, "hash": ""})

    def hs(step: str, ts: int, edges: list[float], values: list[float]) -> dict[str, Any]:
        return dict(attribute_path="grads/w", attribute_type="histogram_series", step=Decimal(step),
                    timestamp=_utc(ts), histogram_value={"type": "COUNTING", "edges": edges,
                                                         "values": values})

    part0 = [dict(attribute_path="sys/name", attribute_type="string", string_value="media run"),
             fs("0", T0, f"{run}/preds/0.png"), fs("1", T0 + 10, f"{run}/preds/1.png"),
             hs("0", T0 + 1, [0.0, 1.0, 2.0], [3.0, 4.0])]
    part1 = [fs("2", T0 + 20, f"{run}/preds/2.bin"),
             fs("3", T0 + 30, f"{run}/preds/gone.png"),  # the exporter's file is missing
             fs("4", T0 + 40, "../../outside.png"),  # leaves the files root
             hs("1", T0 + 11, [0.0, 1.0, 2.0, 4.0], [1.0, 0.0, 9.0]),
             hs("2", T0 + 21, [0.0, 1.0], [1.0, 2.0]),  # edges and values do not fit
             hs("3", T0 + 31, [0.0, 1.0], [None])]  # a value that is not a number
    pq.write_table(_table(project, run, part0), data / f"{run}_part_0.parquet")
    pq.write_table(_table(project, run, part1), data / f"{run}_part_1.parquet")
    (tmp_path / "exports" / "outside.png").write_bytes(png("black"))
    return tmp_path / "exports" / "data"


def test_parquet_file_and_histogram_series(export: Path) -> None:
    imp = NeptuneImporter(export, batch_rows=3)
    run, events = _events(imp)
    assert run.name == "media run"
    media = _media(events)
    assert sorted(media) == [("eval/preds", 0), ("eval/preds", 1), ("eval/preds", 2),
                             ("grads/w", 0), ("grads/w", 1)]
    red = media["eval/preds", 0]
    assert (red.ts_ms, red.payload["type"]) == (T0, "image")
    (item,) = red.payload["items"]
    assert (item["mime"], item["name"], item["width"], item["height"]) == ("image/png", "0.png", 5, 3)
    assert _content(red, item["file"]) == png("red")
    assert _content(media["eval/preds", 1], "item0") == png("green")
    raw = media["eval/preds", 2]
    assert raw.payload["type"] == "file" and _content(raw, "item0") == b"\x00raw"
    h0, h1 = media["grads/w", 0], media["grads/w", 1]
    assert (h0.ts_ms, h0.payload["data"]) == (T0 + 1, {"edges": [0.0, 1.0, 2.0], "counts": [3.0, 4.0]})
    assert h1.payload["data"]["counts"] == [1.0, 0.0, 9.0]
    assert h0.payload["source"] == {"vendor": "neptune", "descriptor": {"type": "COUNTING"}}
    assert not [e for e in events if e.kind == "artifact"]
    # nothing dropped without a counted reason
    assert len(imp.warnings) == 4, imp.warnings
    assert any("grads/w" in w and "step 3" in w and "not numbers" in w for w in imp.warnings)
    assert any("gone.png" in w and "missing" in w for w in imp.warnings)
    assert any("step 4" in w and "refused" in w for w in imp.warnings)
    assert any("grads/w" in w and "step 2" in w for w in imp.warnings)


def test_parquet_media_through_the_sink(export: Path, tmp_path: Path) -> None:
    from bridge.spool import blobs
    from bridge.spool.reader import find_run, iter_events

    (res,) = import_runs(NeptuneImporter(export), tmp_path / "spool")
    assert res.counts["media"] == 5
    rec = find_run(tmp_path / "spool", res.run_id)
    stored = [e for e in iter_events(rec.files, res.run_id) if e.kind == "media"]
    images = {e.step: e.payload["items"][0] for e in stored if e.key == "eval/preds"}
    assert blobs.blob_path(tmp_path / "spool", images[1]["sha256"]).read_bytes() == png("green")
    assert images[1]["sha256"] == hashlib.sha256(png("green")).hexdigest()


# -- offline runs written by the neptune client ----------------------------------------


def _native_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    neptune = pytest.importorskip("neptune")
    from neptune.types import File

    for var in ("NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(tmp_path / "src" / ".neptune"))
    run = neptune.init_run(mode="offline", name="native media", **_QUIET)
    for i, color in enumerate(("red", "green", "blue")):
        run["val/images"].append(File.from_content(png(color), extension="png"), step=i * 2,
                                 timestamp=(T0 + i * 100) / 1000, name=f"sample {i}",
                                 description=f"epoch {i}")
    run["val/plain"].append(File.from_content(png("white", (2, 2)), extension="png"),
                            timestamp=(T0 + 7) / 1000)  # no step, no name
    run["logs/lines"].append("first", step=0, timestamp=T0 / 1000)
    run["logs/lines"].append("second", step=1, timestamp=(T0 + 1) / 1000)
    run.stop()
    monkeypatch.delenv("NEPTUNE_DATA_DIRECTORY")
    return tmp_path / "src"


def test_offline_file_series_written_by_neptune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _native_run(tmp_path, monkeypatch)
    imp = NeptuneImporter(src)
    run, events = _events(imp)
    assert run.name == "native media"
    media = _media(events)
    for i, color in enumerate(("red", "green", "blue")):
        ev = media["val/images", i * 2]
        (item,) = ev.payload["items"]
        assert ev.ts_ms == T0 + i * 100
        assert (item["caption"], item["width"], item["height"]) == (f"sample {i}", 5, 3)
        assert item["name"] == f"images_{i * 2}.png" and item["mime"] == "image/png"
        assert ev.payload["source"] == {"vendor": "neptune", "descriptor": {
            "name": f"sample {i}", "description": f"epoch {i}"}}
        assert _content(ev, item["file"]) == png(color)
    (plain,) = [e for e in events if e.key == "val/plain"]
    assert plain.ts_ms == T0 + 7 and _content(plain, "item0") == png("white", (2, 2))
    assert "caption" not in plain.payload["items"][0]
    # a native string series is a text series
    lines = [(e.step, e.ts_ms, e.payload) for e in events if e.key == "logs/lines"]
    assert lines == [(0, T0, {"type": "text", "items": [], "data": {"text": "first"}}),
                     (1, T0 + 1, {"type": "text", "items": [], "data": {"text": "second"}})]
    assert imp.warnings == []


def test_unreadable_file_series_values_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _native_run(tmp_path, monkeypatch)
    (log,) = list((src / ".neptune" / "offline").glob("run__*/data-*.log"))
    lines = log.read_text(encoding="utf-8").splitlines()
    extra = []
    for n, data in enumerate(("not base64!", "", base64.b64encode(b"not an image").decode())):
        op = {"type": "LogImages", "path": ["val", "broken"], "values": [
            {"value": {"data": data, "name": None, "description": None}, "step": n, "ts": T0 / 1000}]}
        extra.append(json.dumps({"obj": op, "version": 10_000 + n, "at": 0}))
    log.write_text("\n".join(lines[:-1] + extra + lines[-1:]) + "\n", encoding="utf-8")
    imp = NeptuneImporter(src)
    _, events = _events(imp)
    assert not [e for e in events if e.key == "val/broken"]
    assert len(imp.warnings) == 3 and all("val/broken" in w for w in imp.warnings)
    assert any("base64" in w for w in imp.warnings) and any("empty" in w for w in imp.warnings)
    assert len([e for e in events if e.kind == "media" and e.payload["type"] == "image"]) == 4


# -- bridge -> neptune (offline) -> import -> spool -> neptune again -------------------


def test_bridge_media_round_trips_through_neptune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("neptune")
    from bridge.adapters.base import Event, RunInfo
    from bridge.adapters.neptune import NeptuneAdapter
    from bridge.spool.reader import find_run, iter_events

    for var in ("NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT", "NEPTUNE_DATA_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    blobs = tmp_path / "blobs"

    def item(data: bytes, mime: str, name: str, **facts: Any) -> dict[str, Any]:
        sha = hashlib.sha256(data).hexdigest()
        (blobs / sha[:2]).mkdir(parents=True, exist_ok=True)
        (blobs / sha[:2] / sha).write_bytes(data)
        return {"sha256": sha, "size": len(data), "mime": mime, "name": name, **facts}

    cat = item(png("red"), "image/png", "cat.png", caption="a cat", width=5, height=3)
    dog = item(png("blue"), "image/png", "dog.png", width=5, height=3)
    wav = item(b"RIFF\x00\x00\x00\x00WAVE", "audio/wav", "clip.wav", sample_rate=8000)
    payloads = [
        ("samples", 0, {"type": "image", "items": [cat], "data": None}),
        ("samples", 1, {"type": "image", "items": [cat, dog], "data": None}),
        ("w", 2, {"type": "histogram", "items": [], "data": {"edges": [0.0, 1.0, 2.0], "counts": [1.0, 3.0]},
                  "source": {"vendor": "wandb", "descriptor": {"_type": "histogram"}}}),
        ("note", 3, {"type": "text", "items": [], "data": {"text": "hello"}}),
        ("sound", 4, {"type": "audio", "items": [wav], "data": None}),
        ("preds", 5, {"type": "table", "items": [], "data": {"columns": ["id", "img"], "rows": [
            [1, {"media": {"type": "image", "items": [cat], "data": None}}],
            [2, {"media": {"type": "image", "items": [dog], "data": None}}]]}}),
        ("pr", 6, {"type": "curve", "items": [], "data": {"x": [0.0, 1.0], "y": [1.0, 0.5]}}),
    ]
    originals = [Event("f0", n + 1, RID, "media", k, s, T0 + 10 * n, None, p, "n0")
                 for n, (k, s, p) in enumerate(payloads)]

    def deliver(events: list[Any], data_dir: Path, blob_root: Path) -> None:
        adapter = NeptuneAdapter(mode="offline", data_dir=str(data_dir), spool_dir=str(tmp_path))
        info = RunInfo(run_id=RID, project="ws/proj", name="media", blob_root=blob_root, start_ms=T0)
        adapter.open_run(info)
        result = adapter.export(info, events)
        assert result.outcome.value == "success" and not result.rejected, result.rejected
        adapter.close_run(info, "FINISHED", T0 + 999)
        adapter.shutdown()

    deliver(originals, tmp_path / "nep1", blobs)
    imp = NeptuneImporter(tmp_path / "nep1")
    _, imported = _events(imp)
    assert imp.warnings == []
    media = _media(imported)
    assert sorted(media) == sorted((k, s) for k, s, _ in payloads)
    assert not [e for e in imported if e.kind in ("artifact", "event")]

    def blob_bytes(item: dict[str, Any]) -> bytes:
        return (blobs / item["sha256"][:2] / item["sha256"]).read_bytes()

    for ev in originals:
        got = media[ev.key, ev.step]
        assert got.ts_ms == ev.ts_ms and got.payload["type"] == ev.payload["type"], ev.key
        refs = [i["file"] for i in got.payload["items"]]
        assert [_content(got, r) for r in refs] == [blob_bytes(i) for i in ev.payload["items"]]
        for want, have in zip(ev.payload["items"], got.payload["items"]):
            assert {k: v for k, v in want.items() if k not in ("sha256", "size")} == \
                {k: v for k, v in have.items() if k != "file"}
    assert media["w", 2].payload["data"] == payloads[2][2]["data"]
    assert media["w", 2].payload["source"] == payloads[2][2]["source"]
    assert media["note", 3].payload["data"] == {"text": "hello"}
    assert media["pr", 6].payload["data"] == payloads[6][2]["data"]
    table = media["preds", 5]
    rows = table.payload["data"]["rows"]
    assert [r[0] for r in rows] == [1, 2]
    assert [_content(table, r[1]["media"]["items"][0]["file"]) for r in rows] == [png("red"), png("blue")]

    # into the spool, out to Neptune again: the same op log content
    (res,) = import_runs(NeptuneImporter(tmp_path / "nep1"), tmp_path / "spool")
    rec = find_run(tmp_path / "spool", res.run_id)
    spooled = [e for e in iter_events(rec.files, res.run_id) if e.kind == "media"]
    assert len(spooled) == len(originals)
    for ev in spooled:
        want = next(o for o in originals if (o.key, o.step) == (ev.key, ev.step))
        assert ev.ts_ms == want.ts_ms
        assert [i["sha256"] for i in ev.payload["items"]] == [i["sha256"] for i in want.payload["items"]]
    deliver(spooled, tmp_path / "nep2", tmp_path / "spool" / "blobs")

    from bridge.adapters.neptune.offline import find_run_dirs, image_points, series_points, scan

    def content(location: Path) -> tuple[Any, ...]:
        dirs = find_run_dirs(location)
        images = sorted((p.path, p.step, p.ts_ms, hashlib.sha256(p.data or b"").hexdigest(), p.name)
                        for p in image_points(dirs))
        strings = sorted((p.path, p.step, p.value) for p in series_points(dirs) if p.kind == "string")
        uploads = {}
        for path, up in scan(dirs).uploads.items():
            data = up.content if up.content is not None else up.local.read_bytes()
            uploads[path] = data if not path.endswith(".json") else json.loads(data)
        return images, strings, uploads

    assert content(tmp_path / "nep2") == content(tmp_path / "nep1")


def test_bridge_histogram_without_its_data_is_imported_as_its_image(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync killed between the PNG and the JSON of a histogram: the PNG is imported as an
    image, with a counted warning."""
    pytest.importorskip("neptune")
    from bridge.adapters.base import Event, RunInfo
    from bridge.adapters.neptune import NeptuneAdapter
    from bridge.adapters.neptune import names as N

    for var in ("NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT", "NEPTUNE_DATA_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    adapter = NeptuneAdapter(mode="offline", data_dir=str(tmp_path / "nep"), spool_dir=str(tmp_path))
    info = RunInfo(run_id=RID, project="p", name="h", blob_root=tmp_path / "blobs", start_ms=T0)
    adapter.open_run(info)
    hist = {"type": "histogram", "items": [], "data": {"edges": [0.0, 1.0, 2.0], "counts": [2.0, 1.0]}}
    events = [Event("f0", n + 1, RID, "media", "h", n, T0 + n, None, hist, "n0") for n in range(2)]
    assert not adapter.export(info, events).rejected
    adapter.close_run(info, "FINISHED", T0 + 9)
    (log,) = list((tmp_path / "nep" / ".neptune" / "offline").glob("run__*/data-*.log"))
    lost = json.dumps(N.histogram_field("h", 1).split("/"))
    lines = [ln for ln in log.read_text(encoding="utf-8").splitlines()
             if lost not in json.dumps(json.loads(ln)["obj"].get("path"))]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    imp = NeptuneImporter(tmp_path / "nep")
    _, imported = _events(imp)
    media = _media(imported)
    assert media["h", 0].payload["type"] == "histogram"
    assert media["h", 1].payload["type"] == "image"
    assert Image.open(io.BytesIO(_content(media["h", 1], "item0"))).format == "PNG"
    assert len(imp.warnings) == 1 and "'h' at step 1" in imp.warnings[0]


def test_a_file_named_like_a_descriptor_stays_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("neptune")
    from bridge.adapters.base import Event, RunInfo
    from bridge.adapters.neptune import NeptuneAdapter

    for var in ("NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT", "NEPTUNE_DATA_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    blobs = tmp_path / "blobs"
    members = {}
    for rel, data in (("step_1/media.json", b"[1, 2]"), ("step_2/media.json", b"\xff\xfe")):
        sha = hashlib.sha256(data).hexdigest()
        (blobs / sha[:2]).mkdir(parents=True, exist_ok=True)
        (blobs / sha[:2] / sha).write_bytes(data)
        members[rel] = {"path": rel, "sha256": sha, "size": len(data)}
    art = Event("f0", 1, RID, "artifact", "ckpt", None, T0, None, {
        "name": "ckpt", "type": "model", "is_dir": True, "source": "x", "files": list(members.values())}, "n0")
    adapter = NeptuneAdapter(mode="offline", data_dir=str(tmp_path / "nep"), spool_dir=str(tmp_path))
    info = RunInfo(run_id=RID, project="p", name="a", blob_root=blobs, start_ms=T0)
    adapter.open_run(info)
    assert not adapter.export(info, [art]).rejected
    adapter.close_run(info, "FINISHED", T0 + 9)
    imp = NeptuneImporter(tmp_path / "nep")
    _, events = _events(imp)
    (got,) = [e for e in events if e.kind == "artifact"]
    assert sorted((rel, p.read_bytes()) for rel, p in got.files) == [
        ("step_1/media.json", b"[1, 2]"), ("step_2/media.json", b"\xff\xfe")]
    assert not _media(events) and imp.warnings == []
