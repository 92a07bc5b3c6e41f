"""Property tests: any key and value either round-trips faithfully or is refused with a
counted warning; tracking never raises into the training loop, and the agent delivers (or
dead-letters with a reason) whatever was stored.

``BRIDGE_TEST_FUZZ`` sets the number of cases (CI: 300; the long run: 10,000).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bridge
from bridge.adapters import memory
from bridge.agent.sync import Syncer
from bridge.config import AgentSettings
from bridge.spool.reader import iter_events, list_runs

EXAMPLES = int(os.environ.get("BRIDGE_TEST_FUZZ", "300"))
# Each case starts and finishes a run and syncs it (about 0.05-0.1 s here; more under load).
LIMIT_S = max(300, int(EXAMPLES * 0.5))
FAST = AgentSettings(retry_initial=0.001, retry_max=0.01, retry_attempts=2)

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with the dev extra
    np = None
try:
    import torch
except ImportError:
    torch = None

keys = st.one_of(st.text(max_size=300), st.integers(), st.none(), st.binary(max_size=5),
                 st.sampled_from(["a\x00b", " ", "\n", "x" * 250, "x" * 251, "é/ü.∑", "a\u202eb"]))

_scalars = [st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**1100), 2**1100),
            st.booleans(), st.text(max_size=20), st.none(), st.lists(st.floats(), max_size=3),
            st.complex_numbers(max_magnitude=10)]
if np is not None:
    _scalars += [st.floats().map(np.float64), st.floats(width=32).map(np.float32),
                 st.integers(-(2**63), 2**63 - 1).map(np.int64), st.booleans().map(np.bool_),
                 st.floats().map(np.array),  # 0-d array
                 st.lists(st.floats(), min_size=0, max_size=3).map(np.array)]
if torch is not None:
    _scalars += [st.floats(width=32).map(torch.tensor),
                 st.lists(st.floats(width=32), min_size=0, max_size=3).map(torch.tensor)]
values = st.one_of(*_scalars)


def _cyclic(n: int) -> Any:
    d: dict[str, Any] = {"n": n}
    d["self"] = [d]
    return d


def _deep(n: int) -> Any:
    v: Any = "leaf"
    for _ in range(n):
        v = {"k": v}
    return v


json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.integers(),
              st.text(max_size=50)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20,
)
param_values = st.one_of(
    json_like,
    st.integers(0, 200_000).map(lambda n: "x" * n),        # huge strings
    st.integers(0, 50_000).map(lambda n: list(range(n))),  # huge lists
    st.integers(1, 3000).map(_deep),                       # deep nesting, past the recursion limit
    st.integers(0, 3).map(_cyclic),                        # a structure that contains itself
    st.sets(st.integers(), max_size=3),
)


def _expected_float(v: Any) -> float | None:
    """What bridge stores for a metric value, or None if it refuses it (values.to_float)."""
    if type(v) in (int, bool):
        return float(v) if abs(v) < 2**1024 else None
    if type(v) is float:
        return v
    item = getattr(v, "item", None)
    if callable(item):
        numel = getattr(v, "numel", None)
        n = numel() if callable(numel) else getattr(v, "size", None)
        if n != 1:
            return None
        out = item()
        return float(out) if isinstance(out, (int, float)) else None
    return None


@pytest.fixture(autouse=True)
def _clean_memory_store():
    memory.STORE.clear()
    yield
    memory.STORE.clear()


@pytest.mark.timeout(LIMIT_S)
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(rows=st.lists(st.dictionaries(keys, values, max_size=4), min_size=1, max_size=5),
       params=st.dictionaries(keys, param_values, max_size=4))
def test_fuzzed_inputs_are_stored_or_counted(tmp_path_factory, rows, params):
    spool = tmp_path_factory.mktemp("fuzz")
    store = f"fuzz-{spool.name}"
    run = bridge.init(project="fuzz", dir=spool, sync="offline",
                      backends=[{"name": "memory", "store": store}])
    expected_metrics = []
    expected_texts = 0  # a string value is a text point (a media event of type text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step, row in enumerate(rows):
            run.log(row, step=step)  # never raises
            for k, v in row.items():
                ok_key = isinstance(k, str) and k.strip() and len(k) <= 250 and "\x00" not in k
                value = _expected_float(v)
                if ok_key and value is not None:
                    expected_metrics.append((k, step, value))
                elif ok_key and isinstance(v, str):
                    expected_texts += 1
        run.log_params(params)
    run.finish()
    rec = list_runs(spool)[0]
    evs = list(iter_events(rec.files, run.id))
    got = [(e.key, e.step, e.value) for e in evs if e.kind == "metric"]
    assert len(got) == len(expected_metrics)
    for (k1, s1, v1), (k2, s2, v2) in zip(sorted(got, key=repr), sorted(expected_metrics, key=repr)):
        assert (k1, s1) == (k2, s2)
        assert (math.isnan(v1) and math.isnan(v2)) or v1 == v2
    texts = [e for e in evs if e.kind == "media"]
    assert len(texts) == expected_texts
    assert all(e.payload["type"] == "text" for e in texts)
    refused_metrics = sum(len(r) for r in rows) - len(expected_metrics) - expected_texts
    stored_params = [e for e in evs if e.kind == "param"]
    refused_params = len(params) - len(stored_params)
    # every refusal is a warning, counted on the run (normalized params warn too)
    assert rec.warnings == len(caught) >= refused_metrics + refused_params

    # The agent delivers every stored event: nothing pending, nothing failed.
    summary = Syncer(spool, settings=FAST).run_once()
    assert summary.complete, summary
    delivered = memory.STORE[store]["events"][run.id]
    assert sorted(e.uid for e in delivered) == sorted((e.file_id, e.seq) for e in evs)


def test_hostile_params_through_the_mlflow_adapter(tmp_path):
    """The worst stored shapes the fuzz makes, delivered by a real backend's translation."""
    pytest.importorskip("mlflow")
    import mlflow

    run = bridge.init(project="hostile", dir=tmp_path, sync="offline", backends=["mlflow"])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        run.log_params({"deep": _deep(3000), "cyclic": _cyclic(1), "huge": "x" * 200_000,
                        "biglist": list(range(50_000)), "nested": _deep(40), "set": {1, 2}})
        run.log({"t": torch.tensor(0.5) if torch is not None else 0.5, "c": 1j}, step=1)
    run.finish()
    summary = Syncer(tmp_path, settings=FAST).run_once()
    assert summary.complete, summary
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [found] = client.search_runs([client.get_experiment_by_name("hostile").experiment_id])
    params = found.data.params
    assert params["huge"] == "x" * 6000  # MLflow's limit; the full value is an artifact
    assert found.data.tags["bridge.param_truncated.huge"].startswith("200000 characters")
    assert params["nested" + ".k" * 40] == "leaf"
    assert params["set"] == "[1, 2]"
    assert "deep" in params and "cyclic" in params  # stored as their repr, with a warning
    assert [m.value for m in client.get_metric_history(found.info.run_id, "t")] == [0.5]
