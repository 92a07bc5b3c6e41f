"""The trackio adapter against the real trackio package.

What the adapter wrote is read back with trackio's own storage API (``SQLiteStorage``) in a
child process whose ``TRACKIO_DIR`` is the test's directory (trackio binds its directory at
import), and compared point by point: values, steps, ISO timestamps, config, system
metrics, alerts, media files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("trackio")

from bridge.adapters.base import Event, Outcome, RunInfo, load_adapter  # noqa: E402
from bridge.adapters.trackio import names as N  # noqa: E402
from bridge.adapters.trackio.store import store_env  # noqa: E402

RUN_ID = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_123


class Events:
    """Spool-like events with increasing seq."""

    def __init__(self, file_id: str = "f1") -> None:
        self.file_id, self.seq = file_id, 0

    def __call__(self, kind: str, key: str | None, *, step: int | None = None,
                 ts: int | None = None, value: float | None = None, payload: Any = None) -> Event:
        self.seq += 1
        return Event(self.file_id, self.seq, RUN_ID, kind, key, step,
                     T0 + self.seq * 7 if ts is None else ts, value, payload, "n0")


def put_blob(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (root / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha[:2] / sha).write_bytes(data)
    return sha


def make_run(tmp_path: Path, **kw: Any) -> RunInfo:
    return RunInfo(run_id=RUN_ID, project=kw.pop("project", "demo"), name=kw.pop("name", "base"),
                   start_ms=T0, blob_root=tmp_path / "blobs", group=kw.pop("group", "g1"), **kw)


def trackio_read(root: Path, code: str) -> Any:
    """Run ``code`` (which sets ``out``) with trackio bound to ``root``; return ``out``."""
    script = "import json\nfrom trackio.sqlite_storage import SQLiteStorage as S\n" + \
        textwrap.dedent(code) + "\nprint('@@' + json.dumps(out, default=str))\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=store_env(root), timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


@pytest.fixture
def adapter(tmp_path: Path):
    made = load_adapter("trackio")(dir=str(tmp_path / "trackio"), spool_dir=str(tmp_path / "spool"))
    yield made
    made.shutdown()


def _batch(tmp_path: Path) -> tuple[list[Event], str]:
    ev = Events()
    png = put_blob(tmp_path / "blobs", b"\x89PNG\r\n\x1a\nnot-really-a-png")
    batch = [
        ev("param", "lr", payload=0.001),
        ev("param", "model", payload={"depth": 4, "act": "gelu"}),
        ev("tag", "team", payload="vision"),
        ev("summary", "best", payload=0.93),
        ev("note", "notes", payload="first try"),
        ev("system", "system", payload={"host": "gpu-1"}),
    ]
    for step in range(4):
        batch.append(ev("metric", "loss", step=step, value=1.0 / (step + 1)))
        batch.append(ev("metric", "acc", step=step, value=step / 4))
    batch += [
        ev("metric", "step", step=4, value=9.0),  # a reserved key: trackio's renaming
        ev("metric", "nan", step=4, value=float("nan")),
        ev("metric", "system/cpu/percent", value=12.5),
        ev("metric", "system/cpu/percent", value=14.0),
        ev("metric", "free", value=3.0),  # stepless, not a system series
        ev("event", "lr_drop", step=2, payload={"to": 0.0001}),
        ev("media", "sample", step=1, payload={
            "type": "image", "data": None,
            "items": [{"sha256": png, "size": 23, "mime": "image/png", "name": "s.png",
                       "caption": "a cat", "width": 1, "height": 1}]}),
        ev("media", "weights", step=2, payload={
            "type": "histogram", "items": [],
            "data": {"edges": [0.0, 0.5, 1.0], "counts": [3, 4]}}),
        ev("media", "status", step=3, payload={"type": "text", "items": [],
                                               "data": {"text": "epoch 3"}}),
        ev("artifact", "my model", step=3, payload={"name": "my model", "type": "model", "files": [
            {"path": "weights.bin", "sha256": png, "size": 23}]}),
    ]
    return batch, png


def test_export_reads_back_with_trackio_storage(tmp_path: Path, adapter: Any) -> None:
    run = make_run(tmp_path)
    batch, png = _batch(tmp_path)
    adapter.open_run(run)
    result = adapter.export(run, batch)
    assert result.outcome is Outcome.SUCCESS and not result.rejected
    adapter.close_run(run, "FINISHED", T0 + 10_000)

    root = tmp_path / "trackio"
    got = trackio_read(root, f"""
        out = {{"records": S.get_run_records("demo"),
               "logs": S.get_logs("demo", run_id="{RUN_ID}"),
               "config": S.get_run_config("demo", run_id="{RUN_ID}"),
               "system": S.get_system_logs("demo", run_id="{RUN_ID}"),
               "alerts": S.get_alerts("demo", run_id="{RUN_ID}"),
               "artifacts": S.get_run_artifacts("demo", "base", run_id="{RUN_ID}")}}
    """)
    assert [(r["id"], r["name"]) for r in got["records"]] == [(RUN_ID, "base")]

    by_event = {(e.key, e.step): e for e in batch if e.kind == "metric" and e.step is not None}
    points = [(k, row["step"], row["timestamp"], v) for row in got["logs"]
              for k, v in row.items() if k not in ("step", "timestamp")]
    for key in ("loss", "acc"):
        mine = sorted((s, ts, v) for k, s, ts, v in points if k == key)
        assert mine == [(s, N.iso_from_ms(by_event[(key, s)].ts_ms), by_event[(key, s)].value)
                        for s in range(4)]
    assert [(s, v) for k, s, _, v in points if k == "__step"] == [(4, 9.0)]
    (nan,) = [v for k, _, _, v in points if k == "nan"]  # stored "NaN", read back as NaN
    assert math.isnan(nan)
    free = [(s, ts, v) for k, s, ts, v in points if k == "free"]
    assert free == [(5, N.iso_from_ms(next(e.ts_ms for e in batch if e.key == "free")), 3.0)]

    media = {k: (s, v) for k, s, _, v in points if isinstance(v, dict)}
    assert media["sample"][0] == 1 and media["sample"][1]["_type"] == "trackio.image"
    assert media["sample"][1]["caption"] == "a cat"
    stored = root / "media" / media["sample"][1]["file_path"]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == png
    assert media["weights"] == (2, {"_type": "trackio.histogram", "bins": [0.0, 0.5, 1.0],
                                    "values": [3, 4]})
    assert media["status"] == (3, {"_type": "trackio.markdown", "_value": "epoch 3"})

    cfg = got["config"]
    assert cfg["lr"] == 0.001 and cfg["model"] == {"depth": 4, "act": "gelu"}
    assert cfg["_Group"] == "g1" and cfg["_Created"] == N.iso_from_ms(T0)
    assert cfg["bridge/tags"] == {"team": "vision"} and cfg["bridge/summary"] == {"best": 0.93}
    assert cfg["bridge/notes"] == "first try" and cfg["bridge/system"] == {"host": "gpu-1"}
    assert cfg["bridge/status"] == "FINISHED"
    assert cfg["bridge/end_time"] == N.iso_from_ms(T0 + 10_000)

    sys_points = [(r["timestamp"], r["cpu/percent"]) for r in got["system"]]
    assert sys_points == [(N.iso_from_ms(e.ts_ms), e.value) for e in batch
                          if e.key == "system/cpu/percent"]
    (alert,) = got["alerts"]
    assert (alert["title"], alert["step"]) == ("lr_drop", 2)
    assert json.loads(alert["text"]) == {"to": 0.0001}
    assert "my_model" in json.dumps(got["artifacts"])

    # what `trackio show` asks of its server, through the dashboard's own handlers (no server)
    dash = trackio_read(root, f"""
        from trackio import server
        out = {{"projects": server.get_all_projects(),
               "runs": server.get_runs_for_project("demo"),
               "metrics": server.get_metrics_for_run("demo", run_id="{RUN_ID}"),
               "system": server.get_system_metrics_for_run("demo", run_id="{RUN_ID}"),
               "summary": server.get_run_summary("demo", run_id="{RUN_ID}"),
               "tabs": server.get_tab_availability("demo")}}
    """)
    assert dash["projects"] == ["demo"] and [r["id"] for r in dash["runs"]] == [RUN_ID]
    assert {"loss", "acc", "free", "__step"} <= set(dash["metrics"])
    assert dash["system"] == ["cpu/percent"]
    assert dash["summary"]["last_step"] == 5 and dash["summary"]["config"]["lr"] == 0.001
    assert {k for k, v in dash["tabs"].items() if v} >= {"metrics", "system", "media", "reports",
                                                         "artifacts"}
    blob = root / "artifacts" / "demo" / "blobs" / "sha256" / png[:2] / png
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == png


def test_replayed_batches_write_nothing_twice(tmp_path: Path, adapter: Any) -> None:
    """A sync killed after trackio wrote and before the cursor moved sends the batch again,
    possibly cut differently: every row names its spool event (log_id), trackio ignores it."""
    run = make_run(tmp_path)
    batch, _ = _batch(tmp_path)
    assert adapter.export(run, batch).outcome is Outcome.SUCCESS
    fresh = load_adapter("trackio")(dir=str(tmp_path / "trackio"))  # a new sync process
    assert fresh.export(run, batch).outcome is Outcome.SUCCESS
    assert fresh.export(run, batch[3:12]).outcome is Outcome.SUCCESS
    assert fresh.export(run, batch[10:]).outcome is Outcome.SUCCESS
    got = trackio_read(tmp_path / "trackio", f"""
        out = {{"logs": S.get_logs("demo", run_id="{RUN_ID}"),
               "system": S.get_system_logs("demo", run_id="{RUN_ID}"),
               "alerts": S.get_alerts("demo", run_id="{RUN_ID}")}}
    """)
    rows = [e for e in batch if e.kind in ("media",) or (e.kind == "metric" and not (
        e.step is None and e.key.startswith("system/")))]
    assert len(got["logs"]) == len(rows)
    assert len(got["system"]) == 2 and len(got["alerts"]) == 1
    versions = trackio_read(tmp_path / "trackio", """
        import sqlite3
        conn = sqlite3.connect(str(S.get_project_db_path("demo")))
        out = [conn.execute("SELECT COUNT(*) FROM artifact_versions").fetchone()[0],
               conn.execute("SELECT COUNT(*) FROM run_artifact_links").fetchone()[0]]
    """)
    assert versions == [1, 1]
    media_files = [p for p in (tmp_path / "trackio" / "media").rglob("*") if p.is_file()]
    assert len(media_files) == 1


def test_what_trackio_cannot_hold_is_rejected_with_a_reason(tmp_path: Path, adapter: Any) -> None:
    run = make_run(tmp_path)
    ev = Events()
    sha = put_blob(tmp_path / "blobs", b"w")
    batch = [
        ev("artifact", "model", payload={"name": "model", "type": "model", "files": [
            {"path": "a", "sha256": sha, "size": 1}, {"path": "a/b", "sha256": sha, "size": 1}]}),
        ev("text", "notes.txt", payload="x"),
        ev("param", "_Created", payload="no"),
        ev("param", "bridge/tags", payload="no"),
        ev("media", "pr", step=0, payload={"type": "curve", "items": [],
                                           "data": {"x": [0, 1], "y": [1, 0]}}),
        ev("media", "gone", step=0, payload={"type": "image", "data": None, "items": [
            {"sha256": "ab" * 32, "size": 3, "mime": "image/png", "name": "x.png"}]}),
        ev("metric", "kept", step=0, value=1.0),
    ]
    result = adapter.export(run, batch)
    assert result.outcome is Outcome.SUCCESS
    assert set(result.rejected) == {e.uid for e in batch[:-1]}
    assert "both a file and a directory" in result.rejected[batch[0].uid]
    assert "reserved" in result.rejected[batch[2].uid]
    assert "curve" in result.rejected[batch[4].uid]
    assert "missing" in result.rejected[batch[5].uid]
    logs = trackio_read(tmp_path / "trackio", f'out = S.get_logs("demo", run_id="{RUN_ID}")')
    assert [(r["step"], r["kept"]) for r in logs] == [(0, 1.0)]


def test_store_process_is_offline_and_leaves_the_host_alone(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            adapter: Any) -> None:
    """Variables that make trackio download from or upload to the Hub never reach the store
    process; the host's environment is unchanged."""
    for var in ("TRACKIO_DATASET_ID", "SPACE_REPO_NAME", "TRACKIO_BUCKET_ID", "SPACE_ID"):
        monkeypatch.setenv(var, "someone/somewhere")
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # anything asked of the Hub fails
    before = dict(os.environ)
    env = store_env(tmp_path / "trackio")
    assert not set(N.SCRUBBED_ENV) - {"TRACKIO_STORAGE_MODE"} & set(env)
    assert env["HF_HUB_OFFLINE"] == "1" and env[N.DIR_ENV] == str(tmp_path / "trackio")
    run = make_run(tmp_path)
    ev = Events()
    assert adapter.export(run, [ev("metric", "loss", step=0, value=0.5)]).outcome is Outcome.SUCCESS
    assert dict(os.environ) == before
    assert sorted(p.name for p in (tmp_path / "trackio").iterdir()
                  if p.suffix == ".db") == ["demo.db"]
    assert trackio_read(tmp_path / "trackio", f'out = S.get_logs("demo", run_id="{RUN_ID}")')[0][
        "loss"] == 0.5


def test_synced_run_verifies_whole(tmp_path: Path) -> None:
    """Through bridge's API, the agent and `bridge verify`: every point with its step and
    timestamp, params, tags, summary and media read back at 100 %."""
    import bridge
    from bridge.agent.sync import Syncer
    from bridge.verify import verify_run

    spool, out = tmp_path / "spool", tmp_path / "trackio"
    run = bridge.init(project="vision", name="resnet", dir=spool, sync="offline",
                      config={"lr": 0.01, "opt": {"name": "adam", "betas": [0.9, 0.99]}},
                      backends=[{"name": "trackio", "dir": str(out)}])
    run.set_tags({"team": "cv"})
    arrays = [(np.arange(8 * 8 * 3).reshape(8, 8, 3) * (s + 1) % 256).astype(np.uint8)
              for s in range(4)]
    for s in range(3):
        run.log({"loss": 1.0 / (s + 1), "acc": s / 3,
                 "img": bridge.Image(arrays[s], caption=f"step {s}"),
                 "weights": bridge.Histogram(np.arange(10 + s), bins=4),
                 "status": f"epoch {s}",
                 "pair": [bridge.Image(arrays[s]), bridge.Image(arrays[s + 1])]}, step=s)
    run.log({"preds": bridge.Table(columns=["id", "image", "label"],
                                   data=[[1, bridge.Image(arrays[0]), "cat"], [2, None, "dog"]]),
             "tone": bridge.Audio(np.sin(np.arange(800) / 10) * 0.5, sample_rate=8000),
             "clip": bridge.Video(np.zeros((3, 3, 8, 8), np.uint8), fps=2),
             "page": bridge.Html("<p>hi</p>")}, step=3)
    run.log_metrics({"stepless": 2.5}, timestamp=1_700_000_123_456)
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "w.bin").write_bytes(b"\x00weights\xff")
    (model / "sub" / "cfg.json").write_text('{"depth": 4}')
    run.log_artifact(model, name="resnet model")
    run.summary["best"] = 0.99
    run.finish()
    results = Syncer(spool).run_once().results
    assert all(r.error is None and r.pending == 0 and r.dead == 0 for r in results), results

    rep = verify_run(spool, run.id, "trackio")
    assert rep.found and rep.complete, rep.as_dict()
    for name, count in rep.fields.items():
        assert count.kept == count.expected, (name, rep.as_dict())
    assert rep.fields["points"].expected >= 7 and rep.fields["media"].expected >= 13
    assert rep.fields["media_files"].expected >= 12
    assert rep.fields["artifact_files"].expected == 2


def test_names_match_trackio(tmp_path: Path) -> None:
    """bridge's copy of trackio's names agrees with the installed trackio."""
    got = trackio_read(tmp_path / "trackio", """
        from trackio import utils
        from trackio.table import Table
        from trackio.histogram import Histogram
        from trackio.markdown import Markdown
        from trackio.media import TrackioImage, TrackioVideo, TrackioAudio
        names = ["my.model", "a b/c", "...", "ok-1_x"]
        out = {"canonical": [utils.canonical_project_name(n) for n in names],
               "reserved": sorted(utils.RESERVED_KEYS), "dir": str(utils.TRACKIO_DIR),
               "types": [Table.TYPE, Histogram.TYPE, Markdown.TYPE, TrackioImage.TYPE,
                         TrackioVideo.TYPE, TrackioAudio.TYPE]}
    """)
    assert got["canonical"] == [N.canonical_project(n)
                                for n in ["my.model", "a b/c", "...", "ok-1_x"]]
    assert got["reserved"] == sorted(N.RESERVED_KEYS)
    assert got["dir"] == str(tmp_path / "trackio")
    assert got["types"] == [N.T_TABLE, N.T_HISTOGRAM, N.T_MARKDOWN, N.T_IMAGE, N.T_VIDEO, N.T_AUDIO]
    assert N.default_dir({"HF_HOME": "/x/hf"}) == Path("/x/hf/trackio")
    assert N.default_dir({"TRACKIO_DIR": "/y", "HF_HOME": "/x"}) == Path("/y")
    assert N.ms_from_iso(N.iso_from_ms(T0)) == T0
    assert N.parse_log_id(N.log_id("a|b", 7, stepless=True)) == ("a|b", 7, True)


def test_a_wiped_trackio_directory_is_noticed(tmp_path: Path, adapter: Any) -> None:
    from bridge.adapters.base import RemoteRunLost

    run = make_run(tmp_path)
    with pytest.raises(RemoteRunLost):
        adapter.check_remote(run)
    ev = Events()
    assert adapter.export(run, [ev("metric", "loss", step=0, value=0.5)]).outcome is Outcome.SUCCESS
    adapter.check_remote(run)  # there: nothing raised
    other = make_run(tmp_path, project="elsewhere")
    with pytest.raises(RemoteRunLost):
        adapter.check_remote(other)
    (tmp_path / "trackio" / "demo.db").unlink()
    with pytest.raises(RemoteRunLost):
        adapter.check_remote(run)
