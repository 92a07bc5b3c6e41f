"""The Neptune adapter against the real neptune 1.x client in offline mode.

Every assertion reads what the client wrote (``.neptune/offline/*/data-N.log``) back with
Neptune's own operation decoder (tests/adapters/neptune_readback.py).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("neptune")

from bridge.adapters.base import AdapterError, Event, Outcome, RunInfo, load_adapter  # noqa: E402


def _load_readback() -> Any:
    path = Path(__file__).with_name("neptune_readback.py")
    spec = importlib.util.spec_from_file_location("_neptune_readback", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


readback = _load_readback()
RUN_ID = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000


# ----------------------------------------------------------------------------- helpers


class Events:
    """Builds spool-like events with increasing seq per writer file."""

    def __init__(self, file_id: str = "f1", node: str = "n0", run_id: str = RUN_ID) -> None:
        self.file_id, self.node, self.run_id, self.seq = file_id, node, run_id, 0

    def __call__(self, kind: str, key: str | None, *, step: int | None = None, ts: int | None = None,
                 value: float | None = None, payload: Any = None) -> Event:
        self.seq += 1
        return Event(self.file_id, self.seq, self.run_id, kind, key, step,
                     T0 + self.seq * 10 if ts is None else ts, value, payload, self.node)


def put_blob(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (root / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha[:2] / sha).write_bytes(data)
    return sha


def make_run(tmp_path: Path, state: dict | None = None, **kw: Any) -> RunInfo:
    return RunInfo(run_id=kw.pop("run_id", RUN_ID), project=kw.pop("project", "demo"),
                   name=kw.pop("name", "baseline"), start_ms=T0, blob_root=tmp_path / "blobs",
                   state=state if state is not None else {}, **kw)


@pytest.fixture
def adapter_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    monkeypatch.delenv("NEPTUNE_DATA_DIRECTORY", raising=False)
    made: list[Any] = []

    def make(**options: Any) -> Any:
        cls = load_adapter("neptune")
        adapter = cls(mode="offline", data_dir=str(tmp_path / "nd"), spool_dir=str(tmp_path / "spool"), **options)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.shutdown()


def neptune_dir(tmp_path: Path) -> Path:
    return tmp_path / "nd" / ".neptune"


def only_run(tmp_path: Path) -> Any:
    runs = readback.runs_for(neptune_dir(tmp_path), RUN_ID)
    assert len(runs) == 1, [r.path for r in runs]
    return runs[0]


def metric_points(batch: list[Event], key: str) -> list[tuple[int, float, float]]:
    return [(e.step, e.value, e.ts_ms / 1000) for e in batch if e.kind == "metric" and e.key == key]


def series(run: Any, key: str) -> list[tuple[Any, Any, float]]:
    return [(p.step, p.value, p.ts) for p in run.series.get(key, [])]


# ----------------------------------------------------------------------------- tests


def test_full_mapping_round_trip(tmp_path: Path, adapter_factory: Any) -> None:
    ev = Events()
    sha = put_blob(tmp_path / "blobs", b"\x00weights\xff")
    sha_a = put_blob(tmp_path / "blobs", b"a-data")
    sha_b = put_blob(tmp_path / "blobs", b"b-data")
    config = {"optimizer": {"name": "adam", "lr": 0.001, "betas": [0.9, 0.99]}, "epochs": 3,
              "big": 2**40, "none": None, "flag": True}
    batch = [
        ev("param", "config", payload=config),
        ev("param", "seed", payload=7),
        ev("tag", "team", payload="vision"),
        ev("tag", "baseline", payload=""),
        ev("note", "notes", payload="first try"),
        ev("system", "system", payload={"hostname": "gpu-7", "python": "3.11", "gpu": {"count": 2}}),
    ]
    for step in range(5):
        batch.append(ev("metric", "train/loss", step=step, value=1.0 / (step + 1)))
        batch.append(ev("metric", "system/cpu", step=step, value=10.0 + step))
    batch += [
        ev("metric", "acc", step=None, value=0.5),
        ev("metric", "acc", step=None, value=0.6),
        ev("summary", "best", payload={"acc": 0.6, "epoch": 2}),
        ev("summary", "score", payload=float("nan")),
        ev("text", "notes.md", payload="# hello\n"),
        ev("dict", "cfg.json", payload={"a": [1, 2]}),
        ev("event", "checkpoint", payload={"path": "/ckpt/1"}),
        ev("artifact", "model.pt", payload={"name": "model.pt", "type": "model", "is_dir": False,
                                            "source": "/tmp/model.pt",
                                            "files": [{"path": "model.pt", "sha256": sha, "size": 10}]}),
        ev("artifact", "data", payload={"name": "data", "type": "dataset", "is_dir": True, "source": "/d",
                                        "files": [{"path": "a.csv", "sha256": sha_a, "size": 6},
                                                  {"path": "sub/b.txt", "sha256": sha_b, "size": 6}]}),
    ]
    adapter = adapter_factory()
    run = make_run(tmp_path, notes="from runinfo", group="sweep-1")
    remote = adapter.open_run(run)
    assert remote.startswith("offline/")
    result = adapter.export(run, batch)
    assert result.outcome is Outcome.SUCCESS, result
    assert dict(result.rejected) == {}
    adapter.close_run(run, "FINISHED", T0 + 99_000)

    got = only_run(tmp_path)
    # identity and run attributes
    assert got.fields["bridge/run_id"] == RUN_ID
    assert got.fields["bridge/project"] == "demo"
    assert got.fields["bridge/group"] == "sweep-1"
    assert got.fields["sys/name"] == "baseline"
    assert got.fields["sys/description"] == "first try"
    assert got.fields["sys/hostname"] == "gpu-7"
    assert got.fields["bridge/status"] == "FINISHED"
    assert got.fields["sys/failed"] is False
    assert not any(k.startswith("source_code/") for k in got.fields)
    # params: nested config as namespaces, unsupported leaves as text
    assert got.namespace("parameters") == {
        "config": {"optimizer": {"name": "adam", "lr": 0.001, "betas": "[0.9, 0.99]"}, "epochs": 3,
                   "big": float(2**40), "none": "null", "flag": True},
        "seed": 7,
    }
    assert got.namespace("environment") == {"hostname": "gpu-7", "python": "3.11", "gpu": {"count": 2}}
    assert got.namespace("summary") == {"best": {"acc": 0.6, "epoch": 2}, "score": "nan"}
    # every series point with its step and original timestamp
    for key in ("train/loss", "system/cpu"):
        assert series(got, key) == metric_points(batch, key)
    acc = [e for e in batch if e.key == "acc"]
    assert series(got, "acc") == [(0, 0.5, acc[0].ts_ms / 1000), (1, 0.6, acc[1].ts_ms / 1000)]
    ck = next(e for e in batch if e.kind == "event")
    assert series(got, "events/checkpoint") == [(0, json.dumps({"path": "/ckpt/1"}), ck.ts_ms / 1000)]
    # tags
    assert got.tags == {"team:vision", "baseline"}
    assert got.fields["bridge/tags/team"] == "vision"
    # files: text/dict content copied by the client, artifacts referenced by blob path
    assert got.files["files/notes.md"] == b"# hello\n"
    assert json.loads(got.files["files/cfg.json"]) == {"a": [1, 2]}
    assert got.files["artifacts/model.pt"] == b"\x00weights\xff"
    assert got.file_ext["artifacts/model.pt"] == "pt"
    assert got.file_sources["artifacts/model.pt"] == str(run.blob_path(sha))
    assert got.files["artifacts/data/a.csv"] == b"a-data"
    assert got.files["artifacts/data/sub/b.txt"] == b"b-data"
    assert json.loads(got.fields["bridge/artifacts/data"])["type"] == "dataset"
    # the state the agent saves
    assert run.state["series"]["train/loss"][0] == 4
    assert run.state["series"]["acc"][0] == 1


def test_nonfinite_and_bad_steps_are_rejected_with_reasons(tmp_path: Path, adapter_factory: Any) -> None:
    ev = Events()
    batch = [
        ev("metric", "loss", step=1, value=0.5),
        ev("metric", "loss", step=2, value=float("nan")),
        ev("metric", "loss", step=3, value=float("inf")),
        ev("metric", "loss", step=4, value=0.4),
        ev("metric", "loss", step=2, value=0.45),  # below the last step
        ev("metric", "loss", step=4, value=0.41),  # same step, other value
        ev("metric", "loss", step=4, value=0.4),  # same step, same value: a duplicate
        ev("metric", "sys/x", step=1, value=1.0),
        ev("metric", "loss", step=10, value=0.3),
    ]
    adapter = adapter_factory()
    run = make_run(tmp_path)
    adapter.open_run(run)
    result = adapter.export(run, batch)
    assert result.outcome is Outcome.SUCCESS
    rejected = dict(result.rejected)
    assert set(rejected) == {batch[i].uid for i in (1, 2, 4, 5, 7)}
    assert "NaN/inf" in rejected[batch[1].uid]
    assert "strictly increasing" in rejected[batch[4].uid]
    assert "one value per step" in rejected[batch[5].uid]
    assert "reserved" in rejected[batch[7].uid]
    adapter.shutdown()
    got = only_run(tmp_path)
    assert [(p.step, p.value) for p in got.series["loss"]] == [(1, 0.5), (4, 0.4), (10, 0.3)]


def test_second_session_with_saved_state_adds_nothing_twice(tmp_path: Path, adapter_factory: Any) -> None:
    ev = Events()
    first = [ev("param", "lr", payload=0.1), ev("tag", "team", payload="a")] + [
        ev("metric", "loss", step=s, value=float(s)) for s in range(3)]
    run = make_run(tmp_path)
    a1 = adapter_factory()
    a1.open_run(run)
    assert a1.export(run, first).outcome is Outcome.SUCCESS
    a1.shutdown()
    saved = json.loads(json.dumps(run.state))  # what the agent persists

    second = [ev("metric", "loss", step=s, value=float(s)) for s in range(3, 6)] + [
        ev("tag", "team", payload="b")]
    run2 = make_run(tmp_path, state=saved)
    a2 = adapter_factory()
    a2.open_run(run2)
    res = a2.export(run2, second)
    assert res.outcome is Outcome.SUCCESS and not res.rejected
    a2.close_run(run2, "FAILED", T0 + 1000)

    runs = readback.runs_for(neptune_dir(tmp_path), RUN_ID)
    assert len(runs) == 2  # one offline directory per session
    all_points = [(p.step, p.value) for r in runs for p in r.series.get("loss", [])]
    assert all_points == [(s, float(s)) for s in range(6)]
    assert runs[1].fields["sys/failed"] is True
    assert runs[1].tags == {"team:b"}  # the changed tag replaced the old label
    assert "parameters/lr" not in runs[1].fields  # not re-sent


def test_replay_after_killed_sync_adds_nothing_twice(tmp_path: Path, adapter_factory: Any) -> None:
    ev = Events()
    batch1 = [ev("metric", "loss", step=s, value=float(s)) for s in range(3)]
    batch2 = [ev("param", "lr", payload=0.1), ev("text", "log.txt", payload="x"),
              ev("tag", "t", payload="")] + [
        ev("metric", "loss", step=s, value=float(s)) for s in range(3, 6)] + [
        ev("metric", "nostep", value=1.0), ev("metric", "nostep", value=2.0)]
    run = make_run(tmp_path)
    a1 = adapter_factory()
    a1.open_run(run)
    assert a1.export(run, batch1).outcome is Outcome.SUCCESS
    saved = json.loads(json.dumps(run.state))  # saved by the agent after batch 1
    assert a1.export(run, batch2).outcome is Outcome.SUCCESS
    # killed here: the op log holds batch 2, the agent's state does not. No stop().

    run2 = make_run(tmp_path, state=copy.deepcopy(saved))
    a2 = adapter_factory()
    a2.open_run(run2)
    replay = a2.export(run2, batch2 + [ev("metric", "loss", step=6, value=6.0)])
    assert replay.outcome is Outcome.SUCCESS and not replay.rejected, replay
    a2.shutdown()
    a1.shutdown()

    runs = readback.runs_for(neptune_dir(tmp_path), RUN_ID)
    assert len(runs) == 2
    points = [(p.step, p.value) for r in runs for p in r.series.get("loss", [])]
    assert points == [(s, float(s)) for s in range(7)]
    nostep = [(p.step, p.value) for r in runs for p in r.series.get("nostep", [])]
    assert nostep == [(0, 1.0), (1, 2.0)]
    replayed = runs[1]
    assert "parameters/lr" not in replayed.fields
    assert "files/log.txt" not in replayed.files
    assert "t" not in replayed.tags
    assert run2.state["series"]["loss"][0] == 6


def test_two_nodes_into_one_run(tmp_path: Path, adapter_factory: Any) -> None:
    rank0, rank1 = Events("f0", "host:0"), Events("f1", "host:1")
    events = []
    for s in range(3):
        events.append(rank0("metric", "rank0/loss", step=s, ts=T0 + s * 100, value=1.0 + s))
        events.append(rank1("metric", "rank1/loss", step=s, ts=T0 + s * 100 + 1, value=2.0 + s))
    events.append(rank0("metric", "loss", step=5, ts=T0 + 1000, value=0.1))
    events.append(rank1("metric", "loss", step=5, ts=T0 + 1001, value=0.2))  # same series, same step
    events.sort(key=lambda e: (e.ts_ms, e.file_id, e.seq))
    adapter = adapter_factory()
    run = make_run(tmp_path)
    adapter.open_run(run)
    res = adapter.export(run, events)
    assert list(res.rejected) == [events[-1].uid]
    adapter.close_run(run, "FINISHED", T0 + 2000)
    got = only_run(tmp_path)
    assert series(got, "rank0/loss") == metric_points(events, "rank0/loss")
    assert series(got, "rank1/loss") == metric_points(events, "rank1/loss")
    assert series(got, "loss") == [(5, 0.1, (T0 + 1000) / 1000)]


def test_missing_blob_is_rejected_not_dropped(tmp_path: Path, adapter_factory: Any) -> None:
    ev = Events()
    art = ev("artifact", "gone", payload={"name": "gone", "type": "file", "is_dir": False, "source": "x",
                                          "files": [{"path": "gone.bin", "sha256": "ab" * 32, "size": 1}]})
    adapter = adapter_factory()
    run = make_run(tmp_path)
    adapter.open_run(run)
    res = adapter.export(run, [art])
    assert "missing" in res.rejected[art.uid]


def test_options_and_data_dir(tmp_path: Path, adapter_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AdapterError):
        adapter_factory(colour="blue")
    with pytest.raises(AdapterError):
        load_adapter("neptune")(mode="debug", spool_dir=str(tmp_path))
    # default data dir: next to the spool; the process environment is left as it was
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", "/should/stay")
    adapter = load_adapter("neptune")(mode="offline", spool_dir=str(tmp_path / "spool"))
    run = make_run(tmp_path)
    adapter.open_run(run)
    adapter.shutdown()
    import os

    assert os.environ["NEPTUNE_DATA_DIRECTORY"] == "/should/stay"
    assert readback.runs_for(tmp_path / "spool" / "neptune" / ".neptune", RUN_ID)


def test_online_modes_need_a_workspace(tmp_path: Path, adapter_factory: Any) -> None:
    adapter = load_adapter("neptune")(mode="sync", spool_dir=str(tmp_path))
    with pytest.raises(AdapterError, match="workspace"):
        adapter._project(make_run(tmp_path))
    assert adapter._project(make_run(tmp_path, project="team/my proj")) == "team/my-proj"


# ----------------------------------------------------------------------------- Neptune paths
#
# neptune 1.x keeps only the non-empty "/" segments of a field path (parse_path): `k//x` is
# `k/x`, `/lead` is `lead`, `trail/` is `trail`. Two bridge keys must never land in one
# Neptune field; what Neptune would merge is a dead letter with a reason.


def _series_owners(runs: list[Any], accepted: list[Event]) -> dict[str, set[str]]:
    """Neptune series path -> the bridge metric keys whose points it holds."""
    by_point: dict[tuple[Any, Any, float], set[str]] = {}
    for e in accepted:
        if e.kind == "metric":
            by_point.setdefault((e.step, e.value, e.ts_ms / 1000), set()).add(e.key or "")
    owners: dict[str, set[str]] = {}
    for r in runs:
        for path, points in r.series.items():
            for p in points:
                owners.setdefault(path, set()).update(by_point.get((p.step, p.value, p.ts), {"?"}))
    return owners


def _assert_steps_increase(runs: list[Any]) -> None:
    for path in {p for r in runs for p in r.series}:
        steps = [pt.step for r in runs for pt in r.series.get(path, [])]
        assert all(a < b for a, b in zip(steps, steps[1:])), (path, steps)


def test_keys_neptune_would_normalize_are_dead_letters(tmp_path: Path, adapter_factory: Any) -> None:
    ev = Events()
    batch = []
    for step in range(10):
        batch.append(ev("metric", "k/x" if step % 2 == 0 else "k//x", step=step, value=float(step)))
    batch += [ev("metric", "/lead", step=0, value=1.0), ev("metric", "trail/", step=0, value=2.0),
              ev("metric", "/", step=0, value=3.0), ev("metric", "", step=0, value=4.0),
              ev("metric", "lead", step=5, value=5.0)]
    adapter = adapter_factory()
    run = make_run(tmp_path)
    adapter.open_run(run)
    result = adapter.export(run, batch)
    assert result.outcome is Outcome.SUCCESS, result
    adapter.close_run(run, "FINISHED", T0 + 99_000)

    refused = [e for e in batch if e.key in ("k//x", "/lead", "trail/", "/", "")]
    rejected = dict(result.rejected)
    assert set(rejected) == {e.uid for e in refused}
    for e in refused:
        reason = rejected[e.uid]
        assert "Neptune" in reason and repr(e.key) in reason, reason
    assert "would store it as 'k/x'" in rejected[batch[1].uid]
    assert "empty path segment" in rejected[batch[10].uid]

    runs = readback.runs_for(neptune_dir(tmp_path), RUN_ID)
    accepted = [e for e in batch if e.uid not in rejected]
    owners = _series_owners(runs, accepted)
    assert owners == {"k/x": {"k/x"}, "lead": {"lead"}}  # one bridge key per Neptune series
    _assert_steps_increase(runs)
    got = only_run(tmp_path)
    assert [(p.step, p.value) for p in got.series["k/x"]] == [(s, float(s)) for s in range(0, 10, 2)]
    assert [(p.step, p.value) for p in got.series["lead"]] == [(5, 5.0)]
    assert "trail" not in got.series


def test_keys_neptune_would_nest_into_one_field_are_dead_letters(tmp_path: Path, adapter_factory: Any) -> None:
    ev = Events()
    sha = put_blob(tmp_path / "blobs", b"b-data")
    batch = [
        ev("metric", "k/x", step=0, value=1.0),
        ev("metric", "k", step=1, value=2.0),  # 1: `k` is the namespace of `k/x`
        ev("metric", "k/x/y", step=1, value=2.0),  # 2: inside the series `k/x`
        ev("metric", "parameters/lr", step=0, value=0.1),
        ev("param", "lr", payload=0.2),  # 4: the metric above holds parameters/lr
        ev("param", "opt/beta", payload=0.9),
        ev("param", "opt", payload={"beta": 0.8}),  # 6: `opt` holds `opt/beta` of another key
        ev("param", "cfg", payload={"x/y": 1, "x": {"y": 2}}),  # 7: one field twice
        ev("param", "cfg2", payload={"x": 1, "x/y": 2}),  # 8: field and namespace
        ev("summary", "s", payload={"": 1}),  # 9: empty nested key
        ev("summary", "t", payload={"a//b": 1}),  # 10: empty segment in a nested key
        ev("tag", "team", payload="a"),
        ev("tag", "team/sub", payload="b"),  # 12: bridge/tags/team is a field
        ev("event", "e", payload={"n": 1}),
        ev("metric", "events/e", step=0, value=1.0),  # 14: event `e` holds events/e
        ev("text", "/notes.md", payload="x"),  # 15
        ev("artifact", "d", payload={"name": "d", "type": "dataset", "is_dir": True, "source": "/d",
                                     "files": [{"path": "sub//b.txt", "sha256": sha, "size": 6}]}),  # 16
        ev("param", "fine", payload={"x": {"y": 1}, "z": 2}),
        ev("metric", "sys2/ok", step=0, value=1.0),
        ev("metric", "source_code/x", step=0, value=1.0),  # 19: the adapter deletes source_code/
        # distinct fields under one prefix stay allowed (what an imported Neptune run holds)
        ev("param", "fine/w", payload=3),
        ev("metric", "parameters/fine/curve", step=0, value=1.0),
    ]
    adapter = adapter_factory()
    run = make_run(tmp_path)
    adapter.open_run(run)
    result = adapter.export(run, batch)
    assert result.outcome is Outcome.SUCCESS, result
    adapter.close_run(run, "FINISHED", T0 + 99_000)
    rejected = dict(result.rejected)
    assert set(rejected) == {batch[i].uid for i in (1, 2, 4, 6, 7, 8, 9, 10, 12, 14, 15, 16, 19)}, rejected
    assert "namespace" in rejected[batch[1].uid]
    assert "metric 'parameters/lr'" in rejected[batch[4].uid]
    assert "param 'opt/beta'" in rejected[batch[6].uid]
    assert "share the Neptune field 'parameters/cfg/x/y'" in rejected[batch[7].uid]
    assert "empty" in rejected[batch[9].uid] and "empty path segment" in rejected[batch[10].uid]
    assert "event 'e'" in rejected[batch[14].uid]
    assert "member path 'sub//b.txt'" in rejected[batch[16].uid]
    assert "reserved" in rejected[batch[19].uid]
    assert all(reason for reason in rejected.values())

    got = only_run(tmp_path)
    assert set(got.series) == {"k/x", "parameters/lr", "events/e", "sys2/ok", "parameters/fine/curve"}
    assert "parameters/lr" not in got.fields
    assert got.namespace("parameters") == {"opt": {"beta": 0.9}, "fine": {"x": {"y": 1}, "z": 2, "w": 3}}
    assert "summary" not in {k.split("/")[0] for k in got.fields}
    assert got.tags == {"team:a"} and got.fields["bridge/tags/team"] == "a"
    assert not any(k.startswith("artifacts/") for k in got.files)
    assert not any(k.startswith("files/") for k in got.files)
    _assert_steps_increase([got])


def test_path_owners_survive_sessions_and_killed_syncs(tmp_path: Path, adapter_factory: Any) -> None:
    ev = Events()
    first = [ev("metric", "k/x", step=0, value=1.0), ev("param", "a/b", payload=1)]
    run = make_run(tmp_path)
    a1 = adapter_factory()
    a1.open_run(run)
    assert not a1.export(run, first).rejected
    saved = json.loads(json.dumps(run.state))
    assert saved["paths"] == {"k/x": "metric 'k/x'", "parameters/a/b": "param 'a/b'"}
    killed = [ev("metric", "m/y", step=0, value=1.0)]
    assert not a1.export(run, killed).rejected
    # killed here: `m/y` is in the op log, not in the saved state

    second = [ev("metric", "k", step=1, value=2.0), ev("param", "a", payload={"b": 2}),
              ev("metric", "m", step=1, value=2.0)] + killed + [ev("metric", "k/x", step=1, value=2.0)]
    run2 = make_run(tmp_path, state=copy.deepcopy(saved))
    a2 = adapter_factory()
    a2.open_run(run2)
    res = a2.export(run2, second)
    assert set(res.rejected) == {e.uid for e in second[:3]}, res.rejected
    assert "metric 'k/x'" in res.rejected[second[0].uid]
    assert "param 'a/b'" in res.rejected[second[1].uid]
    assert "an earlier session" in res.rejected[second[2].uid]
    a2.shutdown()
    a1.shutdown()

    runs = readback.runs_for(neptune_dir(tmp_path), RUN_ID)
    assert len(runs) == 2
    accepted = [e for e in first + killed + second if e.uid not in res.rejected]
    assert _series_owners(runs, accepted) == {"k/x": {"k/x"}, "m/y": {"m/y"}}
    _assert_steps_increase(runs)
    # the count of offline directories (= Neptune runs after `neptune sync`) is kept and shown
    assert len(run2.state["offline_dirs"]) == 2
    assert a2.run_url(run2, "offline/x").startswith("2 offline dirs")
