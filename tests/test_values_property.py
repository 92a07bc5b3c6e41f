"""Property tests: any key and value either round-trips faithfully or is refused with a
counted warning; tracking never raises into the training loop."""

from __future__ import annotations

import math
import os
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bridge
from bridge.spool.reader import iter_events, list_runs

EXAMPLES = int(os.environ.get("BRIDGE_TEST_FUZZ", "300"))
# Each case starts and finishes a run (about 0.1 s): the long run needs a longer limit.
LIMIT_S = max(300, int(EXAMPLES * 0.3))

keys = st.one_of(st.text(max_size=300), st.integers(), st.none(), st.binary(max_size=5))
json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.integers(),
              st.text(max_size=50)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20,
)
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**1100), 2**1100),
                   st.booleans(), st.text(max_size=20), st.none(), st.lists(st.floats(), max_size=3))


@pytest.mark.timeout(LIMIT_S)
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(st.dictionaries(keys, values, max_size=4), min_size=1, max_size=5),
       params=st.dictionaries(keys, json_like, max_size=4))
def test_fuzzed_inputs_are_stored_or_counted(tmp_path_factory, rows, params):
    spool = tmp_path_factory.mktemp("fuzz")
    run = bridge.init(project="fuzz", dir=spool, sync="offline")
    expected_metrics = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step, row in enumerate(rows):
            run.log(row, step=step)
            for k, v in row.items():
                ok_key = isinstance(k, str) and k.strip() and len(k) <= 250 and "\x00" not in k
                ok_val = isinstance(v, (int, float)) and (not isinstance(v, int) or abs(v) < 2**1024)
                if ok_key and ok_val:
                    expected_metrics.append((k, step, float(v)))
        run.log_params(params)
    run.finish()
    rec = list_runs(spool)[0]
    evs = list(iter_events(rec.files, run.id))
    got = [(e.key, e.step, e.value) for e in evs if e.kind == "metric"]
    assert len(got) == len(expected_metrics)
    for (k1, s1, v1), (k2, s2, v2) in zip(sorted(got, key=repr), sorted(expected_metrics, key=repr)):
        assert (k1, s1) == (k2, s2)
        assert (math.isnan(v1) and math.isnan(v2)) or v1 == v2
    refused_metrics = sum(len(r) for r in rows) - len(expected_metrics)
    stored_params = [e for e in evs if e.kind == "param"]
    refused_params = len(params) - len(stored_params)
    # every refusal is a warning, counted on the run (normalized params warn too)
    assert rec.warnings == len(caught) >= refused_metrics + refused_params
