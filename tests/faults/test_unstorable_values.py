"""A value SQLite cannot store costs only its own call: refused or normalized at the call
with a counted warning, and, should one reach the writer anyway, isolated there."""

from __future__ import annotations

import warnings

import pytest

import bridge
from bridge.errors import BridgeWarning, InvalidValueError
from bridge.spool.reader import find_run, iter_events, list_runs


def _events(spool, run_id):
    rec = find_run(spool, run_id)
    assert rec is not None, f"run {run_id} is not in the spool"
    return rec, list(iter_events(rec.files, run_id))


def test_one_bad_call_among_a_thousand_loses_only_itself(tmp_path):
    spool = tmp_path / "spool"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = bridge.init(project="p", dir=spool, sync="offline")
        for i in range(1000):
            if i == 500:
                run.log({"bad\ud800": 1.0}, step=i)  # a lone surrogate in a key: refused
                run.log_param("p", "x\udcff")  # in a value: normalized to U+FFFD
                run.log_metric("t", 1.0, timestamp=2**64)  # past int64: the call's time
                run.set_tag("t\udcff", "v")  # a key: refused
            run.log({"loss": i / 1000}, step=i)
        assert run.flush() is True
        run.finish()
    messages = [str(w.message) for w in caught if issubclass(w.category, BridgeWarning)]
    assert any("lone surrogate" in m and "bad" in m for m in messages), messages
    assert any("U+FFFD" in m for m in messages), messages
    assert any("before year 10000" in m for m in messages), messages
    assert run.warnings == 4

    rec, events = _events(spool, run.id)
    assert rec.status == "FINISHED"
    losses = [e.step for e in events if e.kind == "metric" and e.key == "loss"]
    assert losses == list(range(1000))
    params = {e.key: e.payload for e in events if e.kind == "param"}
    assert params == {"p": "x\ufffd"}
    [t] = [e for e in events if e.kind == "metric" and e.key == "t"]
    assert 0 < t.ts_ms < 2**63
    assert not [e for e in events if e.kind == "tag"]

    # A clean second run in the same process is whole.
    run2 = bridge.init(project="p", dir=spool, sync="offline")
    for i in range(100):
        run2.log({"x": float(i)})
    run2.finish()
    _, events2 = _events(spool, run2.id)
    assert len([e for e in events2 if e.kind == "metric"]) == 100
    assert len(list_runs(spool)) == 2


def test_surrogates_in_run_names_are_replaced(tmp_path):
    with pytest.warns(BridgeWarning, match="U\\+FFFD"):
        run = bridge.init(project="p\udcff", name="n\ud800", dir=tmp_path, sync="offline")
    run.log({"x": 1.0})
    run.finish()
    [rec] = list_runs(tmp_path)
    assert (rec.project, rec.name) == ("p\ufffd", "n\ufffd")


def test_strict_refuses_at_the_call(tmp_path):
    run = bridge.init(project="p", dir=tmp_path, sync="offline", strict=True)
    with pytest.raises(InvalidValueError, match="lone surrogate"):
        run.log({"k\udcff": 1.0})
    with pytest.raises(InvalidValueError, match="year 10000"):
        run.log_metric("t", 1.0, timestamp=2**64)
    run.finish()


def test_writer_isolates_a_value_that_reaches_it(tmp_path):
    """Defence in depth: bypass validation and hand the writer rows SQLite cannot bind."""
    run = bridge.init(project="p", dir=tmp_path, sync="offline")
    writer = run._writer
    for i in range(300):
        run.log({"a": float(i)}, step=i)
        if i == 100:
            writer.put_event(run.id, "param", "k\ud800", None, 1, None, '"v"')
        if i == 200:
            writer.put_metrics(run.id, 2**70, 1, [("b", 1.0)])  # a step past 64 bits
    with pytest.warns(BridgeWarning, match="cannot store"):
        assert run.flush() is True
    run.finish()
    rec, events = _events(tmp_path, run.id)
    assert [e.step for e in events if e.key == "a"] == list(range(300))
    assert not [e for e in events if e.key in ("k\ud800", "b")]
    assert rec.dropped == 2  # counted on the run, shown by `bridge status` and `bridge runs`
