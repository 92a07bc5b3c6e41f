"""The W&B importer on offline runs written by the real wandb SDK, and on runs that
bridge's own W&B adapter wrote (the ``bridge verify`` path)."""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("wandb")

from bridge.adapters.base import Event, RunInfo  # noqa: E402
from bridge.importers import make_importer  # noqa: E402
from bridge.adapters.importing import ImportEvent, bridge_run_id  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.adapters.wandb.importer import WandbImporter, status_of_exit  # noqa: E402

T0 = 1_700_000_000_000
RID = "0123456789abcdef0123456789abcdef"

NATIVE = textwrap.dedent(
    """
    import sys, wandb
    out, run_id, phase = sys.argv[1], sys.argv[2], sys.argv[3]
    settings = wandb.Settings(silent=True, console="off", disable_git=True,
        disable_code=True, x_disable_stats=True, x_disable_meta=True,
        x_disable_machine_info=True, x_save_requirements=False)
    if phase == "1":
        run = wandb.init(project="native", id=run_id, name="first name", notes="n1",
            group="g", tags=["baseline", "lr:0.1"], mode="offline", dir=out,
            config={"lr": 0.1, "model": {"depth": 4}}, settings=settings)
        for i in range(5):
            run.log({"loss": 1.0 / (i + 1), "acc": i / 10, "label": "x"}, step=i)
        run.log({"odd": float("nan")}, step=5)
        with open(run.dir + "/report.txt", "w") as f:
            f.write("report body")
        run.save(run.dir + "/report.txt", base_path=run.dir, policy="now")
        art = wandb.Artifact("weights", type="model")
        with open(out + "/w.bin", "wb") as f:
            f.write(b"\\x00\\x01weights")
        art.add_file(out + "/w.bin", name="w.bin")
        run.log_artifact(art)
        run.summary["best"] = 0.25
        run.finish()
    else:
        run = wandb.init(project="native", id=run_id, mode="offline", dir=out,
            resume="allow", config={"epochs": 3}, settings=settings)
        for i in range(6, 9):
            run.log({"loss": 1.0 / (i + 1)}, step=i)
        run.finish(exit_code=3)
    """
)


def _sdk(out: Path, *args: str) -> None:
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(out),
               WANDB_CONFIG_DIR=str(out / "cfg"), WANDB_CACHE_DIR=str(out / "cache"),
               WANDB_DATA_DIR=str(out / "data"), WANDB_ARTIFACT_DIR=str(out / "arts"),
               HOME=str(out / "home"))
    env.pop("WANDB_API_KEY", None)
    subprocess.run([sys.executable, "-c", NATIVE, str(out), *args], env=env, check=True,
                   timeout=120)


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wandb_native")
    _sdk(out, "nat12345", "1")
    _sdk(out, "nat12345", "2")
    return out


def _events(importer: WandbImporter) -> tuple[Any, list[ImportEvent]]:
    (run,) = list(importer.runs())
    return run, list(importer.events(run))


def _metrics(events: list[ImportEvent]) -> dict[str, list[tuple[Any, int, float]]]:
    out: dict[str, list[tuple[Any, int, float]]] = {}
    for e in events:
        if e.kind == "metric":
            out.setdefault(e.key, []).append((e.step, e.ts_ms, e.value))
    return out


def _by(events: list[ImportEvent], kind: str) -> dict[str | None, Any]:
    return {e.key: e.payload for e in events if e.kind == kind}


# -- a run written by the wandb SDK ----------------------------------------------------


def test_native_run_with_resumed_fragment(native_dir: Path) -> None:
    run, events = _events(WandbImporter(native_dir))
    assert run.source_id == "nat12345"
    assert run.run_id == bridge_run_id("wandb", "nat12345") != "nat12345"
    assert (run.project, run.name, run.notes, run.group) == ("native", "first name", "n1", "g")
    assert run.status == "FAILED"  # the resumed session finished with exit code 3
    assert run.start_ms > 0 and run.end_ms and run.end_ms >= run.start_ms
    m = _metrics(events)
    assert [s for s, _, _ in m["loss"]] == [0, 1, 2, 3, 4, 6, 7, 8]
    assert [v for _, _, v in m["loss"]] == pytest.approx([1 / (i + 1) for i in (0, 1, 2, 3, 4, 6, 7, 8)])
    assert all(ts > 1_600_000_000_000 for _, ts, _ in m["loss"])
    assert math.isnan(m["odd"][0][2]) and m["odd"][0][0] == 5
    assert not any(k.startswith("_") for k in m)
    params = _by(events, "param")
    assert params == {"lr": 0.1, "model": {"depth": 4}, "epochs": 3}
    tags = _by(events, "tag")
    assert tags == {"baseline": "", "lr:0.1": ""}  # labels of a W&B-native run stay labels
    summary = _by(events, "summary")
    assert summary["best"] == 0.25
    assert "loss" not in summary  # W&B's automatic last-value summary is not a summary
    assert [e.payload["data"] for e in events
            if e.kind == "media" and e.key == "label"][0] == {"text": "x"}  # a text point
    arts = {e.key: e for e in events if e.kind == "artifact"}
    assert arts["report.txt"].files[0][1].read_text() == "report body"
    (rel, local), = arts["weights"].files
    assert rel == "w.bin" and arts["weights"].artifact_type == "model"
    assert local.read_bytes() == b"\x00\x01weights"


def test_native_run_through_the_sink(native_dir: Path, tmp_path: Path) -> None:
    imp = make_importer("wandb", str(native_dir / "wandb"))
    (result,) = import_runs(imp, tmp_path / "spool")
    assert result.points["loss"] == 8
    conn = sqlite3.connect(result.path)
    tags = dict(conn.execute("SELECT key, payload FROM events WHERE kind='tag'").fetchall())
    assert tags["bridge.source_id"] == '"nat12345"'
    blobs = conn.execute("SELECT payload FROM events WHERE kind='artifact'").fetchall()
    conn.close()
    assert len(blobs) == 2
    again = import_runs(make_importer("wandb", str(native_dir)), tmp_path / "spool")
    assert again[0].skipped  # resumable: a second import adds nothing


def test_truncated_log_keeps_complete_records(native_dir: Path, tmp_path: Path) -> None:
    import shutil

    from bridge.adapters.wandb.log import find_run_logs

    first = find_run_logs(native_dir / "wandb", "nat12345")[0]
    copy = tmp_path / "wandb" / first.parent.name
    shutil.copytree(first.parent, copy)
    log = copy / first.name
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 40])  # a writer killed mid-record
    run, events = _events(WandbImporter(tmp_path))
    assert run.extra_tags["bridge.import.truncated"] == "true"
    assert len(_metrics(events)["loss"]) == 5  # rows before the tear survive


def test_exit_codes() -> None:
    assert [status_of_exit(c) for c in (0, 1, 137, -9, None)] == [
        "FINISHED", "FAILED", "KILLED", "KILLED", "KILLED"]


def test_bad_location_and_options(tmp_path: Path) -> None:
    from bridge.adapters.importing import ImportError_

    with pytest.raises(ImportError_):
        list(WandbImporter(tmp_path / "missing").runs())
    with pytest.raises(ImportError_):
        WandbImporter(tmp_path, bogus=1)
    assert list(WandbImporter(tmp_path).runs()) == []


# -- a run written by bridge's W&B adapter --------------------------------------------


def _blob(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (root / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha[:2] / sha).write_bytes(data)
    return sha


def test_bridge_written_run_round_trips(tmp_path: Path) -> None:
    from bridge.adapters.wandb import WandbAdapter

    out = tmp_path / "wb"
    blobs = tmp_path / "blobs"
    sha = _blob(blobs, b"model bytes")
    seq = iter(range(1, 10_000))

    def ev(kind: str, key: str | None, ts: int, **kw: Any) -> Event:
        return Event("f0", next(seq), RID, kind, key, kw.pop("step", None), ts, **kw)

    batch1 = [ev("metric", "loss", T0 + i, step=s, value=v)
              for i, (s, v) in enumerate([(0, 1.0), (1, 0.5), (1, 0.4), (0, float("inf"))])]
    batch1 += [ev("param", "opt", T0, payload={"name": "adam", "betas": [0.9, 0.99]}),
               ev("tag", "team", T0, payload="vision"), ev("tag", "baseline", T0, payload=""),
               ev("summary", "best", T0, payload={"loss": 0.4}),
               ev("text", "notes/readme.txt", T0, payload="hello"),
               ev("dict", "cfg.json", T0, payload={"a": 1}),
               ev("system", "system", T0, payload={"hostname": "h1", "cpus": 8}),
               ev("event", "checkpoint", T0 + 7, step=1, payload={"path": "x"})]
    batch2 = [ev("metric", "val/acc", T0 + 100 + i, step=10 * i, value=i / 3) for i in range(3)]
    batch2 += [ev("artifact", "model", T0 + 200, payload={
        "name": "model", "type": "model", "is_dir": False, "source": "test",
        "files": [{"path": "model.bin", "sha256": sha, "size": 11}]})]
    adapter = WandbAdapter(mode="offline", dir=str(out), spool_dir=str(tmp_path))
    info = RunInfo(run_id=RID, project="proj", name="bridged", blob_root=blobs, start_ms=T0)
    adapter.open_run(info)
    assert adapter.export(info, batch1).outcome.value == "success"
    assert adapter.export(info, batch2).outcome.value == "success"
    adapter.close_run(info, "FAILED", T0 + 1000)
    adapter.shutdown()

    run, events = _events(WandbImporter(out))
    assert run.source_id == RID and run.run_id == RID
    assert (run.name, run.project, run.status) == ("bridged", "proj", "FAILED")
    sent = {}
    for e in batch1 + batch2:
        if e.kind == "metric":
            sent.setdefault(e.key, []).append((e.step, e.ts_ms, e.value))
    assert _metrics(events) == sent  # steps (out of order too), timestamps, inf kept
    assert _by(events, "param") == {"opt": {"name": "adam", "betas": [0.9, 0.99]}}
    assert _by(events, "tag") == {"team": "vision", "baseline": ""}
    assert _by(events, "summary") == {"best": {"loss": 0.4}}
    assert _by(events, "text") == {"notes/readme.txt": "hello"}
    assert _by(events, "dict") == {"cfg.json": {"a": 1}}
    assert _by(events, "system") == {"system": {"hostname": "h1", "cpus": 8}}
    (cp,) = [e for e in events if e.kind == "event"]
    assert (cp.key, cp.ts_ms, cp.step, cp.payload) == ("checkpoint", T0 + 7, 1, {"path": "x"})
    (art,) = [e for e in events if e.kind == "artifact"]
    assert art.key == "model" and art.artifact_type == "model"
    assert [(r, p.read_bytes()) for r, p in art.files] == [("model.bin", b"model bytes")]


def test_stream_writes_the_spool_events_would(native_dir: Path, tmp_path: Path) -> None:
    """Points handed to the sink as MetricPoints: the same rows, in the same order, as one
    event a point (NaN, the text values between them, a resumed session's rows)."""
    from same_spool import assert_same_spool

    by_stream, _ = assert_same_spool(lambda: make_importer("wandb", str(native_dir / "wandb")),
                                     tmp_path)
    assert by_stream[0].points["loss"] == 8
