"""``mode="disabled"``: the whole Run API runs and records nothing."""

from __future__ import annotations

import inspect

import pytest

import bridge
from bridge.disabled import DisabledRun, init as disabled_init
from bridge.query import DATA_COLUMNS
from bridge.run import Run


def _public(cls):
    return {n for n in dir(cls) if not n.startswith("_")}


def test_same_public_api_as_run():
    missing = _public(Run) - _public(DisabledRun)
    assert not missing, missing
    for name in _public(Run):
        real = getattr(Run, name)
        if callable(real) and not isinstance(real, property):
            params = list(inspect.signature(real).parameters)
            assert list(inspect.signature(getattr(DisabledRun, name)).parameters) == params, name


def test_every_call_is_a_noop(tmp_path):
    src = tmp_path / "w.bin"
    src.write_bytes(b"x")
    run = DisabledRun(project="p", name="n", config={"lr": 0.1}, tags=["a"], dir=tmp_path / "s")
    assert len(run.id) == 32 and all(c in "0123456789abcdef" for c in run.id)
    with run:
        run.log({"loss": 1.0})
        run.log({"loss": 0.5}, step=10)
        run.log_metric("a", 1, step=2, timestamp=5)
        run.log_metrics({"b": 2})
        run.log_param("epochs", 3)
        run.log_params({"bs": 32})
        run.config["opt"] = "adam"
        run.config.update({"wd": 0.0})
        run.set_tag("k", 7)
        run.set_tags({"t": "v"})
        run.summary["best"] = 0.9
        run.log_text("t", "a.txt")
        run.log_dict({"a": 1}, "a.json")
        run.log_event("e", {"x": 1})
        run.log_features(["f"])
        run.log_artifact(src)
        run.log_model(object(), "m")
        assert run.flush() is True
    assert run.status == "FINISHED"
    assert run.step == 11
    assert dict(run.config) == {"lr": 0.1, "epochs": 3, "bs": 32, "opt": "adam", "wd": 0.0}
    assert run.config.lr == 0.1 and run.summary["best"] == 0.9
    assert run.tags == {"a": "", "k": "7", "t": "v"}
    assert not (tmp_path / "s").exists()  # nothing written anywhere
    df = run.data()
    assert list(df.columns) == DATA_COLUMNS and len(df) == 0
    assert str(df["step"].dtype) == "Int64" and "datetime64" in str(df["dt"].dtype)


def test_exception_in_with_marks_failed():
    run = DisabledRun()
    with pytest.raises(ZeroDivisionError):
        with run:
            1 / 0
    assert run.status == "FAILED"


def test_disabled_init_is_the_current_run(spool):
    run = disabled_init(project="p")
    assert bridge.run() is run
    bridge.log({"loss": 1.0})  # module-level calls go to the disabled run
    bridge.log_param("a", 1)
    bridge.finish()
    assert bridge.run() is None and run.status == "FINISHED"
    assert not spool.exists()


@pytest.mark.skipif("mode" not in inspect.signature(bridge.init).parameters,
                    reason="bridge.init(mode=...) is not wired in yet")
def test_init_mode_disabled(spool, monkeypatch):
    run = bridge.init(project="p", mode="disabled", config={"lr": 1})
    assert isinstance(run, DisabledRun) and run.config["lr"] == 1
    run.log({"a": 1.0})
    run.finish()
    monkeypatch.setenv("BRIDGE_MODE", "disabled")
    assert isinstance(bridge.init(project="p"), DisabledRun)
    bridge.finish()
    assert not spool.exists()
