"""Local queries: omega-ml's data() columns, run numbering and filters; runs()."""

from __future__ import annotations

import bridge


def _make_runs(spool):
    ids = []
    for i in range(3):
        with bridge.init(project="exp", dir=spool, sync="offline", name=f"r{i}") as run:
            run.log_param("i", i)
            for s in range(3):
                run.log({"accuracy": i + s / 10}, step=s)
        ids.append(run.id)
    with bridge.init(project="other", dir=spool, sync="offline") as run:
        run.log({"x": 1.0})
    return ids


def test_data_columns_and_run_selection(tmp_path):
    ids = _make_runs(tmp_path)
    df = bridge.data(project="exp", dir=tmp_path)
    assert list(df.columns) == ["experiment", "run", "event", "dt", "node", "step", "key", "value"]
    assert set(df["run"]) == {3}
    assert list(df["event"])[0] == "start" and list(df["event"])[-1] == "stop"
    assert list(df["value"])[-1] == "FINISHED"
    all_runs = bridge.data(project="exp", run="all", event="metric", dir=tmp_path)
    assert sorted(set(all_runs["run"])) == [1, 2, 3] and len(all_runs) == 9
    pick = bridge.data(project="exp", run=(1, 3), key="accuracy", dir=tmp_path)
    assert sorted(set(pick["run"])) == [1, 3]
    by_id = bridge.data(run=ids[1], event="metric", step=2, dir=tmp_path)
    assert list(by_id["value"]) == [1.2]
    num = bridge.data(project="exp", run=2, event="param", dir=tmp_path)
    assert list(num["value"]) == [1]
    other = bridge.data(project="other", dir=tmp_path, event="metric")
    assert list(other["experiment"]) == ["other"] and list(other["run"]) == [1]


def test_runs_frame_and_run_data(tmp_path):
    _make_runs(tmp_path)
    runs = bridge.runs(dir=tmp_path)
    assert list(runs["project"]) == ["exp", "exp", "exp", "other"]
    assert list(runs["run"]) == [1, 2, 3, 1]
    assert set(runs["status"]) == {"FINISHED"}
    run = bridge.init(project="exp", dir=tmp_path, sync="offline")
    run.log({"a": 1.0})
    df = run.data(event="metric")
    assert list(df["key"]) == ["a"] and list(df["run"]) == [4]
    run.finish()


def test_runs_started_in_one_millisecond_keep_their_creation_order(tmp_path, monkeypatch):
    # A parent and its first child often start in the same millisecond; their ids are random,
    # so ordering by id put the child first in about half the runs.
    import sys

    monkeypatch.setattr(sys.modules["bridge.run"], "_now", lambda: 1_700_000_000_000_000_000)
    for name, run_id in (("parent", "f" * 32), ("child", "8" * 32), ("other", "0" * 32)):
        with bridge.init(project="same-ms", dir=tmp_path, sync="offline", name=name,
                         run_id=run_id) as run:
            run.log({"x": 1.0})
    runs = bridge.runs(project="same-ms", dir=tmp_path)
    assert set(runs["start"]) == {runs["start"][0]}
    assert list(runs["name"]) == ["parent", "child", "other"]
    assert list(runs["run"]) == [1, 2, 3]
