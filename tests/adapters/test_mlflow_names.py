"""MLflow's names round-trip: what the adapter writes, the importer reads back unchanged.

No MLflow SDK and no server: the adapter's translation runs with its REST client (never
called), the importer's decoding runs on a run object shaped like ``MlflowClient``'s. Both
sides take their names from ``bridge.adapters.mlflow.names``, so renaming a tag, a file or
the summary encoding on one side only fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.adapters.base import Event, RunInfo
from bridge.adapters.mlflow import MlflowAdapter, names
from bridge.adapters.mlflow.importer import MlflowImporter, _logged_events
from bridge.adapters.importing import SourceRun

T0 = 1_700_000_000_000
RUN_ID = "0123456789abcdef0123456789abcdef"
SUMMARIES: dict[str, Any] = {
    "acc": 0.93, "best_epoch": 7, "done": True, "nothing": None, "label": "resnet",
    "numeric_text": "42", "nested": {"a": [1, 2.5, "x"], "b": {"c": None}}, "list": [1, 2],
    "unicode": "naïve ✓",
}  # fmt: skip


def event(seq: int, kind: str, key: str | None, payload: Any = None, *,
          step: int | None = None, value: float | None = None, node: str = "") -> Event:
    return Event("f1", seq, RUN_ID, kind, key, step, T0 + seq, value=value, payload=payload,
                 node=node)


@pytest.fixture
def adapter(tmp_path: Path) -> MlflowAdapter:
    # An http URI selects the REST client: nothing is imported, nothing is sent here.
    return MlflowAdapter(tracking_uri="http://127.0.0.1:9", spool_dir=str(tmp_path))


def translated(adapter: MlflowAdapter, batch: list[Event]) -> tuple[dict[str, str], list[Any]]:
    run = RunInfo(run_id=RUN_ID, project="p")
    rejected: dict[tuple[str, int], str] = {}
    items, ops = adapter._translate(run, batch, rejected)
    assert not rejected
    tags = {i.key: i.value for i in items if i.kind == "tag"}
    return tags, ops


def imported(tags: dict[str, str], params: dict[str, str] | None = None) -> list[Any]:
    """The importer's events for an MLflow run holding these tags (no artifacts)."""
    importer = MlflowImporter.__new__(MlflowImporter)  # no MlflowClient: decoding only
    importer.artifacts = False
    mrun = SimpleNamespace(data=SimpleNamespace(params=params or {}, tags=tags, metrics={}))
    src = SourceRun(source="mlflow", source_id="r", project="p", name=None, notes=None,
                    group=None, start_ms=T0, end_ms=None, status="FINISHED", parent_id=None,
                    handle=mrun)
    return list(importer.events(src))


def test_summaries_round_trip_through_tags(adapter: MlflowAdapter) -> None:
    batch = [event(n, "summary", k, v) for n, (k, v) in enumerate(SUMMARIES.items(), 1)]
    tags, _ = translated(adapter, batch)
    assert set(tags) == {names.summary_tag(k) for k in SUMMARIES}
    back = {e.key: e.payload for e in imported(tags) if e.kind == "summary"}
    assert back == SUMMARIES | {"numeric_text": 42}  # a string that is JSON reads as JSON


@pytest.mark.parametrize("value", [v for v in SUMMARIES.values() if v != "42"])
def test_summary_encoding_and_decoding_are_inverse(value: Any) -> None:
    text = names.encode_summary(value)
    assert isinstance(text, str)
    assert names.decode_summary(text) == value
    if not isinstance(value, str):
        assert text == json.dumps(value, sort_keys=True)  # what MLflow's UI shows


def test_summary_tag_and_key_are_inverse() -> None:
    for key in ("acc", "a.b", "x/y", "summary.again"):
        assert names.summary_key(names.summary_tag(key)) == key
    assert names.summary_key(names.SUMMARY_PREFIX) is None  # the bare prefix is a tag
    assert names.summary_key("acc") is None


def test_notes_group_and_tags_read_back_as_they_were_written(adapter: MlflowAdapter) -> None:
    tags, _ = translated(adapter, [event(1, "note", None, "first try"),
                                   event(2, "tag", "team", "vision")])
    assert tags == {names.NOTE_TAG: "first try", "team": "vision"}
    events = imported({**tags, names.GROUP_TAG: "sweep"})
    # Notes and group travel as the run's own fields, never as tags.
    assert [(e.kind, e.key, e.payload) for e in events] == [("tag", "team", "vision")]


def test_run_level_tags_are_the_importers(adapter: MlflowAdapter) -> None:
    mrun = SimpleNamespace(
        info=SimpleNamespace(run_id="r", run_name=None, start_time=T0, end_time=None,
                             status="SCHEDULED"),
        data=SimpleNamespace(tags={names.NOTE_TAG: "n", names.GROUP_TAG: "g",
                                   names.MLFLOW_PARENT_TAG: "parent",
                                   names.RUN_NAME_TAG: "named"}))
    importer = MlflowImporter.__new__(MlflowImporter)
    src = importer._source_run("exp", mrun)
    assert (src.notes, src.group, src.parent_id, src.name) == ("n", "g", "parent", "named")
    assert src.status == names.import_status("SCHEDULED") == "RUNNING"
    assert all(names.import_status(s) == s for s in names.RUN_STATUSES if s != "SCHEDULED")


def test_system_facts_and_long_values_use_the_named_files(adapter: MlflowAdapter) -> None:
    tags, ops = translated(adapter, [event(1, "system", None, {"gpu": "A100", "n": 2}, node="w0"),
                                     event(2, "system", None, {"cpu": 8})])
    assert [op.path for op in ops] == [names.system_file("w0"), names.system_file(None)]
    assert names.system_file("w0") == f"{names.ARTIFACT_FOLDER}/system/w0.json"
    assert tags == {names.system_tag("gpu"): "A100", names.system_tag("n"): "2",
                    names.system_tag("cpu"): "8"}
    long = "x" * 7000
    items, _ = adapter._translate(RunInfo(run_id=RUN_ID, project="p"),
                                  [event(3, "param", "prompt", long)], {})
    kept = list(adapter._long_values(items, {}))
    assert [op.path for op in kept] == [names.long_value_file("param", "prompt"),
                                        names.truncated_tag("param", "prompt")]
    assert kept[0].payload == long


def test_logged_events_round_trip_through_the_events_file(adapter: MlflowAdapter,
                                                          tmp_path: Path) -> None:
    batch = [event(1, "event", "epoch_end", {"loss": 0.5}, step=3),
             event(2, "event", "alert", "disk almost full")]
    _, ops = translated(adapter, batch)
    assert [op.path for op in ops] == [names.EVENTS_FILE]
    adapter.client = SimpleNamespace(list_artifacts=lambda run, path: [])  # nothing stored yet
    text = adapter._merged_events("remote", ops[0].payload, tmp_path / "dl")
    stored = tmp_path / "events.jsonl"
    stored.write_text(text, encoding="utf-8")
    back = [(e.kind, e.key, e.ts_ms, e.step, e.payload) for e in _logged_events(stored)]
    assert back == [("event", e.key, e.ts_ms, e.step, e.payload) for e in batch]


def test_readback_source_finds_the_run_the_adapter_wrote(tmp_path: Path) -> None:
    location, options = names.readback_source(tmp_path, "proj", RUN_ID, {})
    # The adapter's default store (its tracking_uri is checked in test_mlflow_env.py).
    assert location == names.embedded_tracking_uri(tmp_path)
    assert location == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert options == {"experiments": ["proj"], "filter": names.run_filter(RUN_ID)}
    assert names.RUN_ID_TAG in options["filter"] and RUN_ID in options["filter"]
    location, options = names.readback_source(
        tmp_path, "proj", RUN_ID, {"tracking_uri": "http://h:5000", "experiment": "e"})
    assert (location, options["experiments"]) == ("http://h:5000", ["e"])


def test_the_names_module_needs_no_sdk() -> None:
    code = ("import sys, bridge.adapters.mlflow.names, bridge.adapters.mlflow.importer, "
            "bridge.compat.mlflow; assert 'mlflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
