"""The Comet adapter against the real comet_ml SDK in offline mode.

Every test reads back the offline archives comet_ml wrote (``comet_readback``) and
compares them with the events that were exported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

comet_ml = pytest.importorskip("comet_ml")

from bridge.adapters.base import AdapterError, Event, Outcome, RunInfo, load_adapter  # noqa: E402
from bridge.adapters.comet import CometAdapter, experiment_key_for  # noqa: E402

try:
    from . import comet_readback as rb
except ImportError:  # tests/adapters is not a package
    import comet_readback as rb  # type: ignore[no-redef]

RUN_ID = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000
COMET_OTHERS = {"offline_experiment", "Name", "hasNestedParams"}  # what comet_ml adds itself


# --- helpers -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMET_API_KEY", "dummy")
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")
    monkeypatch.delenv("COMET_OFFLINE_DIRECTORY", raising=False)
    monkeypatch.delenv("COMET_PROJECT_NAME", raising=False)
    monkeypatch.delenv("COMET_WORKSPACE", raising=False)


class Events:
    """Builds spool events with increasing (file_id, seq) and ts_ms, as the agent hands them."""

    def __init__(self, run_id: str = RUN_ID, file_id: str = "f0") -> None:
        self.run_id, self.file_id, self.seq = run_id, file_id, 0

    def __call__(self, kind: str, key: str | None, *, step: int | None = None, value: float | None = None,
                 payload: Any = None, ts: int | None = None) -> Event:
        self.seq += 1
        return Event(self.file_id, self.seq, self.run_id, kind, key, step,
                     T0 + 10 * self.seq if ts is None else ts, value=value, payload=payload)

    def metrics(self, name: str, steps: list[int], base: float = 0.0) -> list[Event]:
        return [self("metric", name, step=s, value=base + s / 10) for s in steps]


def put_blob(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (root / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha[:2] / sha).write_bytes(data)
    return sha


def make_run(tmp_path: Path, run_id: str = RUN_ID, **kw: Any) -> RunInfo:
    kw.setdefault("name", "baseline")
    return RunInfo(run_id=run_id, project="vision", blob_root=tmp_path / "blobs", start_ms=T0, **kw)


def adapter(tmp_path: Path, **kw: Any) -> CometAdapter:
    return CometAdapter(mode="offline", offline_directory=str(tmp_path / "comet"), spool_dir=str(tmp_path), **kw)


def sync(tmp_path: Path, run: RunInfo, batches: list[list[Event]], *, close: str | None = None) -> RunInfo:
    """One sync session as the agent runs it; returns the run with the state it would save."""
    a = adapter(tmp_path)
    a.open_run(run)
    for batch in batches:
        result = a.export(run, batch)
        assert result.outcome is Outcome.SUCCESS, result
        assert not result.rejected
    if close:
        a.close_run(run, close, T0 + 99_999)
    a.shutdown()
    return run


def archives(tmp_path: Path, key: str = RUN_ID) -> list[rb.Archive]:
    return rb.read_archives(tmp_path / "comet", key)


def points(events: list[Event]) -> list[tuple]:
    return [(e.key, e.value, e.step, e.ts_ms) for e in events if e.kind == "metric"]


def read_points(archive: rb.Archive) -> list[tuple]:
    return [(p.name, p.value, p.step, p.timestamp) for p in archive.metrics]


def same_points(a: list[tuple], b: list[tuple]) -> bool:
    """Equal, NaN included."""
    norm = lambda rows: [tuple("nan" if isinstance(x, float) and math.isnan(x) else x for x in r) for r in rows]
    return norm(a) == norm(b)


# --- mapping -----------------------------------------------------------------------------


def test_everything_logged_comes_back_from_the_archive(tmp_path: Path) -> None:
    ev = Events()
    model = b"\x00weights\xff" * 100
    sha_model = put_blob(tmp_path / "blobs", model)
    sha_a, sha_b = put_blob(tmp_path / "blobs", b"a,b\n1,2\n"), put_blob(tmp_path / "blobs", b"{}")
    run = make_run(tmp_path, group="sweep-1", notes="first try")
    batch = [
        ev("param", "lr", payload=0.001),
        ev("param", "optimizer", payload={"name": "adam", "betas": [0.9, 0.999], "sched": {"kind": "cos", "warm": 5}}),
        ev("param", "flag", payload=True),
        ev("param", "arch", payload="resnet50"),
        ev("tag", "baseline", payload=""),
        ev("tag", "team", payload="vision"),
        ev("system", "system", payload={"os": "Linux-6.1", "python": "3.11.7", "gpus": 2}),
        *ev.metrics("train/loss", [0, 1, 2]),
        ev("metric", "train/loss", step=3, value=float("nan")),
        ev("metric", "val/acc", step=3, value=float("inf")),
        ev("metric", "val/acc", step=4, value=float("-inf")),
        ev("metric", "system/cpu", step=None, value=12.5),
        ev("summary", "best_acc", payload=0.93),
        ev("summary", "confusion", payload={"tp": 5, "fp": 1}),
        ev("summary", "long", payload="x" * 2000),
        ev("artifact", "model", payload={"name": "model", "type": "model", "is_dir": False, "source": "/tmp/m.pt",
                                         "files": [{"path": "m.pt", "sha256": sha_model, "size": len(model)}]}),
        ev("artifact", "data", step=2, payload={"name": "data", "type": "dataset", "is_dir": True, "source": "/d",
                                                "files": [{"path": "a.csv", "sha256": sha_a, "size": 8},
                                                          {"path": "sub/b.json", "sha256": sha_b, "size": 2}]}),
        ev("text", "log.txt", step=1, payload="line one\nline two"),
        ev("dict", "cfg.json", payload={"a": [1, 2], "b": {"c": None}}),
        ev("event", "alert", step=2, payload={"msg": "loss spike"}),
        ev("note", "notes", payload="updated notes"),
    ]
    sync(tmp_path, run, [batch])

    [arch] = archives(tmp_path)
    assert arch.path.name.startswith(RUN_ID + "-") and len(arch.path.name) == len(RUN_ID) + len("-XXXXXX.zip")
    assert arch.meta["offline_id"] == RUN_ID
    assert arch.meta["resume_strategy"] == "get_or_create" and arch.meta["user_provided_experiment_key"]
    assert arch.meta["project_name"] == "vision" and arch.meta["start_time"] == T0

    # params: nested config flattened the way comet_ml does it ("|"), lists kept as lists
    assert arch.params == {
        "lr": 0.001, "flag": True, "arch": "resnet50",
        "optimizer|name": "adam", "optimizer|betas": [0.9, 0.999],
        "optimizer|sched|kind": "cos", "optimizer|sched|warm": 5,
    }
    assert set(arch.param_sources.values()) == {"manual"}  # no auto-logged curr_step / curr_epoch

    # every metric point: name, value (NaN/±inf kept), step, the spool timestamp; no epoch
    assert same_points(read_points(arch), points(batch))
    assert all(p.epoch is None for p in arch.metrics)

    assert arch.tags == ["baseline"]
    assert arch.others["team"] == "vision"
    assert arch.others["best_acc"] == 0.93
    assert json.loads(arch.others["confusion"]) == {"tp": 5, "fp": 1}
    assert arch.others["notes"] == "updated notes"
    assert arch.others["group"] == "sweep-1"
    assert arch.others["Name"] == "baseline"
    assert "long" not in arch.others  # over Comet's 1000-character limit: kept as an asset
    # comet_ml adds sys.* others of its own (e.g. sys.already_imported_modules when torch or
    # sklearn was imported before it); bridge's importer skips them.
    mine = {k for k in arch.others if not k.startswith("sys.")}
    assert mine - COMET_OTHERS == {"team", "best_acc", "confusion", "notes", "group"}
    assert arch.system_info == {"os": "Linux-6.1", "python": "3.11.7", "gpus": 2}

    assets = {a.file_name: a for a in arch.assets}
    assert assets["m.pt"].data == model and assets["m.pt"].upload_type == "model-element"
    assert assets["m.pt"].grouping == "model" and assets["m.pt"].metadata["sha256"] == sha_model
    assert assets["data/a.csv"].data == b"a,b\n1,2\n" and assets["data/a.csv"].step == 2
    assert assets["data/sub/b.json"].data == b"{}"
    assert assets["data/a.csv"].metadata["artifact_type"] == "dataset"
    assert assets["log.txt"].data == b"line one\nline two" and assets["log.txt"].step == 1
    assert json.loads(assets["cfg.json"].data) == {"a": [1, 2], "b": {"c": None}}
    assert assets["cfg.json"].step is None
    assert assets["long.json"].data == b"x" * 2000
    [sample] = [a for a in arch.assets if a.upload_type == "text-sample"]
    assert json.loads(sample.data) == {"msg": "loss spike"} and sample.step == 2
    assert sample.metadata == {"bridge_event": "alert", "ts_ms": batch[-2].ts_ms}

    # nothing else: no code, git, environment, stdout, installed packages
    assert set(arch.types) <= {"parameter_msg", "metric_msg", "log_other", "system_info", "file_upload"}


def test_out_of_order_steps_are_all_kept_in_the_order_logged(tmp_path: Path) -> None:
    ev = Events()
    batch = ev.metrics("loss", [0, 1, 2, 3, 10, 5, 6]) + ev.metrics("loss", [5], base=9.0)
    run = sync(tmp_path, make_run(tmp_path), [batch])
    [arch] = archives(tmp_path)
    assert read_points(arch) == points(batch)
    assert [p.step for p in arch.metrics] == [0, 1, 2, 3, 10, 5, 6, 5]
    assert run.state["next_archive"] == 1


def test_epoch_comes_from_the_epoch_metric_at_the_same_step(tmp_path: Path) -> None:
    ev = Events()
    first = [ev("metric", "loss", step=10, value=1.0), ev("metric", "epoch", step=10, value=1.0),
             ev("metric", "loss", step=11, value=0.9)]
    second = [ev("metric", "acc", step=10, value=0.5), ev("metric", "epoch", step=20, value=2.5),
              ev("metric", "loss", step=20, value=0.8)]
    sync(tmp_path, make_run(tmp_path), [first, second])
    got = {(p.name, p.step): p.epoch for a in archives(tmp_path) for p in a.metrics}
    assert got == {("loss", 10): 1, ("epoch", 10): 1, ("loss", 11): None,
                   ("acc", 10): 1,  # carried across the batch boundary in run.state
                   ("epoch", 20): None, ("loss", 20): None}  # 2.5 is not an integer epoch


def test_a_run_id_comet_refuses_gets_a_stable_key_and_the_original_as_an_other(tmp_path: Path) -> None:
    run_id = "imported:run/42"
    key = experiment_key_for(run_id)
    assert key == experiment_key_for(run_id) and key.isalnum() and 32 <= len(key) <= 50
    assert experiment_key_for(RUN_ID) == RUN_ID
    ev = Events(run_id=run_id)
    a = adapter(tmp_path)
    run = make_run(tmp_path, run_id=run_id)
    assert a.open_run(run) == key
    assert a.export(run, ev.metrics("x", [1])).outcome is Outcome.SUCCESS
    [arch] = archives(tmp_path, key)
    assert arch.meta["offline_id"] == key and arch.others["bridge_run_id"] == run_id


def test_refused_events_become_dead_letters_and_the_rest_goes_on(tmp_path: Path) -> None:
    ev = Events()
    good = ev("metric", "ok", step=1, value=1.0)
    long_key = ev("metric", "k" * 101, step=1, value=1.0)
    missing = ev("artifact", "gone", payload={"name": "gone", "type": "file", "is_dir": False, "source": "x",
                                              "files": [{"path": "x.bin", "sha256": "ab" * 32, "size": 1}]})
    a = adapter(tmp_path)
    run = make_run(tmp_path)
    a.open_run(run)
    result = a.export(run, [good, long_key, missing])
    assert result.outcome is Outcome.SUCCESS
    assert set(result.rejected) == {long_key.uid, missing.uid}
    assert "100" in result.rejected[long_key.uid] and "missing" in result.rejected[missing.uid]
    [arch] = archives(tmp_path)
    assert read_points(arch) == points([good]) and arch.assets == []


# --- sessions, replays, crashes ------------------------------------------------------------


def test_two_sync_sessions_write_separate_archives_of_one_experiment(tmp_path: Path) -> None:
    ev = Events()
    first = [ev("param", "lr", payload=0.1), *ev.metrics("loss", range(0, 50))]
    second = ev.metrics("loss", range(50, 80))
    third = [*ev.metrics("loss", range(80, 100)), ev("summary", "best", payload=1)]
    run = sync(tmp_path, make_run(tmp_path), [first, second])
    state = dict(run.state)
    before = {p.name: p.read_bytes() for p in (tmp_path / "comet").iterdir()}
    run = sync(tmp_path, make_run(tmp_path, state=state), [third], close="FINISHED")

    arch = archives(tmp_path)
    assert [a.seq for a in arch] == [0, 1, 2, 3]  # 3 batches + the closing archive
    assert len({a.path.name for a in arch}) == 4
    assert all(a.meta["offline_id"] == RUN_ID and a.meta["resume_strategy"] == "get_or_create" for a in arch)
    for name, data in before.items():  # earlier archives are never overwritten
        assert (tmp_path / "comet" / name).read_bytes() == data
    both = rb.merged(arch)
    assert read_points(both) == points(first + second + third)  # nothing lost, nothing twice
    assert both.params == {"lr": 0.1} and both.others["best"] == 1
    assert both.others["bridge_status"] == "FINISHED"


def test_a_batch_replayed_after_a_kill_is_not_written_twice(tmp_path: Path) -> None:
    """SIGKILL after comet_ml wrote the archive but before the agent saved cursor + state:
    the next session gets the old state and the same events again."""
    ev = Events()
    a, b, c = ev.metrics("loss", range(0, 10)), ev.metrics("loss", range(10, 20)), ev.metrics("loss", range(20, 30))
    run = sync(tmp_path, make_run(tmp_path), [a])
    saved = dict(run.state)  # the agent saved this after `a`
    sync(tmp_path, make_run(tmp_path, state=dict(saved)), [b])  # ...then died before saving again

    # The agent replays from its cursor, cut into batches differently this time.
    run = make_run(tmp_path, state=dict(saved))
    session = adapter(tmp_path)
    session.open_run(run)
    r1 = session.export(run, b[:4])  # already in an archive: nothing new is written
    assert r1.outcome is Outcome.SUCCESS and len(archives(tmp_path)) == 2
    r2 = session.export(run, b[4:] + c)
    assert r2.outcome is Outcome.SUCCESS
    session.shutdown()

    arch = archives(tmp_path)
    assert len(arch) == 3
    assert read_points(rb.merged(arch)) == points(a + b + c)
    assert read_points(arch[-1]) == points(c)

    # and once confirmed, a later session does not keep re-reading old ledgers
    assert run.state["next_archive"] == 3
    later = sync(tmp_path, make_run(tmp_path, state=dict(run.state)), [ev.metrics("loss", [30])])
    assert read_points(rb.merged(archives(tmp_path))) == points(a + b + c) + [("loss", 3.0, 30, T0 + 310)]
    assert later.state["next_archive"] == 4


def test_a_session_that_lost_its_state_still_skips_what_an_archive_holds(tmp_path: Path) -> None:
    ev = Events()
    batch = ev.metrics("loss", range(5))
    run = make_run(tmp_path)
    a = adapter(tmp_path)
    a.open_run(run)
    assert a.export(run, batch).outcome is Outcome.SUCCESS
    a.shutdown()
    # a new session that lost its state entirely still sees the unconfirmed archive
    b = adapter(tmp_path)
    run2 = make_run(tmp_path)
    b.open_run(run2)
    assert b.export(run2, batch).outcome is Outcome.SUCCESS
    assert read_points(rb.merged(archives(tmp_path))) == points(batch)


def test_a_failure_mid_batch_leaves_no_half_archive_and_the_retry_delivers_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridge.adapters.comet.adapter as mod

    ev = Events()
    batch = ev.metrics("loss", range(6))
    real_write = mod._Writer.write

    def flaky(self: Any, e: Event) -> None:  # a fault at bridge's own boundary
        if e.step == 3:
            raise OSError("disk full")
        real_write(self, e)

    run = make_run(tmp_path)
    a = adapter(tmp_path)
    a.open_run(run)
    monkeypatch.setattr(mod._Writer, "write", flaky)
    result = a.export(run, batch)
    assert result.outcome is Outcome.RETRY and "disk full" in result.reason
    assert archives(tmp_path) == [] and len(list((tmp_path / "comet").glob("*.incomplete"))) == 1
    monkeypatch.setattr(mod._Writer, "write", real_write)
    assert a.export(run, batch).outcome is Outcome.SUCCESS
    assert read_points(rb.merged(archives(tmp_path))) == points(batch)


def test_an_archive_left_by_a_killed_sync_is_set_aside(tmp_path: Path) -> None:
    """A real comet_ml session SIGKILLed before end(): it leaves an empty placeholder zip."""
    ev = Events()
    batch = ev.metrics("loss", range(3))
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from bridge.adapters.base import Event, RunInfo
        from bridge.adapters.comet.adapter import CometAdapter, _RunCtx
        run = RunInfo(run_id={RUN_ID!r}, project="vision")
        a = CometAdapter(mode="offline", offline_directory={str(tmp_path / 'comet')!r}, spool_dir=".")
        exp = a._start(run, _RunCtx(key={RUN_ID!r}), online=False)
        exp.log_metric("loss", 1.0, step=0)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    [left] = list((tmp_path / "comet").glob("*.zip"))

    sync(tmp_path, make_run(tmp_path), [batch])
    assert not left.exists() and left.with_name(left.name + ".incomplete").exists()
    [arch] = archives(tmp_path)
    assert read_points(arch) == points(batch)


def test_comet_adds_no_process_duration_in_a_real_sync_process(tmp_path: Path) -> None:
    """comet_ml skips "process duration" when pytest is imported, so run a plain process."""
    sha = put_blob(tmp_path / "blobs", b"x")
    script = textwrap.dedent(f"""
        from pathlib import Path
        from bridge.adapters.base import Event, RunInfo
        from bridge.adapters.comet import CometAdapter
        run = RunInfo(run_id={RUN_ID!r}, project="vision", blob_root=Path({str(tmp_path / 'blobs')!r}))
        a = CometAdapter(mode="offline", offline_directory={str(tmp_path / 'comet')!r}, spool_dir=".")
        import os
        assert "COMET_DISABLE_AUTO_LOGGING" not in os.environ  # not left to child processes
        a.open_run(run)
        r = a.export(run, [Event("f", 1, run.run_id, "metric", "loss", 7, 1, value=0.5),
                           Event("f", 2, run.run_id, "text", "t.txt", 3, 2, payload="hi")])
        assert r.outcome.value == "success", r
        a.shutdown()
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("COMET_LOGGING_CONSOLE", "COMET_DISABLE_AUTO_LOGGING")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    [arch] = archives(tmp_path)
    assert [p.name for p in arch.metrics] == ["loss"]
    assert set(arch.param_sources.values()) <= {"manual"}
    assert {k for k in arch.others if not k.startswith("sys.")} <= COMET_OTHERS
    assert b"comet upload" not in proc.stderr + proc.stdout  # one line per archive would be noise


def test_a_comet_experiment_of_the_host_program_keeps_running(tmp_path: Path) -> None:
    mine = comet_ml.start(online=False, experiment_config=comet_ml.ExperimentConfig(
        offline_directory=str(tmp_path / "mine"), display_summary_level=0, auto_output_logging=False,
        log_code=False, log_git_metadata=False, log_git_patch=False, log_env_details=False))
    try:
        sync(tmp_path, make_run(tmp_path), [Events().metrics("loss", [1])])
        assert comet_ml.get_running_experiment() is mine and mine.alive
    finally:
        mine.end()


# --- options and packaging -----------------------------------------------------------------


def test_options_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AdapterError, match="unknown option"):
        CometAdapter(mode="offline", offline_directory=str(tmp_path), spool_dir=".", api_key="x")
    with pytest.raises(AdapterError, match="offline_directory"):
        CometAdapter(mode="offline", spool_dir=".")
    with pytest.raises(AdapterError, match="mode"):
        CometAdapter(mode="sometimes", spool_dir=".")
    monkeypatch.delenv("COMET_API_KEY")
    with pytest.raises(AdapterError, match="COMET_API_KEY"):
        CometAdapter(spool_dir=".")
    assert load_adapter("comet") is CometAdapter


def test_importing_the_module_does_not_import_comet_ml() -> None:
    code = "import sys, bridge.adapters.comet; assert 'comet_ml' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
