"""Media events through the Neptune adapter and the real neptune 1.x client, offline.

Every assertion reads back what the client wrote: the ``LogImages`` operations of the
offline op log (decoded with Neptune's own ``Operation.from_dict``, image bytes inline as
base64), its ``LogStrings`` and the files its ``UploadFile`` operations point at.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib.util
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("neptune")
Image = pytest.importorskip("PIL.Image")

from bridge.adapters.base import Event, Outcome, RunInfo, load_adapter  # noqa: E402
from bridge.adapters.neptune import names as N  # noqa: E402
from bridge.adapters.neptune.media import render_histogram  # noqa: E402


def _load_readback() -> Any:
    path = Path(__file__).with_name("neptune_readback.py")
    spec = importlib.util.spec_from_file_location("_neptune_readback_media", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


readback = _load_readback()
RUN_ID = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000


# ----------------------------------------------------------------------------- helpers


def png(color: str, size: tuple[int, int] = (6, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


class Spool:
    """Blobs and media events as the spool holds them."""

    def __init__(self, root: Path) -> None:
        self.root, self.seq = root / "blobs", 0

    def blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        (self.root / sha[:2]).mkdir(parents=True, exist_ok=True)
        (self.root / sha[:2] / sha).write_bytes(data)
        return sha

    def item(self, data: bytes, mime: str, name: str, **facts: Any) -> dict[str, Any]:
        return {"sha256": self.blob(data), "size": len(data), "mime": mime, "name": name, **facts}

    def media(self, key: str, step: int | None, type_: str, items: list[dict] = (),  # type: ignore[assignment]
              data: Any = None, ts: int | None = None) -> Event:
        self.seq += 1
        payload = {"type": type_, "items": list(items), "data": data}
        return Event("f1", self.seq, RUN_ID, "media", key, step,
                     T0 + self.seq * 10 if ts is None else ts, None, payload, "n0")


@pytest.fixture
def make_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in ("NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT", "NEPTUNE_DATA_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    made: list[Any] = []

    def make() -> Any:
        adapter = load_adapter("neptune")(mode="offline", data_dir=str(tmp_path / "nd"),
                                          spool_dir=str(tmp_path / "spool"))
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.shutdown()


def make_run(tmp_path: Path, state: dict | None = None) -> RunInfo:
    return RunInfo(run_id=RUN_ID, project="demo", name="media", start_ms=T0,
                   blob_root=tmp_path / "blobs", state=state if state is not None else {})


def image_ops(run_dir: Path) -> dict[str, list[tuple[Any, float, bytes, Any, Any]]]:
    """Every FileSeries value of an offline dir: path -> [(step, ts, bytes, name, description)]."""
    from neptune.internal.operation import LogImages, Operation

    out: dict[str, list[tuple[Any, float, bytes, Any, Any]]] = {}
    for log in sorted(run_dir.glob("data-*.log"), key=lambda p: int(p.stem.split("-")[-1])):
        for line in log.read_text(encoding="utf-8").splitlines():
            op = Operation.from_dict(json.loads(line)["obj"])
            if isinstance(op, LogImages):
                for v in op.values:
                    out.setdefault("/".join(op.path), []).append(
                        (v.step, v.ts, base64.b64decode(v.value.data), v.value.name,
                         v.value.description))
    return out


def only_dir(tmp_path: Path) -> Any:
    runs = readback.runs_for(tmp_path / "nd" / ".neptune", RUN_ID)
    assert len(runs) == 1
    return runs[0]


# ----------------------------------------------------------------------------- tests


def test_every_media_type_reads_back_from_the_op_log(tmp_path: Path, make_adapter: Any) -> None:
    sp = Spool(tmp_path)
    red, green, blue = png("red"), png("green"), png("blue", (3, 5))
    wav, mp4, html, glb = b"RIFF\x24\x00\x00\x00WAVEfmt ", b"\x00\x00\x00\x18ftypmp42", b"<p>hi</p>", b"glTF\x02"
    cat = sp.item(red, "image/png", "cat.png", caption="a cat", width=6, height=4)
    events = [
        sp.media("samples", 0, "image", [cat]),
        sp.media("samples", 1, "image", [sp.item(green, "image/png", "g.png"),
                                         sp.item(blue, "image/png", "b.png", caption="blue")]),
        sp.media("samples", 5, "image", [sp.item(blue, "image/png", "b.png")]),
        sp.media("weights", 2, "histogram", data={"edges": [0.0, 0.5, 1.0, 2.0], "counts": [1, 4, 2]}),
        sp.media("weights", 3, "histogram", data={"edges": [-1.0, 0.0, 1.0], "counts": [7, 0]}),
        sp.media("notes", 0, "text", data={"text": "first"}),
        sp.media("notes", 4, "text", data={"text": "second"}),
        sp.media("sound", 1, "audio", [sp.item(wav, "audio/wav", "clip.wav", sample_rate=16000)]),
        sp.media("movie", 2, "video", [sp.item(mp4, "video/mp4", "movie.mp4", fps=4)]),
        sp.media("page", 3, "html", [sp.item(html, "text/html", "page.html")]),
        sp.media("mesh", 4, "object3d", [sp.item(glb, "model/gltf-binary", "mesh.glb")]),
        sp.media("pr", 6, "curve", data={"x": [0, 1], "y": [1, 0]}),
        sp.media("preds", 7, "table", data={"columns": ["id", "img"], "rows": [
            [1, {"media": {"type": "image", "items": [cat], "data": None}}],
            [2, {"media": {"type": "image", "items": [sp.item(green, "image/png", "g.png")],
                           "data": None}}]]}),
    ]
    adapter = make_adapter()
    run = make_run(tmp_path)
    adapter.open_run(run)
    result = adapter.export(run, events)
    assert result.outcome is Outcome.SUCCESS and not result.rejected, result.rejected
    adapter.close_run(run, "FINISHED", T0 + 10_000)
    got = only_dir(tmp_path)
    images = image_ops(got.path)

    # images: item 0 of every event in <key>, item 1 in <key>_1, bytes, steps, timestamps
    ts = {(e.key, e.step): e.ts_ms / 1000 for e in events}
    assert [(s, t, b) for s, t, b, _, _ in images["samples"]] == [
        (0, ts["samples", 0], red), (1, ts["samples", 1], green), (5, ts["samples", 5], blue)]
    assert [(s, t, b) for s, t, b, _, _ in images["samples_1"]] == [(1, ts["samples", 1], blue)]
    first = images["samples"][0]
    assert first[3] == "a cat"  # Neptune's name: the caption
    assert N.decode_image_description(first[4]) == {
        "type": "image", "key": "samples", "item": 0, "items": 1, "name": "cat.png",
        "mime": "image/png", "caption": "a cat", "width": 6, "height": 4}
    assert images["samples"][1][3] == "g.png"  # no caption: the file name
    assert N.decode_image_description(images["samples_1"][0][4])["item"] == 1

    # histograms: a FileSeries of rendered PNGs plus their data as JSON per step
    hist = images["weights"]
    assert [(s, t) for s, t, *_ in hist] == [(2, ts["weights", 2]), (3, ts["weights", 3])]
    assert hist[0][2] == render_histogram([0.0, 0.5, 1.0, 2.0], [1, 4, 2])
    with Image.open(io.BytesIO(hist[0][2])) as img:
        assert img.format == "PNG" and img.size == (480, 270)
    data = json.loads(got.files[N.histogram_field("weights", 3)])[N.MEDIA_MARK]
    assert (data["step"], data["ts_ms"]) == (3, ts["weights", 3] * 1000)
    assert data["payload"]["data"] == {"edges": [-1.0, 0.0, 1.0], "counts": [7, 0]}

    # text: a StringSeries with steps and timestamps
    assert readback.runs_for(tmp_path / "nd" / ".neptune", RUN_ID)[0].series["notes"] == [
        readback.Point(0, "first", ts["notes", 0]), readback.Point(4, "second", ts["notes", 4])]

    # every other type: its files under <key>/step_<N>/ and the event's JSON beside them
    for key, step, name, content in [("sound", 1, "clip.wav", wav), ("movie", 2, "movie.mp4", mp4),
                                     ("page", 3, "page.html", html), ("mesh", 4, "mesh.glb", glb),
                                     ("preds", 7, "cat.png", red), ("preds", 7, "g.png", green)]:
        assert got.files[N.media_step_field(key, step, name)] == content, (key, name)
    assert got.file_ext[N.media_step_field("sound", 1, "clip.wav")] == "wav"
    for key, step in [("sound", 1), ("movie", 2), ("page", 3), ("mesh", 4), ("pr", 6), ("preds", 7)]:
        desc = json.loads(got.files[N.media_step_field(key, step, N.MEDIA_DESCRIPTOR)])[N.MEDIA_MARK]
        ev = next(e for e in events if (e.key, e.step) == (key, step))
        assert (desc["key"], desc["step"], desc["ts_ms"], desc["payload"]) == (key, step, ev.ts_ms, ev.payload)
    pr = json.loads(got.files[N.media_step_field("pr", 6, N.MEDIA_DESCRIPTOR)])[N.MEDIA_MARK]
    assert pr["payload"]["data"] == {"x": [0, 1], "y": [1, 0]}
    # what the agent saves: the last step of every media series
    assert run.state["series"]["samples"][0] == 5 and run.state["series"]["preds"][0] == 7


def test_media_the_adapter_refuses_has_a_reason(tmp_path: Path, make_adapter: Any) -> None:
    sp = Spool(tmp_path)
    red, green = png("red"), png("green")
    events = [
        sp.media("img", 3, "image", [sp.item(red, "image/png", "r.png")]),
        sp.media("img", 2, "image", [sp.item(green, "image/png", "g.png")]),  # below step 3
        sp.media("img", 3, "image", [sp.item(green, "image/png", "g.png")]),  # step 3 again
        sp.media("img", 3, "image", [sp.item(red, "image/png", "r.png")]),  # a duplicate: kept once
        sp.media("svg", 0, "image", [sp.item(b"<svg/>", "image/svg+xml", "x.svg")]),
        sp.media("gone", 0, "image", [{"sha256": "ab" * 32, "size": 1, "mime": "image/png", "name": "x.png"}]),
        sp.media("h", 0, "histogram", data={"edges": [0, 1], "counts": [1, 2]}),
        sp.media("t", 0, "text", data={"text": "x" * 1001}),  # kept: see the long-text test
        sp.media("sys/img", 0, "image", [sp.item(red, "image/png", "r.png")]),
        sp.media("loss", 0, "image", [sp.item(red, "image/png", "r.png")]),  # the metric's field
        sp.media("img", None, "image", [sp.item(green, "image/png", "g.png")]),  # no step: next one
        sp.media("h2", 0, "histogram", data={"edges": [0, float("nan"), 2], "counts": [1, 2]}),
    ]
    metric = Event("f1", 999, RUN_ID, "metric", "loss", 0, T0, 1.0, None, "n0")
    adapter = make_adapter()
    run = make_run(tmp_path)
    adapter.open_run(run)
    result = adapter.export(run, [metric] + events)
    assert result.outcome is Outcome.SUCCESS
    rejected = dict(result.rejected)
    assert set(rejected) == {events[i].uid for i in (1, 2, 4, 5, 6, 8, 9, 11)}
    assert "strictly increasing" in rejected[events[1].uid]
    assert "one value per step" in rejected[events[2].uid]
    assert "Pillow" in rejected[events[4].uid]
    assert "missing" in rejected[events[5].uid]
    assert "edges" in rejected[events[6].uid]
    assert "reserved" in rejected[events[8].uid]
    assert "'loss'" in rejected[events[9].uid]
    assert "finite" in rejected[events[11].uid]
    adapter.shutdown()
    images = image_ops(only_dir(tmp_path).path)
    assert [(s, b) for s, _, b, _, _ in images["img"]] == [(3, red), (4, green)]
    assert set(images) == {"img"}


def test_replay_after_killed_sync_adds_no_media_twice(tmp_path: Path, make_adapter: Any) -> None:
    sp = Spool(tmp_path)
    first = [sp.media("img", 0, "image", [sp.item(png("red"), "image/png", "r.png")])]
    second = [
        sp.media("img", 1, "image", [sp.item(png("green"), "image/png", "g.png"),
                                     sp.item(png("blue"), "image/png", "b.png")]),
        sp.media("h", 1, "histogram", data={"edges": [0, 1, 2], "counts": [1, 2]}),
        sp.media("note", 1, "text", data={"text": "hello"}),
        sp.media("clip", 1, "audio", [sp.item(b"RIFFxxxxWAVE", "audio/wav", "a.wav")]),
    ]
    run = make_run(tmp_path)
    a1 = make_adapter()
    a1.open_run(run)
    assert a1.export(run, first).outcome is Outcome.SUCCESS
    saved = copy.deepcopy(json.loads(json.dumps(run.state)))  # the agent saved batch 1
    res = a1.export(run, second)
    assert res.outcome is Outcome.SUCCESS and not res.rejected, res.rejected
    # killed here: the op log holds batch 2, the agent's state does not

    run2 = make_run(tmp_path, state=saved)
    a2 = make_adapter()
    a2.open_run(run2)
    later = sp.media("img", 2, "image", [sp.item(png("white"), "image/png", "w.png")])
    replay = a2.export(run2, second + [later])
    assert replay.outcome is Outcome.SUCCESS and not replay.rejected, replay.rejected
    a2.shutdown()
    a1.shutdown()

    runs = readback.runs_for(tmp_path / "nd" / ".neptune", RUN_ID)
    assert len(runs) == 2
    again = image_ops(runs[1].path)
    assert {k: [s for s, *_ in v] for k, v in again.items()} == {"img": [2]}
    assert "note" not in runs[1].series
    assert not [f for f in runs[1].files if f.startswith(("clip/", N.HISTOGRAM_DATA))]
    everything = {k: [s for r in runs for s, *_ in image_ops(r.path).get(k, [])]
                  for k in ("img", "img_1", "h")}
    assert everything == {"img": [0, 1, 2], "img_1": [1], "h": [1]}
    assert run2.state["series"]["img"][0] == 2


def test_histogram_png_is_deterministic() -> None:
    a = render_histogram([0.0, 1.0, 3.0], [2, 5])
    assert a == render_histogram([0.0, 1.0, 3.0], [2, 5])
    assert a != render_histogram([0.0, 1.0, 3.0], [5, 2])
    with Image.open(io.BytesIO(render_histogram([1.0, 1.0], [0]))) as img:  # degenerate: still a PNG
        assert img.format == "PNG"


def test_bridge_log_to_neptune_offline_verifies_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bridge.init -> run.log(media) -> sync -> Neptune's op log, and ``bridge verify``
    reading it back finds every media event, file and inline value at its step."""
    np = pytest.importorskip("numpy")
    import bridge
    from bridge.agent.sync import Syncer
    from bridge.verify import verify_run

    for var in ("NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT", "NEPTUNE_DATA_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    spool, out = tmp_path / "spool", tmp_path / "out"
    run = bridge.init(project="media", dir=spool, sync="offline",
                      backends=[{"name": "neptune", "mode": "offline", "data_dir": str(out)}])
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(3)]
    for step in range(3):
        run.log({"samples": bridge.Image(frames[step], caption=f"step {step}"),
                 "pair": [bridge.Image(frames[step]), bridge.Image(frames[(step + 1) % 3])],
                 "weights": bridge.Histogram(rng.normal(size=100), bins=8),
                 "note": f"epoch {step}"}, step=step)
    table = bridge.Table(columns=["id", "img"], data=[[1, bridge.Image(frames[0])],
                                                      [2, bridge.Image(frames[1])]])
    run.log({"preds": table, "sound": bridge.Audio(np.zeros(800, dtype=np.float32), sample_rate=8000),
             "page": bridge.Html("<b>hi</b>")}, step=3)
    run.finish()
    summary = Syncer(spool).run_once()
    (result,) = summary.results
    assert result.error is None and result.pending == 0 and result.dead == 0, result

    rep = verify_run(spool, run.id, "neptune")
    assert rep.found
    for name in ("media", "media_files", "media_data"):
        count = rep.fields[name]
        assert count.expected > 0 and count.lost == 0, (name, rep.per_key)
    assert rep.media_per_key["pair"]["files_kept"] == 6
    (got,) = readback.runs_for(out / ".neptune", run.id)
    images = image_ops(got.path)
    assert [s for s, *_ in images["samples"]] == [0, 1, 2]
    assert [s for s, *_ in images["pair_1"]] == [0, 1, 2]
    assert [s for s, *_ in images["weights"]] == [0, 1, 2]
    assert [(p.step, p.value) for p in got.series["note"]] == [(0, "epoch 0"), (1, "epoch 1"), (2, "epoch 2")]
    assert N.media_step_field("sound", 3, N.MEDIA_DESCRIPTOR) in got.files


def test_long_text_points_are_kept_whole_beside_the_series(tmp_path: Path, make_adapter: Any) -> None:
    """Neptune truncates a StringSeries value at 1000 characters: the series gets the start,
    ``texts/<key>/step_<N>/text.txt`` the whole text, and the importer puts them together."""
    from bridge.adapters.neptune.importer import NeptuneImporter

    sp = Spool(tmp_path)
    long = "".join(f"line {i}\n" for i in range(400))
    events = [sp.media("log", 0, "text", data={"text": "short"}),
              sp.media("log", 1, "text", data={"text": long}),
              sp.media("log", None, "text", data={"text": long + "more"})]
    adapter = make_adapter()
    run = make_run(tmp_path)
    adapter.open_run(run)
    assert not adapter.export(run, events).rejected
    adapter.close_run(run, "FINISHED", T0 + 100)
    got = only_dir(tmp_path)
    values = [(p.step, p.value) for p in got.series["log"]]
    assert values == [(0, "short"), (1, N.text_preview(long)), (2, N.text_preview(long + "more"))]
    assert all(len(v) <= N.MAX_SERIES_STRING for _, v in values)
    assert got.files[N.long_text_field("log", 1)] == long.encode()
    assert got.files[N.long_text_field("log", 2)] == (long + "more").encode()
    imp = NeptuneImporter(tmp_path / "nd")
    (src,) = list(imp.runs())
    imported = list(imp.events(src))
    texts = [(e.step, e.payload["data"]["text"]) for e in imported if e.kind == "media"]
    assert texts == [(0, "short"), (1, long), (2, long + "more")]
    assert not [e for e in imported if e.kind in ("artifact", "event")]
    assert imp.warnings == []
