"""The TensorBoard destination, read back with TensorBoard's own EventAccumulator and with
bridge's TensorboardImporter, point by point."""

from __future__ import annotations

import hashlib
import io
import json
import math
import subprocess
import sys
import textwrap
import uuid
import wave
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.base import AdapterError, Event, RunInfo, load_adapter

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing import event_accumulator as ea  # noqa: E402
from tensorboard.plugins.hparams import metadata as hp_meta  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

from bridge.adapters.tensorboard import TensorboardAdapter, TensorboardImporter  # noqa: E402
from bridge.adapters.tensorboard import names as N  # noqa: E402

T0 = 1_700_000_000_000  # ms


# -- helpers ----------------------------------------------------------------------------------


class Events:
    """Spool-like events with increasing seq per file id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.seq: dict[str, int] = {}

    def __call__(self, kind: str, key: str | None, *, step: int | None = None, ts: int = T0,
                 value: float | None = None, payload: Any = None, file_id: str = "f0") -> Event:
        self.seq[file_id] = self.seq.get(file_id, 0) + 1
        return Event(file_id, self.seq[file_id], self.run_id, kind, key, step, ts, value,
                     payload, node=file_id)


def add_blob(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    path = root / sha[:2] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


def png(width: int, height: int, shade: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 255 - shade, 7)).save(buf, format="PNG")
    return buf.getvalue()


def wav(frames: int, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(range(256)) * (frames * 2 // 256) + b"\0" * (frames * 2 % 256))
    return buf.getvalue()


def make_run(tmp_path: Path, **kw: Any) -> RunInfo:
    fields = dict(run_id=uuid.uuid4().hex, project="proj", name="my run", group="sweep-1",
                  start_ms=T0, blob_root=tmp_path / "blobs", state={})
    fields.update(kw)
    return RunInfo(**fields)


def adapter(tmp_path: Path) -> TensorboardAdapter:
    return TensorboardAdapter(logdir=str(tmp_path / "tb"), spool_dir=str(tmp_path / "spool"))


def accumulator(run_dir: Path) -> ea.EventAccumulator:
    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.TENSORS: 0},
                              purge_orphaned_data=False)
    acc.Reload()
    return acc


def tb_points(acc: ea.EventAccumulator, tag: str) -> list[tuple[int, int, Any]]:
    """(step, wall time in ms, value) of every tensor event of ``tag``, as TensorBoard has it."""
    return [(t.step, round(t.wall_time * 1000), tensor_util.make_ndarray(t.tensor_proto))
            for t in acc.Tensors(tag)]


def imported(logdir: Path) -> tuple[Any, list[Any]]:
    importer = TensorboardImporter(logdir)
    (src,) = list(importer.runs())
    return src, list(importer.events(src))


def run_dir(tmp_path: Path, run: RunInfo) -> Path:
    return tmp_path / "tb" / "proj" / f"my_run_{run.run_id[:8]}"


# -- tests ------------------------------------------------------------------------------------


def test_import_is_lazy_and_options_checked(tmp_path: Path) -> None:
    code = ("import sys, bridge.adapters.tensorboard, bridge.adapters.tensorboard.adapter; "
            "print('tensorboard' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "False", res.stderr
    assert load_adapter("tensorboard") is TensorboardAdapter
    with pytest.raises(AdapterError, match="unknown option"):
        TensorboardAdapter(logdir=str(tmp_path), mode="online")
    default = TensorboardAdapter(spool_dir=str(tmp_path / "spool"))
    assert default.logdir == (tmp_path / "spool" / N.DEFAULT_LOGDIR).resolve()
    assert N.readback_source(tmp_path / "spool", "p", "x", {}) == (
        str(tmp_path / "spool" / N.DEFAULT_LOGDIR), {"project": "p"})


def test_scalars_params_and_text_round_trip(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ev = Events(run.run_id)
    metrics = [ev("metric", "loss", step=s, ts=T0 + 1000 * s + 7, value=1.0 / (s + 3))
               for s in range(5)]
    metrics += [ev("metric", "loss", step=2, ts=T0 + 9_001, value=0.1),  # a step again
                ev("metric", "acc", step=10**12, ts=T0 + 3, value=math.nan),
                ev("metric", "system/cpu/percent", ts=T0 + 11, value=12.5),  # stepless
                ev("metric", "system/cpu/percent", ts=T0 + 12, value=13.25)]
    params = {"lr": 0.001, "epochs": 10, "opt": "adam", "nesterov": True,
              "model": {"depth": 4, "act": "gelu"}, "layers": [64, 32], "none": None}
    others = [ev("param", k, ts=T0 + 1, payload=v) for k, v in params.items()]
    others += [ev("tag", "team", ts=T0 + 2, payload="vision"),
               ev("note", "notes", ts=T0 + 2, payload="first *notes*"),
               ev("text", "log.txt", step=3, ts=T0 + 4, payload="line 1\nline 2"),
               ev("dict", "cfg.json", ts=T0 + 5, payload={"a": [1, 2]}),
               ev("summary", "best_acc", ts=T0 + 6, payload=0.875),
               ev("summary", "verdict", ts=T0 + 6, payload="good")]
    a = adapter(tmp_path)
    rel = a.open_run(run)
    assert rel == f"proj/my_run_{run.run_id[:8]}" and a.open_run(run) == rel  # idempotent
    result = a.export(run, metrics[:4] + others)
    assert result.rejected == {}
    assert a.export(run, metrics[4:]).rejected == {}
    a.close_run(run, "FINISHED", T0 + 60_000)
    directory = run_dir(tmp_path, run)
    assert sorted(p.name for p in directory.iterdir()) == [
        N.RUN_MARKER, N.batch_file_name(T0, 0), N.batch_file_name(T0, 1),
        N.batch_file_name(T0, N.CLOSE_FILE_KEY)]

    # TensorBoard's own reader: every point with its step, its wall time and its value.
    acc = accumulator(directory)
    for key in ("loss", "acc", "system/cpu/percent"):
        want = [(e.step, e.ts_ms, e.value) for e in metrics if e.key == key]
        got = tb_points(acc, key)
        assert len(got) == len(want)
        for (ws, wt, wv), (gs, gt, gv) in zip(want, got):
            assert gt == wt and gv.dtype.name == "float64"
            assert (gs == ws) if ws is not None else True
            assert (math.isnan(gv.item()) and math.isnan(wv)) or gv.item() == wv
    assert [s for s, _, _ in tb_points(acc, "system/cpu/percent")] == [0, 1]  # numbered
    assert acc.SummaryMetadata("loss").plugin_data.plugin_name == "scalars"
    texts = {t: tb_points(acc, t)[-1][2].item().decode() for t in acc.Tags()["tensors"]
             if acc.SummaryMetadata(t).plugin_data.plugin_name == "text"}
    assert texts == {"tags/team": "vision", "notes": "first *notes*",
                     "text/log.txt": "line 1\nline 2", "dict/cfg.json": '{"a": [1, 2]}',
                     "summary/verdict": "good"}
    assert tb_points(acc, "summary/best_acc")[0][2].item() == 0.875
    # The HParams plugin's session: start (every param), end (status, end time).
    start = hp_meta.parse_session_start_info_plugin_data(
        acc.SummaryMetadata(N.HPARAMS_START).plugin_data.content)
    assert start.group_name == "" and start.start_time_secs == T0 / 1000  # see hparams.py
    assert {k: v.WhichOneof("kind") for k, v in start.hparams.items()} == {
        "lr": "number_value", "epochs": "number_value", "opt": "string_value",
        "nesterov": "bool_value", "model.depth": "number_value", "model.act": "string_value",
        "layers": "string_value", "none": "string_value"}
    assert start.hparams["layers"].string_value == "[64, 32]"
    end = hp_meta.parse_session_end_info_plugin_data(
        acc.SummaryMetadata(N.HPARAMS_END).plugin_data.content)
    assert end.status == 1 and end.end_time_secs == (T0 + 60_000) / 1000  # STATUS_SUCCESS

    # bridge's importer reads the same points and params back.
    src, events = imported(tmp_path / "tb")
    assert src.start_ms == T0 and src.end_ms == T0 + 60_000
    for key in ("loss", "acc"):
        want = [(e.step, e.ts_ms, e.value) for e in metrics if e.key == key]
        got = [(e.step, e.ts_ms, e.value) for e in events if e.kind == "metric" and e.key == key]
        assert [(s, t) for s, t, _ in got] == [(s, t) for s, t, _ in want]
        assert all(g == w or (math.isnan(g) and math.isnan(w))
                   for (_, _, g), (_, _, w) in zip(got, want))
    got_params = {e.key: e.payload for e in events if e.kind == "param"}
    assert got_params["opt"] == "adam" and got_params["lr"] == 0.001
    assert got_params["nesterov"] is True and float(got_params["epochs"]) == 10
    assert got_params["model.act"] == "gelu" and got_params["none"] == "null"
    marker = json.loads((directory / N.RUN_MARKER).read_text())
    assert (marker["run_id"], marker["status"], marker["end_ms"]) == (
        run.run_id, "FINISHED", T0 + 60_000)


def test_media_round_trip_and_refusals(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ev = Events(run.run_id)
    blobs = tmp_path / "blobs"
    images = [png(6, 4, 10), png(6, 4, 200)]
    clip = wav(800)
    gif = png(2, 2, 1)  # replaced below by a real GIF
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (5, 3)).save(buf, format="GIF")
    gif = buf.getvalue()

    def item(data: bytes, mime: str, **facts: Any) -> dict[str, Any]:
        return {"sha256": add_blob(blobs, data), "size": len(data), "mime": mime,
                "name": "x", **facts}

    hist = {"edges": [0.0, 0.5, 1.25, 3.0], "counts": [3.0, 0.0, 7.0]}
    good = [
        ev("media", "samples", step=1, ts=T0 + 10, payload={
            "type": "image", "items": [item(images[0], "image/png", caption="a"),
                                       item(images[1], "image/png")], "data": None}),
        ev("media", "weights", step=2, ts=T0 + 20, payload={
            "type": "histogram", "items": [], "data": hist}),
        ev("media", "tone", step=3, ts=T0 + 30, payload={
            "type": "audio", "items": [item(clip, "audio/wav", caption="beep")], "data": None}),
        ev("media", "status", step=4, ts=T0 + 40, payload={
            "type": "text", "items": [], "data": {"text": "epoch 4"}}),
        ev("media", "anim", step=5, ts=T0 + 50, payload={
            "type": "video", "items": [item(gif, "image/gif")], "data": None}),
    ]
    bad = [
        ev("media", "song", step=1, payload={"type": "audio", "items": [
            item(b"ID3fake", "audio/mpeg")], "data": None}),
        ev("media", "movie", step=1, payload={"type": "video", "items": [
            item(b"\0\0\0 ftypmp4", "video/mp4")], "data": None}),
        ev("media", "preds", step=1, payload={"type": "table", "items": [],
                                              "data": {"columns": ["a"], "rows": [[1]]}}),
        ev("media", "page", step=1, payload={"type": "html", "items": [
            item(b"<p>hi</p>", "text/html")], "data": None}),
        ev("media", "lost", step=1, payload={"type": "image", "items": [
            {"sha256": "0" * 64, "size": 1, "mime": "image/png", "name": "x"}], "data": None}),
        ev("model", "m-" + "1" * 32, payload={"op": "create"}),
    ]
    a = adapter(tmp_path)
    a.open_run(run)
    result = a.export(run, good + bad)
    assert set(result.rejected) == {e.uid for e in bad}  # dead letters, each with its reason
    assert "WAV only" in result.rejected[bad[0].uid]
    assert "table" in result.rejected[bad[2].uid]
    assert "model registry" in result.rejected[bad[5].uid]

    acc = accumulator(run_dir(tmp_path, run))
    (s, t, arr) = tb_points(acc, "samples")[0]
    assert (s, t) == (1, T0 + 10)
    assert acc.SummaryMetadata("samples").plugin_data.plugin_name == "images"
    assert list(arr) == [b"6", b"4", *images]  # byte-identical images
    (s, t, arr) = tb_points(acc, "weights")[0]
    assert (s, t) == (2, T0 + 20) and arr.tolist() == [[0.0, 0.5, 3.0], [0.5, 1.25, 0.0],
                                                       [1.25, 3.0, 7.0]]
    (_, _, arr) = tb_points(acc, "tone")[0]
    assert arr.tolist() == [[clip, b"beep"]]
    assert acc.SummaryMetadata("tone").plugin_data.plugin_name == "audio"
    assert tb_points(acc, "status")[0][2].item() == b"epoch 4"
    assert list(tb_points(acc, "anim")[0][2])[2:] == [gif]

    _, events = imported(tmp_path / "tb")
    media = {e.key: e for e in events if e.kind == "media"}
    assert set(media) == {"samples", "weights", "tone", "status", "anim"}
    assert [f for _, f in media["samples"].files] == images
    assert media["samples"].payload["type"] == "image" and media["samples"].step == 1
    assert media["weights"].payload["data"] == hist
    assert [f for _, f in media["tone"].files] == [clip]
    assert media["tone"].payload["items"][0]["caption"] == "beep"
    assert media["tone"].payload["items"][0]["sample_rate"] == 8000
    assert media["status"].payload["data"] == {"text": "epoch 4"}
    assert [f for _, f in media["anim"].files] == [gif]


def test_replayed_batch_writes_no_duplicates(tmp_path: Path) -> None:
    """A sync killed after writing a batch but before the agent saved its cursor and the
    adapter's state hands over the same events again (and maybe more): same file, once."""
    run = make_run(tmp_path)
    ev = Events(run.run_id)
    first = [ev("metric", "loss", step=s, ts=T0 + s, value=float(s)) for s in range(10)]
    later = [ev("metric", "loss", step=s, ts=T0 + s, value=float(s)) for s in range(10, 15)]
    a = adapter(tmp_path)
    a.open_run(run)
    saved = json.loads(json.dumps(dict(run.state)))  # what the agent had committed
    assert a.export(run, first).rejected == {}
    # killed here: the next sync starts from the committed state and the same cursor
    directory = run_dir(tmp_path, run)
    (directory / f".bridge-writing-{uuid.uuid4().hex}.tmp").write_bytes(b"torn")

    def restarted() -> tuple[TensorboardAdapter, RunInfo]:
        info = make_run(tmp_path, run_id=run.run_id, state=json.loads(json.dumps(saved)),
                        remote_id=f"proj/my_run_{run.run_id[:8]}")
        fresh = adapter(tmp_path)
        fresh.open_run(info)
        return fresh, info

    b, replay = restarted()
    assert not list(directory.glob(".bridge-writing-*"))  # the torn file is gone
    assert b.export(replay, first).rejected == {}  # the same batch again
    b, replay = restarted()  # killed again; more events were recorded meanwhile
    assert b.export(replay, first + later).rejected == {}
    assert replay.state["next_file"] == 1
    acc = accumulator(directory)
    assert [(s, v.item()) for s, _, v in tb_points(acc, "loss")] == [
        (s, float(s)) for s in range(15)]
    _, events = imported(tmp_path / "tb")
    assert sorted(e.step for e in events if e.kind == "metric") == list(range(15))
    # A dead letter redelivered later (after the cursor moved on) gets a file of its own.
    assert b.export(replay, [first[3]]).rejected == {}
    assert replay.state["next_file"] == 2
    assert len(list(directory.glob(N.EVENT_FILE_PREFIX + "*"))) == 2


def test_sync_killed_before_its_commit_resumes_without_duplicates(tmp_path: Path) -> None:
    """The agent process dies after the adapter wrote its second batch's file and before
    the cursor was saved: the next sync re-batches from the saved cursor and replaces that
    file; every point is in TensorBoard once."""
    import bridge
    from bridge.agent.sync import Syncer

    spool, logdir = tmp_path / "spool", tmp_path / "tb"
    run = bridge.init(project="proj", name="my run", dir=spool, sync="offline",
                      backends=[{"name": "tensorboard", "logdir": str(logdir)}])
    n = 2 * TensorboardAdapter.limits.max_events + 500  # three batches
    for s in range(n):
        run.log({"loss": s * 0.5}, step=s)
    run.finish()
    child = textwrap.dedent("""
        import os, sys
        from pathlib import Path
        from bridge.agent.state import StateStore
        from bridge.agent.sync import Syncer

        commit, calls = StateStore.commit_batch, []

        def killed_at_second_commit(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                os._exit(9)  # as a SIGKILL: no cleanup, the cursor is not saved
            return commit(self, *args, **kwargs)

        StateStore.commit_batch = killed_at_second_commit
        Syncer(Path(sys.argv[1])).run_once()
    """)
    proc = subprocess.run([sys.executable, "-c", child, str(spool)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr
    directory = logdir / "proj" / f"my_run_{run.id[:8]}"
    written = sorted(p.name for p in directory.glob(N.EVENT_FILE_PREFIX + "*"))
    assert written == [N.batch_file_name(run.start_ms, i) for i in (0, 1)]

    (result,) = Syncer(spool).run_once().results
    assert result.error is None and result.pending == 0 and result.dead == 0, result
    written = sorted(p.name for p in directory.glob(N.EVENT_FILE_PREFIX + "*"))
    assert written == [N.batch_file_name(run.start_ms, i) for i in (0, 1, 2)] + [
        N.batch_file_name(run.start_ms, N.CLOSE_FILE_KEY)]
    points = tb_points(accumulator(directory), "loss")
    assert [(s, v.item()) for s, _, v in points] == [(s, s * 0.5) for s in range(n)]


def test_artifacts_are_copied_under_the_run(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ev = Events(run.run_id)
    data = b"weights" * 100
    sha = add_blob(tmp_path / "blobs", data)
    good = ev("artifact", "model", payload={"name": "model", "type": "model", "is_dir": True,
                                            "files": [{"path": "ckpt/w.bin", "sha256": sha,
                                                       "size": len(data)}]})
    bad = ev("artifact", "evil", payload={"name": "evil", "files": [
        {"path": "../../x", "sha256": sha, "size": len(data)}]})
    a = adapter(tmp_path)
    a.open_run(run)
    result = a.export(run, [good, bad])
    assert list(result.rejected) == [bad.uid]
    copied = run_dir(tmp_path, run) / N.ARTIFACTS_DIR / "model" / "ckpt" / "w.bin"
    assert copied.read_bytes() == data
    assert a.export(run, [good]).rejected == {}  # again: replaced, same bytes
    assert copied.read_bytes() == data
    assert not (tmp_path / "tb" / "x").exists()


def test_close_run_is_idempotent_and_keeps_the_status(tmp_path: Path) -> None:
    run = make_run(tmp_path, name=None)
    a = adapter(tmp_path)
    assert a.open_run(run) == f"proj/{run.run_id}"
    a.close_run(run, "KILLED", T0 + 4_000)  # a close that was not saved, then again
    a.close_run(run, "FAILED", T0 + 5_000)
    directory = tmp_path / "tb" / "proj" / run.run_id
    assert len(list(directory.glob(N.EVENT_FILE_PREFIX + "*"))) == 1
    acc = accumulator(directory)
    end = hp_meta.parse_session_end_info_plugin_data(
        acc.SummaryMetadata(N.HPARAMS_END).plugin_data.content)
    assert end.status == 2 and end.end_time_secs == (T0 + 5_000) / 1000  # STATUS_FAILURE
    assert len(acc.Tensors(N.HPARAMS_END)) == 1
    assert json.loads((directory / N.RUN_MARKER).read_text())["status"] == "FAILED"


def _post(url: str, body: dict[str, Any]) -> Any:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def _get(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def test_tensorboard_server_shows_runs_by_project_and_hparams_sessions(tmp_path: Path) -> None:
    """``tensorboard --logdir`` itself: runs named <project>/<run>, and the HParams tab's
    sessions with their params, status and final metric."""
    import socket
    import time

    logdir = tmp_path / "tb"
    a = adapter(tmp_path)
    runs = []
    for i in range(2):
        run = make_run(tmp_path, name=f"trial{i}")
        ev = Events(run.run_id)
        a.open_run(run)
        a.export(run, [ev("param", "lr", ts=T0, payload=0.1 * (i + 1)),
                       ev("param", "opt", ts=T0, payload="adam"),
                       *[ev("metric", "loss", step=s, ts=T0 + s, value=s + i) for s in range(3)]])
        a.close_run(run, "FINISHED" if i == 0 else "FAILED", T0 + 100)
        runs.append(f"proj/trial{i}_{run.run_id[:8]}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                             "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, tags = time.monotonic() + 90, {}
        while time.monotonic() < deadline:
            try:
                tags = _get(base + "/data/plugin/scalars/tags")
                if len(tags) == 2:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert sorted(tags) == runs and all("loss" in t for t in tags.values())
        groups = _post(base + "/data/plugin/hparams/session_groups", {
            "experimentName": "", "colParams": [], "startIndex": 0, "sliceSize": 10,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                "STATUS_RUNNING"]})
        got = {g["name"]: (g["hparams"], g["sessions"][0]["status"],
                           g["metricValues"][0]["value"]) for g in groups["sessionGroups"]}
        assert got == {runs[0]: ({"lr": 0.1, "opt": "adam"}, "STATUS_SUCCESS", 2.0),
                       runs[1]: ({"lr": 0.2, "opt": "adam"}, "STATUS_FAILURE", 3.0)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _importer_knows_bridge_runs() -> bool:
    from bridge.adapters.tensorboard import importer

    return hasattr(importer, "read_run_marker")


def test_through_bridge_the_agent_and_verify(tmp_path: Path) -> None:
    """bridge.init -> log -> finish -> sync -> TensorBoard sees everything; bridge verify
    reads the run back with the TensorBoard importer."""
    import numpy as np

    import bridge
    from bridge.agent.sync import Syncer
    from bridge.verify import verify_run

    spool, logdir = tmp_path / "spool", tmp_path / "tb"
    run = bridge.init(project="vision", name="resnet", dir=spool, sync="offline",
                      backends=[{"name": "tensorboard", "logdir": str(logdir)}])
    run.log_params({"lr": 0.01, "opt": "sgd", "arch": {"width": 0.5}, "epochs": 3})
    run.set_tag("team", "vision")
    arrays = [(np.arange(8 * 8 * 3).reshape(8, 8, 3) * (s + 1) % 256).astype(np.uint8)
              for s in range(3)]
    for s in range(3):
        run.log({"loss": 1.0 / (s + 1), "acc": 0.3 * s + 0.1,
                 "samples": bridge.Image(arrays[s]),
                 "weights": bridge.Histogram(np.arange(10 + s), bins=4),
                 "status": f"epoch {s}"}, step=s)
    run.log({"tone": bridge.Audio(np.sin(np.arange(800) / 10) * 0.5, sample_rate=8000),
             "page": bridge.Html("<p>no place in TensorBoard</p>")}, step=3)
    run.summary["best_acc"] = 0.7
    run.summary["verdict"] = "good"
    weights = tmp_path / "weights.bin"
    weights.write_bytes(bytes(range(256)) * 4)
    run.log_artifact(weights, name="model")
    run.finish()
    (result,) = Syncer(spool).run_once().results
    assert result.error is None and result.pending == 0, result
    from bridge.agent.state import StateStore

    (letter,) = StateStore(spool).dead_letters("tensorboard", run.id)  # the html page
    assert "cannot hold html media" in letter.reason

    (directory,) = (logdir / "vision").iterdir()
    assert directory.name == f"resnet_{run.id[:8]}"
    acc = accumulator(directory)
    assert [v.item() for _, _, v in tb_points(acc, "loss")] == [1.0, 0.5, 1.0 / 3]
    assert [s for s, _, _ in tb_points(acc, "acc")] == [0, 1, 2]
    assert len(tb_points(acc, "samples")) == 3 and len(tb_points(acc, "weights")) == 3
    assert [v.item() for _, _, v in tb_points(acc, "status")] == [b"epoch 0", b"epoch 1",
                                                                   b"epoch 2"]
    assert tb_points(acc, "tags/team")[0][2].item() == b"vision"
    assert acc.SummaryMetadata("tone").plugin_data.plugin_name == "audio"
    start = hp_meta.parse_session_start_info_plugin_data(
        acc.SummaryMetadata(N.HPARAMS_START).plugin_data.content)
    assert start.hparams["lr"].number_value == 0.01
    assert start.hparams["arch.width"].number_value == 0.5

    if not _importer_knows_bridge_runs():
        pytest.xfail("the TensorBoard importer does not read the run marker yet")
    rep = verify_run(spool, run.id, "tensorboard")
    assert rep.found, rep.notes
    for name in ("points", "steps", "timestamps", "params", "tags", "start_time", "name",
                 "summary", "artifact_files"):
        count = rep.fields[name]
        assert count.kept == count.expected > 0, (name, rep.per_key)
    for name in ("media", "media_files", "media_data"):  # all but the refused html page
        count = rep.fields[name]
        assert count.lost == 1 and count.expected > 1, (name, rep.media_per_key)
    assert rep.media_per_key["page"]["kept"] == 0
    assert all(c["kept"] == c["expected"] == c["data_kept"] and c["files_kept"] == c["files"]
               for key, c in rep.media_per_key.items() if key != "page"), rep.media_per_key
