"""Importing trackio projects written by the real trackio package.

A child process (trackio keeps global state and binds its directory at import) logs runs
with ``trackio.init`` / ``trackio.log`` / ``trackio.log_system`` / ``trackio.alert`` /
``trackio.finish`` into ``TRACKIO_DIR`` under ``tmp_path``, offline, then dumps what trackio's
own ``SQLiteStorage`` reads; the import is compared with that point by point.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trackio")

from bridge.adapters.trackio import names as N  # noqa: E402
from bridge.adapters.trackio.store import store_env  # noqa: E402
from bridge.importers import make_importer  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.spool.reader import find_run, iter_events  # noqa: E402

WRITE = """
import json, numpy as np, trackio
from trackio.sqlite_storage import SQLiteStorage as S
img = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
trackio.init(project="vision", name="native-a", config={"lr": 0.01, "opt": {"name": "adam"}},
             group="sweep1")
for step in range(5):
    trackio.log({"loss": 1.0 / (step + 1), "acc": step / 5}, step=step)
trackio.alert("loss spike", text="loss went up")  # at the last step, 4
trackio.log({"sample": trackio.Image(img, caption="a cat"),
             "weights": trackio.Histogram(np_histogram=([1, 2, 3], [0.0, 1.0, 2.0, 3.0])),
             "report": trackio.Markdown("# hello"),
             "preds": trackio.Table(columns=["id", "label"], data=[[1, "cat"], [2, "dog"]]),
             "diverged": float("nan")}, step=5)
trackio.log({"later": 3.0})
trackio.log({"warmup": 0.25, "phase": "warm"}, step=6)  # a number, then a string
trackio.log_system({"cpu/utilization": 42.0, "memory/percent": 61.5})
import pathlib
model = pathlib.Path("model"); (model / "sub").mkdir(parents=True)
(model / "w.bin").write_bytes(b"\\x00weights\\xff"); (model / "sub" / "cfg.json").write_text("{}")
trackio.log_artifact(str(model), name="resnet", type="model")
trackio.finish()
trackio.init(project="vision", name="native-b", config={"lr": 0.1})
trackio.log({"loss": 0.5}, step=0)
trackio.use_artifact("resnet:latest")
trackio.finish()
runs = S.get_run_records("vision")
out = {r["name"]: {"id": r["id"], "logs": S.get_logs("vision", run_id=r["id"]),
                   "config": S.get_run_config("vision", run_id=r["id"]),
                   "system": S.get_system_logs("vision", run_id=r["id"])} for r in runs}
print("@@" + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("trackio")
    env = store_env(root)
    env["HF_HOME"] = str(root.parent / "hf")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(WRITE)], capture_output=True,
                          text=True, env=env, cwd=root.parent, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1]
    return root, json.loads(line[2:])


def _import(root: Path, spool: Path, **opts: Any) -> list[Any]:
    importer = make_importer("trackio", str(root), **opts)
    done = import_runs(importer, spool)
    assert not importer.warnings
    return done


def _events(spool: Path, run_id: str) -> list[Any]:
    rec = find_run(spool, run_id)
    assert rec is not None
    return list(iter_events(rec.files, rec.run_id))


def test_native_runs_import_point_by_point(native: tuple[Path, dict], tmp_path: Path) -> None:
    root, expected = native
    spool = tmp_path / "spool"
    done = _import(root, spool)
    assert sorted(r.name for r in done) == ["native-a", "native-b"]
    a = next(r for r in done if r.name == "native-a")
    exp = expected["native-a"]
    assert a.source_id == exp["id"] and a.run_id == exp["id"]  # trackio ids are 32 hex
    rec = find_run(spool, a.run_id)
    assert rec.project == "vision" and rec.group == "sweep1" and rec.status == "FINISHED"
    assert rec.start_ms == N.ms_from_iso(exp["config"]["_Created"])
    events = _events(spool, a.run_id)

    # every scalar of every row, with trackio's step and timestamp
    want = sorted((k, row["step"], N.ms_from_iso(row["timestamp"]), v)
                  for row in exp["logs"] for k, v in row.items()
                  if k not in ("step", "timestamp") and isinstance(v, (int, float))
                  and v == v)
    got = sorted((e.key, e.step, e.ts_ms, e.value) for e in events
                 if e.kind == "metric" and not e.key.startswith("system/") and e.value == e.value)
    assert got == want and len(got) == 12
    nan = [e for e in events if e.kind == "metric" and e.key == "diverged"]
    assert len(nan) == 1 and nan[0].value != nan[0].value and nan[0].step == 5

    params = {e.key: e.payload for e in events if e.kind == "param"}
    assert params == {"lr": 0.01, "opt": {"name": "adam"}}
    tags = {e.key: e.payload for e in events if e.kind == "tag"}
    assert tags["trackio.project"] == "vision" and tags["bridge.source"] == "trackio"

    system = sorted((e.key, e.step, e.ts_ms, e.value) for e in events
                    if e.kind == "metric" and e.key.startswith("system/"))
    assert system == sorted((f"system/{k}", None, N.ms_from_iso(r["timestamp"]), v)
                            for r in exp["system"] for k, v in r.items() if k != "timestamp")

    (alert,) = [e for e in events if e.kind == "event" and e.key != "trackio.use_artifact"]
    assert (alert.key, alert.step, alert.payload) == ("loss spike", 4,
                                                       {"text": "loss went up", "level": "warn"})

    (art,) = [e for e in events if e.kind == "artifact"]
    assert (art.key, art.payload["type"]) == ("resnet", "model")
    assert sorted((f["path"], f["sha256"]) for f in art.payload["files"]) == sorted([
        ("w.bin", hashlib.sha256(b"\x00weights\xff").hexdigest()),
        ("sub/cfg.json", hashlib.sha256(b"{}").hexdigest())])
    b = next(r for r in done if r.name == "native-b")
    used = [e for e in _events(spool, b.run_id) if e.kind == "event"]
    assert [(e.key, e.payload["name"], e.payload["version"]) for e in used] == [
        ("trackio.use_artifact", "resnet", 0)]

    media = {e.key: e for e in events if e.kind == "media"}
    row5 = next(r for r in exp["logs"] if "sample" in r)
    image = media["sample"].payload
    assert (media["sample"].step, image["type"]) == (5, "image")
    (item,) = image["items"]
    on_disk = root / "media" / row5["sample"]["file_path"]
    assert item["sha256"] == hashlib.sha256(on_disk.read_bytes()).hexdigest()
    assert item["caption"] == "a cat" and item["mime"] == "image/png"
    assert media["weights"].payload["data"] == {"edges": [0.0, 1.0, 2.0, 3.0], "counts": [1, 2, 3]}
    assert media["report"].payload["data"] == {"text": "# hello"}
    assert (media["phase"].step, media["phase"].payload["data"]) == (6, {"text": "warm"})
    assert media["preds"].payload["data"] == {"columns": ["id", "label"],
                                              "rows": [[1, "cat"], [2, "dog"]]}


def test_project_filter_override_and_reimport(native: tuple[Path, dict], tmp_path: Path) -> None:
    root, expected = native
    spool = tmp_path / "spool"
    done = _import(root / "vision.db", spool, project="moved", projects=["vision"])
    assert {r.project for r in done} == {"moved"} and len(done) == 2
    again = _import(root, spool)
    assert all(r.skipped for r in again)  # same ids: nothing imported twice
    assert _import(root, tmp_path / "other", projects=["nothing"]) == []


def test_missing_location_is_an_import_error(tmp_path: Path) -> None:
    from bridge.adapters.importing import ImportError_

    with pytest.raises(ImportError_):
        make_importer("trackio", str(tmp_path / "absent"))


def test_stream_writes_the_spool_events_would(native: tuple[Path, dict], tmp_path: Path) -> None:
    """Points handed to the sink as MetricPoints: the same rows, in the same order, as one
    event a point (media, NaN and system metrics among them)."""
    from same_spool import assert_same_spool

    root, _ = native
    by_stream, _ = assert_same_spool(lambda: make_importer("trackio", str(root)), tmp_path)
    assert sum(sum(r.points.values()) for r in by_stream) >= 11


def test_a_store_under_an_odd_path_imports_the_same(native: tuple[Path, dict],
                                                    tmp_path: Path) -> None:
    """A ``?``, ``#`` or ``%`` in the store's path names the file (opened read-only by URI)."""
    import shutil

    root, _ = native
    odd = tmp_path / "odd?mode=rw#1%25" / "trackio"
    shutil.copytree(root, odd)
    points = []
    for where, spool in ((root, tmp_path / "a"), (odd, tmp_path / "b")):
        done = _import(where, spool)
        points.append(sorted((r.name, e.key, e.step, repr(e.value)) for r in done
                             for e in _events(spool, r.run_id) if e.kind == "metric"))
    assert points[0] and points[0] == points[1]


BULK = """
import json, sys, uuid
from trackio.sqlite_storage import SQLiteStorage as S
rows, steps, stamps, ids = [], [], [], []
def add(metrics, step, log_id=None):
    rows.append(metrics); steps.append(step); ids.append(log_id or uuid.uuid4().hex)
    ms = 1_700_000_000_000 + 7 * len(stamps)
    stamps.append(f"2023-11-14T22:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}."
                  f"{ms % 1000:03d}{len(stamps) % 1000:03d}+00:00")
odd = {  # each alone among rows of the same keys (a batch is 256 rows)
    300: ({"loss": 0.3, "acc": 0.2, "lr": 0.001}, "@STEPLESS@"),  # bridge's, stepless
    600: ({"loss": 0.5, "acc": True, "lr": 0.001}, None),  # a bool: an event
    900: ({"loss": float("nan"), "acc": 1.0, "lr": 0.001}, None),  # refused by orjson
    1200: ({"__run": 3.0, "loss": 0.4, "acc": 0.1, "lr": 0.001}, None),  # trackio renamed it
    1500: ({"loss": 0.1, "acc": 0.5, "lr": 0.001, "extra": 2.0}, None),  # one more key
}
for i in range(2100):
    if i in odd:
        add(odd[i][0], i, odd[i][1])
    elif 1700 <= i < 1760:  # two sets of keys, by turns
        add({"loss": 0.01 * i} if i % 2 else {"val/loss": 0.02 * i, "val/acc": 0.5}, i)
    elif i >= 1800:  # whole batches of a key trackio renamed
        add({"__run": float(i), "loss": 1.0 / (i + 1)}, i)
    else:  # the bulk: the same keys at every step
        add({"loss": 1.0 / (i + 1), "acc": i % 7, "lr": 0.001}, i)
S.bulk_log("bulk", "run-1", rows, steps=steps, timestamps=stamps, log_ids=ids)
"""


@pytest.fixture(scope="module")
def bulk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trackio project written by trackio's ``bulk_log``: rows of the same keys, and rows of
    every other kind between them."""
    root = tmp_path_factory.mktemp("bulk")
    env = store_env(root)
    env["HF_HOME"] = str(root.parent / "hf")
    script = textwrap.dedent(BULK).replace("@STEPLESS@", N.log_id("f1", 7, stepless=True))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, env=env, cwd=root.parent, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    return root


def test_a_batch_of_rows_imports_as_a_row_at_a_time_does(bulk: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch path (rows of the same keys, looked at in C) writes what the row-at-a-time
    path writes, rows of every other kind between them, and is the one taken for the bulk."""
    import sqlite3

    from same_spool import spool_rows

    from bridge.adapters.trackio import importer as trackio_importer

    by_batch = _import(bulk, tmp_path / "batch")
    monkeypatch.setattr(trackio_importer, "_uniform", lambda batch, ms_of: None)
    by_row = _import(bulk, tmp_path / "row")
    assert spool_rows(tmp_path / "batch") == spool_rows(tmp_path / "row")
    ((run,), (again,)) = by_batch, by_row
    assert run.points == again.points and run.points["loss"] == 2070 and "extra" in run.points
    (db,) = (tmp_path / "batch" / "spool").glob("import-*.db")
    with sqlite3.connect(db) as c:
        layouts = [blob[11:12] for (blob,) in c.execute(
            "SELECT payload FROM events WHERE kind = 'points'")]
    assert layouts.count(b"r") >= 2, layouts  # the bulk went over as rows of points
    events = _events(tmp_path / "batch", run.run_id)
    stepless = [e for e in events if e.kind == "metric" and e.step is None]
    assert {e.key for e in stepless} >= {"loss", "acc", "lr"}  # bridge's stepless row
    assert any(e.kind == "event" and e.key == "acc" for e in events)  # the bool
    assert run.points["run"] == 301 and "__run" not in run.points  # trackio's renaming undone
