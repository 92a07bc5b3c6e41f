"""The ClearML importer on offline sessions written by the real clearml SDK (in a child
process whose HOME, cwd and cache dir are in tmp_path, with every network connection
refused and recorded), read as a folder, as its zip and as a cache dir, then migrated to
MLflow and verified."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("clearml")

from bridge.adapters.clearml import names as N  # noqa: E402
from bridge.adapters.clearml.importer import ClearmlImporter  # noqa: E402
from bridge.adapters.clearml.offline import open_session  # noqa: E402
from bridge.adapters.importing import ImportEvent, bridge_run_id  # noqa: E402
from bridge.importers import make_importer, recognise  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402

ITERATIONS = 15  # x two series = 30 points
HISTORY = 5  # ClearML's metrics.file_history_size, set in the child's clearml.conf
SAMPLES = 7  # more than HISTORY: two sample files are reused

WRITER = textwrap.dedent('''
    import json, socket, sys, time
    attempts = []
    _connect = socket.socket.connect

    def guard(self, address):
        if self.family != getattr(socket, "AF_UNIX", None):
            attempts.append(repr(address))
            raise OSError("network refused by the test")
        return _connect(self, address)

    socket.socket.connect = guard
    socket.socket.connect_ex = lambda self, address: guard(self, address) or 0

    import numpy as np
    import pandas as pd
    from clearml import Task

    Task.set_offline(offline_mode=True)
    before = int(time.time() * 1000)
    task = Task.init(project_name="vision", task_name="resnet-offline", tags=["baseline", "gpu"],
                     auto_connect_frameworks=False, auto_resource_monitoring=False,
                     auto_connect_streams=True)
    task.connect({"lr": 0.01, "epochs": 3, "opt": {"name": "adam", "betas": [0.9, 0.99]}})
    task.connect({"batch": 32, "shuffle": True}, name="Data")
    task.connect_configuration({"model": {"depth": 4, "act": "relu"}}, name="model_cfg")
    logger = task.get_logger()
    for i in range(%(iterations)d):
        logger.report_scalar("loss", "train", value=1.0 / (i + 1), iteration=i)
        logger.report_scalar("loss", "val", value=0.5 + i * 0.25, iteration=i * 10)
    logger.report_single_value("best_acc", 0.93)
    rng = np.random.default_rng(0)
    logger.report_image("samples", "digits", iteration=3,
                        image=(rng.random((8, 6, 3)) * 255).astype("uint8"))
    for i in range(%(samples)d):
        logger.report_image("history", "frame", iteration=i,
                            image=np.full((4, 4, 3), i * 30, dtype="uint8"))
    logger.report_table("scores", "top", iteration=1,
                        table_plot=pd.DataFrame({"name": ["a", "b"], "score": [0.5, 0.75]}))
    logger.report_histogram("dist", "h", values=[1, 5, 2], iteration=2)
    print("hello from the console")
    with open("weights.txt", "w") as fh:
        fh.write("artifact bytes 0123")
    task.upload_artifact("weights", artifact_object="weights.txt", wait_on_upload=True)
    after = int(time.time() * 1000)
    folder = str(task.get_offline_mode_folder())
    task.close()
    with open(sys.argv[1], "w") as fh:
        json.dump({"attempts": attempts, "id": task.id, "folder": folder,
                   "before": before, "after": after}, fh)
''') % {"iterations": ITERATIONS, "samples": SAMPLES}


# Reporting in threads, not in a process forked from the writer: a fork taken while the
# SDK's threads hold locks can leave the forked reporter waiting forever (seen on this suite's
# machines: the writer never returned).
CONF = ("sdk { metrics { file_history_size: %(history)d } "
        "development { report_use_subprocess: false } }\n")


def _child_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLEARML_", "TRAINS_", "HTTP_PROXY", "HTTPS_PROXY"))}
    env.update(HOME=str(tmp / "home"), CLEARML_CACHE_DIR=str(tmp / "cache"),
               CLEARML_OFFLINE_MODE="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One offline session written by the clearml SDK; what the writer recorded."""
    tmp = tmp_path_factory.mktemp("clearml")
    (tmp / "home").mkdir()
    # The SDK's config file (in the child's HOME): keep five sample files per series.
    (tmp / "home" / "clearml.conf").write_text(CONF % {"history": HISTORY})
    (tmp / "writer.py").write_text(WRITER)
    out = tmp / "written.json"
    # Output to a file, not a pipe: a helper process the SDK forks may outlive the writer
    # and would hold a pipe open.
    with open(tmp / "writer.log", "w") as log:
        proc = subprocess.run([sys.executable, str(tmp / "writer.py"), str(out)], cwd=tmp,
                              env=_child_env(tmp), stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=240)
    assert proc.returncode == 0, (tmp / "writer.log").read_text()
    info = json.loads(out.read_text())
    info["tmp"] = tmp
    info["cache"] = tmp / "cache"
    info["folder"] = Path(info["folder"])
    info["zip"] = Path(str(info["folder"]) + N.ZIP_SUFFIX)
    return info


def _raw_events(folder: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in (folder / name).read_text().splitlines():
        if line.strip():
            out.extend(json.loads(line))
    return out


def _read(location: Path, **opts: Any) -> tuple[Any, list[ImportEvent], ClearmlImporter]:
    """The run and its events, each file read while the importer still holds it (a zip's
    members live in a temporary directory only while its events are streamed)."""
    imp = ClearmlImporter(location, **opts)
    (run,) = list(imp.runs())
    events = [replace(e, files=tuple((ref, c if isinstance(c, bytes) else Path(c).read_bytes())
                                     for ref, c in e.files))
              for e in imp.events(run)]
    return run, events, imp


def _bytes(ev: ImportEvent) -> dict[str, bytes]:
    return {ref: bytes(c) for ref, c in ev.files}


def _check_run(info: dict[str, Any], run: Any, events: list[ImportEvent],
               imp: ClearmlImporter) -> None:
    folder = info["folder"]
    raw = _raw_events(folder, N.METRICS_FILE)
    logs = _raw_events(folder, N.LOG_FILE)
    assert run.source == "clearml" and run.source_id == info["id"]
    assert run.source_id.startswith("offline-")
    assert run.run_id == bridge_run_id("clearml", info["id"])
    assert (run.project, run.name, run.status) == ("vision", "resnet-offline", "FINISHED")
    stamps = [e["timestamp"] for e in raw + logs]
    assert run.start_ms == min(stamps) and info["before"] <= run.start_ms <= info["after"]
    assert run.end_ms >= max(stamps) and run.end_ms <= info["after"] + 1000
    assert run.extra_tags == {N.TASK_TYPE_TAG: "training"}

    params = {e.key: e.payload for e in events if e.kind == "param"}
    assert params == {
        "General/lr": 0.01, "General/epochs": 3, "General/opt/name": "adam",
        "General/opt/betas": [0.9, 0.99], "Data/batch": 32, "Data/shuffle": True,
        "Configuration/model_cfg/model/depth": 4, "Configuration/model_cfg/model/act": "relu",
    }
    assert sorted(e.key for e in events if e.kind == "tag") == ["baseline", "gpu"]
    assert {e.key: e.payload for e in events if e.kind == "summary"} == {"best_acc": 0.93}

    # Scalars, point by point: value, step and the event's own timestamp.
    metrics = [(e.key, e.step, e.value, e.ts_ms) for e in events if e.kind == "metric"]
    want = [(f"{e['metric']}/{e['variant']}", e["iter"], e["value"], e["timestamp"])
            for e in raw if e["type"] == N.EV_SCALAR and e["metric"] != N.SUMMARY_TITLE]
    assert metrics == want and len(metrics) == 2 * ITERATIONS
    train = [(s, v) for k, s, v, _ in metrics if k == "loss/train"]
    val = [(s, v) for k, s, v, _ in metrics if k == "loss/val"]
    assert train == [(i, 1.0 / (i + 1)) for i in range(ITERATIONS)]
    assert val == [(i * 10, 0.5 + i * 0.25) for i in range(ITERATIONS)]
    assert all(info["before"] <= ts <= info["after"] for *_, ts in metrics)

    media = {(e.key, e.step): e for e in events if e.kind == "media"}
    sample = media[("samples/digits", 3)]
    assert sample.payload["type"] == "image"
    (item,) = sample.payload["items"]
    assert item["mime"] == "image/jpeg"
    (src,) = [e for e in raw if e["type"] == N.EV_IMAGE and e["metric"] == "samples"]
    assert sample.ts_ms == src["timestamp"]
    stored = (folder / N.DATA_DIR).joinpath(*src["key"].split("/")).read_bytes()
    assert _bytes(sample) == {item["file"]: stored} and stored[:2] == b"\xff\xd8"  # a JPEG
    # The history series reused its HISTORY file names: the last HISTORY reports are imported.
    frames = sorted(step for key, step in media if key == "history/frame")
    assert frames == list(range(SAMPLES - HISTORY, SAMPLES))
    overwritten = [w for w in imp.warnings if "overwritten" in w]
    assert len(overwritten) == SAMPLES - HISTORY
    table = media[("scores/top", 1)].payload
    assert table["type"] == "table"
    assert table["data"] == {"columns": ["name", "score"], "rows": [["a", 0.5], ["b", 0.75]]}
    plot = media[("dist/h", 2)]
    assert plot.payload["type"] == "file"
    plotly = json.loads(next(iter(_bytes(plot).values())))
    assert plotly["data"][0]["y"] == [1, 5, 2]

    (art,) = [e for e in events if e.kind == "artifact"]
    assert art.key == "weights" and [rel for rel, _ in art.files] == ["weights.txt"]
    assert _bytes(art) == {"weights.txt": b"artifact bytes 0123"}

    texts = {e.key: e.payload for e in events if e.kind == "text"}
    assert "hello from the console" in texts[N.CONSOLE_KEY]
    assert texts[N.CONSOLE_KEY] == "\n".join(e["msg"] for e in logs) + "\n"
    assert "report_scalar" in texts[N.SCRIPT_CODE_KEY]  # the script, as no repository held it
    assert "clearml" in texts[N.REQUIREMENTS_KEY]
    system = next(e.payload for e in events if e.kind == "system")
    assert system["clearml_script"]["entry_point"] == "writer.py"
    assert imp.warnings == overwritten  # nothing else was left out


def test_the_sdk_made_no_connection(session: dict[str, Any]) -> None:
    assert session["attempts"] == []
    assert session["folder"].is_relative_to(session["cache"] / "offline")
    assert (session["folder"] / N.TASK_FILE).is_file() and session["zip"].is_file()


def test_import_session_folder(session: dict[str, Any]) -> None:
    _check_run(session, *_read(session["folder"]))


def test_import_session_zip(session: dict[str, Any]) -> None:
    _check_run(session, *_read(session["zip"]))
    _, from_zip, _ = _read(session["zip"])
    _, from_folder, _ = _read(session["folder"])
    assert [(e.kind, e.key, e.step, e.ts_ms, e.value, e.payload) for e in from_zip] == \
        [(e.kind, e.key, e.step, e.ts_ms, e.value, e.payload) for e in from_folder]


def test_cache_dir_holds_one_run_and_is_recognised(session: dict[str, Any]) -> None:
    imp = make_importer("clearml", str(session["cache"]), project="moved")
    (run,) = list(imp.runs())  # the folder and its zip are one session
    assert run.source_id == session["id"] and run.project == "moved"
    assert any("clearml" in what for what in recognise(str(session["cache"])))


def test_moved_session_and_missing_files_are_warnings(session: dict[str, Any],
                                                      tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / session["folder"].name
    shutil.copytree(session["folder"], moved)
    art = next((moved / N.DATA_DIR).rglob("weights.txt"))
    art.unlink()
    with open(moved / N.METRICS_FILE, "a") as fh:
        fh.write('[{"timestamp": 1, "type": "training_stats_vector", "iter": 0, '
                 '"metric": "v", "variant": "x", "values": [1, 2]}]\n{broken\n')
    run, events, imp = _read(moved)
    assert len([e for e in events if e.kind == "metric"]) == 2 * ITERATIONS
    assert not [e for e in events if e.kind == "artifact"]
    assert any("artifact 'weights'" in w and "missing" in w for w in imp.warnings)
    assert any("line" in w and "not JSON" in w for w in imp.warnings)
    assert any("1 vector events" in w for w in imp.warnings)


def test_a_folder_whose_task_json_was_cut_short_takes_the_zips(session: dict[str, Any],
                                                             tmp_path: Path) -> None:
    """A process killed as it rewrote ``task.json`` at exit leaves it cut short, and the zip
    it made holds no ``metrics.jsonl``: the task comes from the zip, the events from the
    folder, and the import is the whole folder's, said in a warning."""
    offline = tmp_path / "offline"
    moved = offline / session["folder"].name
    shutil.copytree(session["folder"], moved)
    with zipfile.ZipFile(session["zip"]) as src, \
            zipfile.ZipFile(moved.with_name(moved.name + N.ZIP_SUFFIX), "w") as dst:
        for info in src.infolist():
            if info.filename != N.METRICS_FILE:
                dst.writestr(info, src.read(info))
    text = (moved / N.TASK_FILE).read_text()
    (moved / N.TASK_FILE).write_text(text[:len(text) // 2])
    run, events, imp = _read(offline)  # the folder and its zip: one run
    whole_run, whole, _ = _read(session["folder"])
    assert (run.source_id, run.name, run.status, run.start_ms, run.end_ms) == \
        (whole_run.source_id, whole_run.name, whole_run.status, whole_run.start_ms,
         whole_run.end_ms)
    assert [(e.kind, e.key, e.step, e.ts_ms, e.value, e.payload) for e in events] == \
        [(e.kind, e.key, e.step, e.ts_ms, e.value, e.payload) for e in whole]
    assert len([e for e in events if e.kind == "metric"]) == 2 * ITERATIONS
    assert [w for w in imp.warnings if "cut short" in w] == [
        f"{moved.name}: {N.TASK_FILE} cut short (its process died writing it); the task read "
        f"from {moved.name}{N.ZIP_SUFFIX}, the events and files from the folder"]


def test_zip_member_escaping_the_session_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    task = {"id": "offline-x", "name": "n", "project_name": "p", "offline_folder": "/nowhere",
            "execution": {"artifacts": [{"key": "evil", "uri": "/nowhere/data/../../etc/passwd",
                                         "timestamp": 1}]}}
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(N.TASK_FILE, json.dumps(task))
        zf.writestr(N.METRICS_FILE, json.dumps([
            {"timestamp": 5, "type": N.EV_SCALAR, "iter": 1, "metric": "a", "variant": "b",
             "value": 2.5},
            {"timestamp": 6, "type": N.EV_IMAGE, "iter": 2, "metric": "remote", "variant": "r",
             "key": "/bucket/img.png", "url": "https://example.invalid/bucket/img.png"},
            {"timestamp": 7, "type": N.EV_IMAGE, "iter": 3, "metric": "up", "variant": "u",
             "key": "../../etc/passwd"},
        ]) + "\n")
    run, events, imp = _read(bad)
    assert [(e.key, e.step, e.ts_ms, e.value) for e in events if e.kind == "metric"] == \
        [("a/b", 1, 5, 2.5)]
    assert not [e for e in events if e.kind in ("artifact", "media")]
    assert any("'evil' refused" in w for w in imp.warnings)
    assert any("'remote/r' at iteration 2" in w and "not in the session" in w
               for w in imp.warnings)
    assert any("'up/u' at iteration 3 refused" in w for w in imp.warnings)
    assert len(imp.warnings) == 3


def test_migrate_to_mlflow_is_complete(session: dict[str, Any], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    from bridge.agent.sync import Syncer
    from bridge.spool.reader import find_run
    from bridge.verify import spool_snapshot, verify_run

    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    monkeypatch.setenv("GIT_PYTHON_REFRESH", "quiet")
    spool = tmp_path / "spool"
    (imported,) = import_runs(make_importer("clearml", str(session["zip"])), spool,
                              backends=[{"name": "mlflow"}])
    assert imported.points == {"loss/train": ITERATIONS, "loss/val": ITERATIONS}
    rec = find_run(spool, imported.run_id)
    snap = spool_snapshot(spool, rec)
    assert snap.tags["bridge.source_id"] == session["id"]
    summary = Syncer(spool).run_once()
    (result,) = summary.results
    assert result.error is None and result.pending == 0 and result.dead == 0, result
    rep = verify_run(spool, imported.run_id, "mlflow")
    assert rep.complete, rep.as_dict()
    assert rep.fields["points"].expected == 2 * ITERATIONS
    assert rep.fields["points"].lost == 0 and rep.fields["media"].lost == 0
    assert not math.isnan(rep.fields["points"].percent)


CRASHER = textwrap.dedent('''
    from clearml import Task

    Task.set_offline(offline_mode=True)
    task = Task.init(project_name="vision", task_name="crashes", auto_connect_frameworks=False,
                     auto_resource_monitoring=False)
    task.get_logger().report_scalar("loss", "train", value=0.25, iteration=7)
    raise RuntimeError("boom at iteration 7")
''')


def _run_crasher(tmp_path: Path) -> Path:
    """CRASHER in a child process with its own ClearML configuration: it exits with 1; the
    folder it ran in (its ``cache``) is returned.

    After the uncaught exception the SDK's exit handlers sometimes never return (about one
    crash in ten under pytest here; a normal run takes ~5 s): a crasher still running after
    60 s is killed with its process group and the crash run again, at most three times."""
    for attempt in range(3):
        where = tmp_path / f"attempt-{attempt}"
        (where / "home").mkdir(parents=True)
        (where / "home" / "clearml.conf").write_text(CONF % {"history": HISTORY})
        (where / "crasher.py").write_text(CRASHER)
        with open(where / "crasher.log", "w") as log:
            proc = subprocess.Popen([sys.executable, str(where / "crasher.py")], cwd=where,
                                    env=_child_env(where), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                continue
        assert code == 1, (where / "crasher.log").read_text()
        return where
    raise AssertionError("the clearml SDK hung at exit in three crashes in a row")


def test_a_crashed_session_is_failed(tmp_path: Path) -> None:
    """The offline session records no status: an uncaught exception is seen in the console."""
    run, events, imp = _read(_run_crasher(tmp_path) / "cache")
    assert (run.name, run.status) == ("crashes", "FAILED")
    assert [(e.key, e.step, e.value) for e in events if e.kind == "metric"] == \
        [("loss/train", 7, 0.25)]
    console = next(e.payload for e in events if e.kind == "text" and e.key == N.CONSOLE_KEY)
    assert "RuntimeError: boom at iteration 7" in console
    # A crashing process sometimes zips a file its own threads are still writing: the torn
    # zip is skipped, visibly, and the session folder (the same task) is what is imported;
    # or it leaves the folder's task.json cut short: the task comes from the zip, said so.
    assert all(w.startswith(f"{run.source_id}.zip skipped")
               or w.startswith(f"{run.source_id}: {N.TASK_FILE} cut short")
               for w in imp.warnings), imp.warnings


SDK_INFO = "2026-11-30 00:08:45,802 - clearml.Task - INFO - No repository found, storing script code instead"


def _opens(folder: Path) -> bool:
    try:
        open_session(folder)
        return True
    except (OSError, ValueError, KeyError):
        return False


def _crash_session_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A crasher's cache and its session folder, which opens, the zip removed (the folder is
    what is read).

    A dying process sometimes leaves the folder's ``task.json`` torn as it rewrites it; the
    SDK's zip of the folder then holds the whole file (the importer reads the zip in that
    case), so the folder is restored from it. A crash that tore both is run again."""
    for attempt in range(3):
        where = _run_crasher(tmp_path / f"crash-{attempt}")
        [log] = list((where / "cache").rglob(N.LOG_FILE))
        for z in (where / "cache").rglob("*.zip"):
            if not _opens(log.parent):
                try:
                    with zipfile.ZipFile(z) as zf:
                        zf.extractall(log.parent)
                except (zipfile.BadZipFile, OSError):
                    pass
            z.unlink()
        if _opens(log.parent):
            return where / "cache", log.parent
    raise AssertionError("three crashes in a row left no readable session")


def test_a_traceback_reported_in_several_parts_is_still_a_crash(tmp_path: Path) -> None:
    """The SDK reports stderr in time slices: on a loaded machine one traceback can land in
    two console reports (the second, ``RuntimeError: …``, not starting with "Traceback"),
    with the SDK's own log line, from one of its threads, between them."""
    cache, session = _crash_session_folder(tmp_path)
    folder = session / N.LOG_FILE
    lines, split = [], 0
    for line in folder.read_text().splitlines():
        batch = json.loads(line) if line.strip() else []
        out = []
        for ev in batch if isinstance(batch, list) else [batch]:
            msg = str(ev.get(N.F_MSG, ""))
            if ev.get(N.F_LEVEL) == N.ERROR_LEVEL and msg.lstrip().startswith("Traceback"):
                head, sep, rest = msg.partition("RuntimeError")
                out += [{**ev, N.F_MSG: head},
                        {**ev, N.F_LEVEL: "info", N.F_MSG: SDK_INFO},  # as CI once saw it
                        {**ev, N.F_MSG: sep + rest}]
                split += 1
            else:
                out.append(ev)
        lines.append(json.dumps(out))
    assert split == 1
    folder.write_text("\n".join(lines) + "\n")
    run, events, _ = _read(cache)
    assert (run.name, run.status) == ("crashes", "FAILED")
    console = next(e.payload for e in events if e.kind == "text" and e.key == N.CONSOLE_KEY)
    assert "RuntimeError: boom at iteration 7" in console
