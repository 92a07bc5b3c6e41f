"""The tracking API: what a W&B or MLflow user expects, recorded in the spool."""

from __future__ import annotations

import json
import math
import sys
import warnings

import pytest

import bridge
from bridge.errors import ConfigError, InvalidValueError, RunStateError
from bridge.spool.reader import iter_events, list_runs


def events(spool, run_id):
    rec = [r for r in list_runs(spool) if r.run_id == run_id][0]
    return list(iter_events(rec.files, run_id))


def test_init_identity_and_log_steps(tmp_path):
    run = bridge.init(project="p", name="n", dir=tmp_path, sync="offline")
    assert len(run.id) == 32 and all(c in "0123456789abcdef" for c in run.id)
    assert (run.name, run.project) == ("n", "p")
    run.log({"a": 1.0})
    run.log({"a": 2.0})
    run.log({"a": 3.0}, step=10)
    run.log({"a": 4.0})
    run.log_metric("b", 5, step=3)
    run.log_metric("c", 6)
    run.finish()
    metrics = [(e.key, e.step, e.value) for e in events(tmp_path, run.id) if e.kind == "metric"]
    assert metrics == [("a", 0, 1.0), ("a", 1, 2.0), ("a", 10, 3.0), ("a", 11, 4.0),
                       ("b", 3, 5.0), ("c", None, 6.0)]


def test_everything_is_recorded(tmp_path):
    src = tmp_path / "model.bin"
    src.write_bytes(b"\x00weights\xff")
    d = tmp_path / "ckpt"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "sub" / "b.txt").write_text("b")
    with bridge.init(project="p", dir=tmp_path / "spool", sync="offline",
                     config={"lr": 0.1, "opt": {"name": "adam", "betas": [0.9, 0.99]}},
                     tags={"team": "x"}, notes="hello", group="g") as run:
        run.config["epochs"] = 3
        run.config.update({"bs": 32})
        run.set_tag("k", 7)
        run.set_tags(["label"])
        run.summary["best"] = 0.9
        run.log_artifact(src)
        run.log_artifact(d, name="checkpoint")
        run.log_text("some text", "notes.txt")
        run.log_dict({"x": [1, 2]}, "report.json")
        run.log_event("epoch_end", {"epoch": 1})
        run.log_features(["f1", "f2"])
        run.log_model({"w": [1, 2, 3]}, "clf")
    evs = events(tmp_path / "spool", run.id)
    kinds = {}
    for e in evs:
        kinds.setdefault(e.kind, {})[e.key] = e.payload
    assert kinds["param"] == {"lr": 0.1, "opt": {"name": "adam", "betas": [0.9, 0.99]},
                              "epochs": 3, "bs": 32}
    assert kinds["tag"] == {"team": "x", "k": "7", "label": ""}
    assert kinds["summary"] == {"best": 0.9}
    assert kinds["note"] == {"notes": "hello"}
    assert kinds["text"] == {"notes.txt": "some text"}
    assert kinds["dict"] == {"report.json": {"x": [1, 2]}}
    assert kinds["event"]["epoch_end"] == {"epoch": 1}
    assert kinds["event"]["features"] == ["f1", "f2"]
    assert kinds["system"]["system"]["python"]
    art = kinds["artifact"]
    assert art["model.bin"]["files"][0]["size"] == len(b"\x00weights\xff")
    assert sorted(f["path"] for f in art["checkpoint"]["files"]) == ["a.txt", "sub/b.txt"]
    from bridge.spool.blobs import blob_path

    sha = art["model.bin"]["files"][0]["sha256"]
    src.unlink()  # the spool keeps its own copy
    assert blob_path(tmp_path / "spool", sha).read_bytes() == b"\x00weights\xff"
    import pickle

    sha = art["clf"]["files"][0]["sha256"]
    assert pickle.loads(blob_path(tmp_path / "spool", sha).read_bytes()) == {"w": [1, 2, 3]}
    rec = list_runs(tmp_path / "spool")[0]
    assert (rec.status, rec.group, rec.notes) == ("FINISHED", "g", "hello")
    assert run.config["opt"]["name"] == "adam"


def test_artifacts_are_deduplicated(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("same")
    with bridge.init(project="p", dir=tmp_path / "s", sync="offline") as run:
        run.log_artifact(a, name="one")
        run.log_artifact(a, name="two")
    assert len(list((tmp_path / "s" / "blobs").rglob("*"))) == 2  # one prefix dir, one blob


def test_context_manager_records_failure(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with bridge.init(project="p", dir=tmp_path, sync="offline") as run:
            1 / 0
    rec = list_runs(tmp_path)[0]
    assert rec.status == "FAILED" and "ZeroDivisionError" in rec.error


def test_track_decorator(tmp_path):
    @bridge.track(project="deco", dir=tmp_path, sync="offline")
    def train(lr, run=None):
        run.log_param("lr", lr)
        run.log({"loss": 0.5})
        return run.id

    rid = train(0.1)
    rec = list_runs(tmp_path)[0]
    assert (rec.run_id, rec.project, rec.status) == (rid, "deco", "FINISHED")


def test_module_level_shortcuts_use_current_run(tmp_path):
    run = bridge.init(project="p", dir=tmp_path, sync="offline")
    assert bridge.run() is run
    bridge.log({"x": 1.0})
    bridge.log_param("p", 1)
    bridge.set_tag("t", "v")
    bridge.finish()
    assert bridge.run() is None
    kinds = sorted({e.kind for e in events(tmp_path, run.id)})
    assert {"metric", "param", "tag"} <= set(kinds)


def test_unknown_backend_is_an_error_at_init(tmp_path):
    with pytest.raises(ConfigError, match="unknown backend 'mlfow'"):
        bridge.init(project="p", dir=tmp_path, backends=["mlfow"])
    with pytest.raises(ConfigError, match="credential"):
        bridge.init(project="p", dir=tmp_path, backends=[{"name": "mlflow", "api_key": "x"}])


def test_resume_continues_steps(tmp_path):
    run = bridge.init(project="p", dir=tmp_path, sync="offline")
    for i in range(5):
        run.log({"a": float(i)})
    run.finish()
    with pytest.raises(RunStateError, match="resume='allow'"):
        bridge.init(run_id=run.id, dir=tmp_path, sync="offline")
    again = bridge.init(run_id=run.id, resume="must", dir=tmp_path, sync="offline")
    assert again.project == "p" and again.step == 5
    again.log({"a": 5.0})
    again.finish()
    steps = [e.step for e in events(tmp_path, run.id) if e.kind == "metric"]
    assert steps == [0, 1, 2, 3, 4, 5]
    with pytest.raises(RunStateError, match="must"):
        bridge.init(run_id="0" * 32, resume="must", dir=tmp_path)


def test_resumed_segment_is_running_until_it_finishes(tmp_path):
    run = bridge.init(project="p", dir=tmp_path, sync="offline")
    run.finish()
    again = bridge.init(run_id=run.id, resume="allow", dir=tmp_path, sync="offline")
    again.flush()
    assert list_runs(tmp_path)[0].status == "RUNNING"
    again.finish("KILLED")
    assert list_runs(tmp_path)[0].status == "KILLED"


def test_bad_inputs_warn_and_count_never_raise(tmp_path):
    run = bridge.init(project="p", dir=tmp_path, sync="offline")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.log({"ok": 1.0, "s": {"not": "media"}, 3: 1.0, "": 2.0, "k" * 251: 1.0})
        run.log("not a dict")
        run.log({"a": 1.0}, step=-1)
        run.log({"a": 1.0}, step="x")
        run.log_param("cfg", object())
        run.log_artifact(tmp_path / "missing.txt")
    messages = [str(w.message) for w in caught]
    assert any("log: 's': metric value must be numeric" in m for m in messages)
    assert any("key must be a string" in m for m in messages)
    assert any("over the limit of 250" in m for m in messages)
    assert any("expected a dict of metrics" in m for m in messages)
    assert any("step must be a non-negative integer" in m for m in messages)
    assert any("not JSON-serializable" in m for m in messages)
    assert any("missing.txt" in m and "does not exist" in m for m in messages)
    assert run.warnings == len(messages) == 9
    run.finish()
    rec = list_runs(tmp_path)[0]
    assert rec.warnings == 9
    params = {e.key: e.payload for e in events(tmp_path, run.id) if e.kind == "param"}
    assert params["cfg"].startswith("<object object at")  # visible repr normalization


def test_strict_raises_documented_error(tmp_path):
    run = bridge.init(project="p", dir=tmp_path, sync="offline", strict=True)
    with pytest.raises(InvalidValueError, match="metric value must be numeric"):
        run.log({"s": object()})
    run.finish()


def test_numpy_values_and_non_finite(tmp_path):
    np = pytest.importorskip("numpy")
    run = bridge.init(project="p", dir=tmp_path, sync="offline")
    run.log({"f32": np.float32(0.5), "i64": np.int64(3), "arr0": np.array(2.5),
             "b": True, "nan": math.nan, "inf": math.inf, "ninf": -math.inf}, step=np.int64(4))
    run.finish()
    got = {e.key: (e.step, e.value) for e in events(tmp_path, run.id) if e.kind == "metric"}
    assert got["f32"] == (4, 0.5) and got["i64"] == (4, 3.0) and got["arr0"] == (4, 2.5)
    assert got["b"] == (4, 1.0)
    assert math.isnan(got["nan"][1]) and got["inf"][1] == math.inf and got["ninf"][1] == -math.inf


def test_tensor_like_scalars_by_duck_type(tmp_path):
    class FakeTensor:  # the duck type bridge relies on: .numel() and .item()
        def numel(self):
            return 1

        def item(self):
            return 0.25

    run = bridge.init(project="p", dir=tmp_path, sync="offline")
    run.log({"t": FakeTensor()})
    run.finish()
    vals = [e.value for e in events(tmp_path, run.id) if e.kind == "metric"]
    assert vals == [0.25]


def test_calls_after_finish_are_warned(tmp_path):
    run = bridge.init(project="p", dir=tmp_path, sync="offline")
    run.finish()
    with pytest.warns(bridge.BridgeWarning, match="is finished"):
        run.log({"a": 1.0})


def test_import_bridge_imports_no_vendor_sdk_or_pandas():
    import subprocess

    code = ("import sys, bridge; bad=[m for m in ('pandas','mlflow','wandb','neptune','comet_ml',"
            "'numpy','torch') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_files_and_dirs_are_private(tmp_path):
    spool = tmp_path / "s"
    a = tmp_path / "a.txt"
    a.write_text("x")
    with bridge.init(project="p", dir=spool, sync="offline") as run:
        run.log_artifact(a)
    for p in [spool, *spool.rglob("*")]:
        mode = p.stat().st_mode & 0o777
        if p.is_dir():
            assert mode == 0o700, p
        elif p.suffix == ".db" or "blobs" in p.parts:
            assert mode == 0o600, p


def test_durability_settings(tmp_path):
    for d in ("commit", "fsync"):
        run = bridge.init(project="p", dir=tmp_path / d, sync="offline", durability=d)
        run.log({"a": 1.0})
        # committed before log() returned: readable without flush
        assert [e.value for e in events(tmp_path / d, run.id) if e.kind == "metric"] == [1.0]
        run.finish()
    with pytest.raises(ConfigError):
        bridge.init(project="p", dir=tmp_path, durability="sometimes")


def test_config_precedence(tmp_path, monkeypatch):
    from bridge.config import load

    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[bridge]\ndurability = "commit"\nflush_interval = 0.2\n[agent]\ninterval = 9\n')
    monkeypatch.setenv("BRIDGE_CONFIG", str(cfg))
    monkeypatch.setenv("BRIDGE_FLUSH_INTERVAL", "0.1")
    s = load(durability="fsync")
    assert (s.durability, s.flush_interval, s.agent.interval) == ("fsync", 0.1, 9.0)
    monkeypatch.setenv("BRIDGE_SYNC", "sideways")
    with pytest.raises(ConfigError, match="sync must be one of"):
        load()


def test_default_config_file_matches_code():
    import tomllib
    from dataclasses import asdict
    from pathlib import Path

    from bridge.config import AgentSettings, Settings

    doc = tomllib.loads((Path(__file__).parents[1] / "config" / "bridge.toml").read_text())
    code = asdict(Settings())
    for k, v in doc["bridge"].items():
        want = code[k]
        assert (str(want) if k == "dir" else list(want) if k == "backends" else want) == v, k
    assert doc["agent"] == asdict(AgentSettings())
    packaged = Path(bridge.__file__).parent / "default_bridge.toml"
    assert packaged.read_text() == (Path(__file__).parents[1] / "config" / "bridge.toml").read_text()


def test_system_event_has_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sekrit-value-123")
    monkeypatch.setattr(sys, "argv", ["train.py", "--api-key", "sekrit-value-123", "--token=zzz9"])
    with bridge.init(project="p", dir=tmp_path, sync="offline"):
        pass
    for f in tmp_path.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert b"sekrit-value-123" not in data and b"zzz9" not in data
    sysinfo = [e.payload for e in events(tmp_path, list_runs(tmp_path)[0].run_id)
               if e.kind == "system"][0]
    assert sysinfo["argv"] == ["train.py", "--api-key", "***", "--token=***"]
    json.dumps(sysinfo)


def test_many_directories_keep_threads_bounded_and_one_directory_one_file(tmp_path):
    import threading

    from bridge import writer_pool

    def writer_threads() -> int:
        return sum(t.name == "bridge-spool-writer" for t in threading.enumerate())

    before = writer_threads()
    for i in range(12):  # a trial per directory
        with bridge.init(project="p", dir=tmp_path / f"trial{i}", sync="offline") as run:
            run.log({"x": float(i)}, step=0)
        assert writer_threads() - before <= writer_pool.IDLE_WRITERS_KEPT + 1
    for i in range(12):
        [rec] = list_runs(tmp_path / f"trial{i}")
        assert rec.status == "FINISHED"
        assert [e.value for e in events(tmp_path / f"trial{i}", rec.run_id)
                if e.kind == "metric"] == [float(i)]
    sweep = tmp_path / "sweep"
    for i in range(6):  # run after run in one directory: one writer, one file
        with bridge.init(project="p", dir=sweep, sync="offline") as run:
            run.log({"x": float(i)}, step=0)
    assert len({f.path for rec in list_runs(sweep) for f in rec.files}) == 1
    assert len(list_runs(sweep)) == 6
