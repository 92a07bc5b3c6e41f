"""The W&B adapter's translation and the importer's decoding agree, without the W&B SDK.

The adapter writes one session into a recording stand-in for the ``wandb`` module; the
importer's decoders read that session back. Both sides take their names from
``bridge.adapters.wandb.names``: renaming the step key, a file name, the tag format or a
status code on one side only fails here.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.adapters.base import Event, Outcome, RunInfo
from bridge.adapters.wandb import adapter as adapter_module
from bridge.adapters.wandb import importer, names, plan

T0 = 1_700_000_000_000
RUN_ID = "ab" * 16


class FakeRun:
    """What ``wandb.init`` returns, recording every call the adapter makes."""

    def __init__(self, root: Path, **init: Any) -> None:
        self.init = init
        self.dir = str(root / "files")
        self.defined: list[tuple[str, str | None]] = []
        self.rows: list[dict[str, Any]] = []
        self.saved: list[str] = []
        self.summary: dict[str, Any] = {}
        self.exit_code: int | None = None
        self.settings = SimpleNamespace(sync_dir=str(root), sync_file=str(root / "x.wandb"))

    def define_metric(self, name: str, step_metric: str | None = None) -> None:
        self.defined.append((name, step_metric))

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))

    def save(self, path: str, base_path: str, policy: str) -> None:
        self.saved.append(Path(path).relative_to(base_path).as_posix())

    def log_artifact(self, artifact: Any) -> None:
        raise AssertionError("no artifact in this test")

    def finish(self, exit_code: int) -> None:
        self.exit_code = exit_code


class FakeWandb:
    """The part of the ``wandb`` module the adapter uses; ``sessions`` are its runs."""

    run = None

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sessions: list[FakeRun] = []
        self.settings: list[dict[str, Any]] = []

    def Settings(self, **kw: Any) -> dict[str, Any]:  # noqa: N802 - wandb's name
        self.settings.append(kw)
        return kw

    def init(self, **kw: Any) -> FakeRun:
        self.sessions.append(FakeRun(self.root / f"s{len(self.sessions)}", **kw))
        return self.sessions[-1]

    def teardown(self) -> None:
        pass


def ev(seq: int, kind: str, key: str | None, *, step: int | None = None, ts: int = T0,
       value: float | None = None, payload: Any = None) -> Event:
    return Event("f0", seq, RUN_ID, kind, key, step, ts, value, payload, node="f0")


BATCH = [
    ev(1, "metric", "loss", step=0, ts=T0 + 1, value=2.5),
    ev(2, "metric", "acc", step=0, ts=T0 + 1, value=0.1),
    ev(3, "metric", "loss", step=5, ts=T0 + 1001, value=1.5),
    ev(4, "metric", "loss", step=3, ts=T0 + 2002, value=float("nan")),
    ev(5, "tag", "baseline", payload=""),
    ev(6, "tag", "dataset", payload="imagenet"),
    ev(7, "tag", "path", payload="/very/long/" + "x" * 80),
    ev(8, "system", "system", payload={"python": "3.11"}),
    ev(9, "event", "epoch_end", step=1, ts=T0 + 5, payload={"epoch": 1}),
    ev(10, "text", "logs/readme.txt", payload="hello"),
]


@pytest.fixture
def written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeWandb, RunInfo]:
    """One closing session of a FAILED run, written through the fake SDK."""
    fake = FakeWandb(tmp_path)
    monkeypatch.setattr(adapter_module, "require", lambda *a: fake)
    a = adapter_module.WandbAdapter(mode="online", dir=str(tmp_path / "out"), project="p")
    run = RunInfo(run_id=RUN_ID, project="p", status="FAILED", state={})
    a.open_run(run)
    res = a.export(run, BATCH)
    assert res.outcome is Outcome.SUCCESS and not res.rejected
    a.shutdown()
    assert len(fake.sessions) == 1
    return fake, run


def bridge_written(session: FakeRun) -> bool:
    """The importer's test for a run bridge wrote: ``STEP_KEY`` is a defined metric."""
    return any(name == names.STEP_KEY for name, _ in session.defined)


def test_rows_use_the_step_key_and_decode_to_the_same_points(written) -> None:
    fake, _ = written
    (session,) = fake.sessions
    assert bridge_written(session)
    assert ("*", names.STEP_KEY) in session.defined
    series = importer._LastValues()
    flat: list = []
    others = [e for row in session.rows for e in importer._row_events(row, True, 0, series, flat)]
    assert not [e for e in others if e.kind == "metric"]  # every point went to ``flat``
    it = iter(flat)
    got = list(zip(it, it, it, it))  # (key, step, ts_ms, value) each
    want = [(e.key, e.step, e.ts_ms, e.value) for e in BATCH if e.kind == "metric"]
    assert len(got) == len(want)
    for g, w in zip(sorted(got, key=str), sorted(want, key=str)):
        assert g[:3] == w[:3]
        assert g[3] == w[3] or (math.isnan(g[3]) and math.isnan(w[3]))
    # what the adapter reads back to skip a replayed batch is the same points
    points = [p for row in session.rows for p in plan.points(row)]
    assert sorted((k, s, t) for k, s, t, _ in points) == sorted(g[:3] for g in got)


def test_exit_code_decodes_to_the_run_status(written) -> None:
    fake, run = written
    assert fake.sessions[0].exit_code == names.exit_code_of(run.status)
    assert names.status_of_exit(fake.sessions[0].exit_code) == run.status
    for status in names.EXIT_CODES:
        assert names.status_of_exit(names.exit_code_of(status)) == status


def test_tags_become_labels_or_config_and_decode_back(written) -> None:
    fake, _ = written
    (session,) = fake.sessions
    labels = session.init["tags"]
    assert all(len(label) <= names.MAX_TAG_LENGTH for label in labels)
    tags = {e.key: e.payload for e in importer._tags(labels, bridge_written(session), T0)}
    assert tags == {"baseline": "", "dataset": "imagenet"}
    long_tags = session.init["config"][names.LONG_TAGS_CONFIG]
    assert long_tags == {"path": "/very/long/" + "x" * 80}


def test_bridge_files_decode_to_system_facts_events_and_text(written) -> None:
    fake, _ = written
    (session,) = fake.sessions
    assert names.SYSTEM_FILE in session.saved
    (events_name,) = [rel for rel in session.saved if names.is_events_file(rel)]
    assert events_name == names.events_file("f0", 9)
    decoded: dict[str, list[Any]] = {}
    for rel in session.saved:
        for e in importer._bridge_file(rel, Path(session.dir) / rel, T0):
            decoded.setdefault(e.kind, []).append((e.key, e.step, e.ts_ms, e.payload))
    assert decoded["system"] == [("system", None, T0, {"python": "3.11"})]
    assert decoded["event"] == [("epoch_end", 1, T0 + 5, {"epoch": 1})]
    assert decoded["text"] == [("logs/readme.txt", None, T0, "hello")]


def test_quiet_settings_are_run_settings_not_environment(written) -> None:
    fake, _ = written
    (settings,) = fake.settings
    assert settings["silent"] and settings["disable_code"] and settings["disable_git"]


def test_readback_source_reads_the_adapters_dir(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    location, options = names.readback_source(spool, "p", RUN_ID, {"name": "wandb"})
    assert Path(location) == names.default_dir(spool) == spool / names.DEFAULT_DIR_NAME
    assert options == {}
    location, _ = names.readback_source(spool, "p", RUN_ID, {"dir": str(tmp_path / "w")})
    assert Path(location) == tmp_path / "w"


def test_session_dirs_and_log_files_are_named_alike_on_both_sides() -> None:
    assert names.session_key(f"offline-run-20250101_120000-{RUN_ID}-2") == (
        "20250101_120000", RUN_ID, 2)
    assert names.session_key(names.discarded_name(f"offline-run-20250101_120000-{RUN_ID}")) is None
    assert names.log_file_name(RUN_ID) == f"run-{RUN_ID}.wandb"
    assert names.remote_run_id(RUN_ID) == RUN_ID

