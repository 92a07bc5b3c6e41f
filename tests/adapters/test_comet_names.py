"""Comet's names, round trip without the Comet SDK: what the adapter writes, the importer and
the archive reader read back, through ``bridge.adapters.comet.names``.

A stand-in for comet_ml (``_FakeComet``) lays out offline archives the way comet_ml does
(``experiment.json``, ``messages.json``, uploaded members, whatever the adapter put in the
experiment's temporary directory). A name renamed on one side only (a ledger field, a
``bridge_*`` other, an asset metadata key) makes the import lose what it stood for.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import uuid
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import bridge.adapters.comet.adapter as adapter_mod
from bridge.adapters.base import Event, Outcome, RunInfo
from bridge.adapters.comet import CometAdapter, names
from bridge.adapters.comet.importer import CometImporter
from bridge.adapters.comet.offline import find_archives, read_head
from bridge.adapters.tensorboard import names as tb_names

RUN_ID = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000


# --- a stand-in for comet_ml's offline experiment ----------------------------------------


class _FakeExperiment:
    """Keeps what it is given as comet_ml's offline messages and zips them at ``end()``."""

    def __init__(self, key: str, project: str, directory: Path) -> None:
        self.key, self.project, self.directory = key, project, directory
        self.tmpdir = tempfile.mkdtemp(prefix="fake-comet-")
        self.curr_step: int | None = None
        self.start_time: int | None = None
        self.messages: list[dict[str, Any]] = []
        self.members: dict[str, bytes] = {}
        self.tags: list[str] = []
        self._log_metric = lambda *a, **k: None  # what adapter._hush wraps

    def _msg(self, kind: str, payload: dict[str, Any]) -> None:
        self.messages.append({"type": kind, "payload": payload})

    def set_name(self, name: str) -> None:
        self.log_other("Name", name)

    def log_other(self, key: str, value: Any) -> None:
        self._msg("log_other", {"key": key, "value": value})

    def log_parameter(self, name: str, value: Any) -> None:
        self._msg("parameter_msg", {"param": {"paramName": name, "paramValue": value,
                                              "source": "manual"}})

    def log_parameters(self, params: dict[str, Any]) -> None:
        def flat(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    flat(f"{prefix}|{k}" if prefix else str(k), v)
            else:
                self.log_parameter(prefix, value)

        flat("", params)
        self.log_other("hasNestedParams", True)

    def add_tags(self, tags: list[str]) -> None:
        self.tags.extend(tags)

    def log_system_info(self, key: str, value: Any) -> None:
        self._msg("system_info", {"system_info": {"key": key, "value": value}})

    def log_metric(self, name: str, value: float, epoch: int | None = None) -> None:
        self._msg("metric_msg", {"metric": {"metricName": name, "metricValue": value,
                                            "step": self.curr_step, "epoch": epoch},
                                 "local_timestamp": T0})

    def _upload(self, data: bytes, file_name: str, upload_type: str, metadata: Any,
                extra: dict[str, Any] | None = None) -> dict[str, str]:
        member = f"assets/{len(self.members)}"
        self.members[member] = data
        self._msg("file_upload", {
            "file_path": member, "upload_type": upload_type, "metadata": metadata or {},
            "additional_params": {"fileName": file_name, "step": self.curr_step, **(extra or {})},
            "local_timestamp": T0})
        return {"web": member}

    def log_asset_data(self, data: bytes, name: str, metadata: Any = None) -> dict[str, str]:
        return self._upload(data, name, "asset", metadata)

    def log_text(self, text: str, metadata: Any = None) -> dict[str, str]:
        return self._upload(text.encode("utf-8"), "text-sample", "text-sample", metadata)

    def log_asset(self, path: str, file_name: str, metadata: Any = None) -> dict[str, str]:
        return self._upload(Path(path).read_bytes(), file_name, "asset", metadata)

    def log_model(self, name: str, path: str, file_name: str, metadata: Any = None) -> dict[str, str]:
        return self._upload(Path(path).read_bytes(), file_name, "model-element", metadata,
                            {"groupingName": name})

    def end(self) -> None:
        meta = {"offline_id": self.key, "project_name": self.project, "tags": self.tags,
                "start_time": self.start_time or T0, "stop_time": T0 + 1000}
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self.key}-{uuid.uuid4().hex[:8]}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("experiment.json", json.dumps(meta))
            zf.writestr("messages.json", "\n".join(json.dumps(m) for m in self.messages))
            for member, data in self.members.items():
                zf.writestr(member, data)
            for extra in Path(self.tmpdir).iterdir():  # comet_ml zips its whole tmpdir
                zf.write(extra, extra.name)


class _FakeComet:
    """The parts of the ``comet_ml`` module the adapter calls, offline only."""

    def __init__(self) -> None:
        self.messages = SimpleNamespace()  # no MetricMessage: the adapter uses log_metric
        self.config = SimpleNamespace(set_global_experiment=lambda exp: None)

    def get_global_experiment(self) -> None:
        return None

    def ExperimentConfig(self, **cfg: Any) -> dict[str, Any]:  # noqa: N802 - comet_ml's name
        return cfg

    def start(self, *, workspace: Any, project_name: str, experiment_key: str, mode: str,
              online: bool, experiment_config: dict[str, Any]) -> _FakeExperiment:
        assert mode == "get_or_create" and not online
        return _FakeExperiment(experiment_key, project_name,
                               Path(experiment_config["offline_directory"]))


@pytest.fixture
def fake_comet(monkeypatch: pytest.MonkeyPatch) -> _FakeComet:
    fake = _FakeComet()
    monkeypatch.setattr(adapter_mod, "load_comet_ml", lambda: fake)
    return fake


def _put_blob(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (root / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha[:2] / sha).write_bytes(data)
    return sha


def _batch(tmp_path: Path) -> list[Event]:
    sha = _put_blob(tmp_path / "blobs", b"weights")
    rows: list[tuple[str, str | None, int | None, dict[str, Any]]] = [
        ("metric", "loss", 0, {"value": 0.5}),
        ("metric", "loss", 1, {"value": 0.25}),
        ("param", "lr", None, {"payload": 0.1}),
        ("param", "opt", None, {"payload": {"beta": 0.9}}),
        ("tag", "best", None, {"payload": None}),
        ("tag", "stage", None, {"payload": "eval"}),
        ("summary", "acc", None, {"payload": 0.9}),
        ("summary", "big", None, {"payload": "x" * (names.MAX_OTHER + 1)}),
        ("text", "sample.txt", 1, {"payload": "hello"}),
        ("dict", "cfg.json", 1, {"payload": {"a": 1}}),
        ("event", "epoch_end", 1, {"payload": {"epoch": 1}}),
        ("artifact", "model", None, {"payload": {"name": "model", "type": "model", "files": [
            {"path": "w.bin", "sha256": sha}]}}),
    ]
    return [Event("f0", i, RUN_ID, kind, key, step, T0 + i, **kw)
            for i, (kind, key, step, kw) in enumerate(rows, start=1)]


def _run(tmp_path: Path) -> RunInfo:
    return RunInfo(run_id=RUN_ID, project="vision", name="baseline", group="g1",
                   notes="short notes", status="FAILED", start_ms=T0,
                   blob_root=tmp_path / "blobs")


def _export(tmp_path: Path, batch: list[Event]) -> RunInfo:
    run = _run(tmp_path)
    a = CometAdapter(mode="offline", offline_directory=str(tmp_path / "comet"))
    a.open_run(run)
    result = a.export(run, batch)
    assert result.outcome is Outcome.SUCCESS and not result.rejected, result
    a.close_run(run, run.status, T0 + 1000)  # the export's archive carries the status
    a.shutdown()
    return run


# --- the round trip ------------------------------------------------------------------------


def test_what_the_adapter_writes_the_importer_reads_back(tmp_path: Path, fake_comet: _FakeComet) -> None:
    batch = _batch(tmp_path)
    _export(tmp_path, batch)
    assert len(find_archives(tmp_path / "comet")) == 1  # the status rode in the last archive

    importer = CometImporter(tmp_path / "comet")
    [src] = list(importer.runs())
    # the ledger's run id, the status / group / notes others
    assert (src.source_id, src.status, src.group, src.notes, src.name) == (
        RUN_ID, "FAILED", "g1", "short notes", "baseline")
    events = list(importer.events(src))
    by_kind: dict[str, dict[str, Any]] = {}
    for ev in events:
        by_kind.setdefault(ev.kind, {})[ev.key] = ev
    assert sorted((e.step, e.value) for e in events if e.kind == "metric") == [(0, 0.5), (1, 0.25)]
    assert {k: e.payload for k, e in by_kind["param"].items()} == {"lr": 0.1, "opt": {"beta": 0.9}}
    # bridge's own others are not summaries; a long other came back from its asset
    assert {k: e.payload for k, e in by_kind["summary"].items()} == {
        "stage": "eval", "acc": 0.9, "big": "x" * (names.MAX_OTHER + 1)}
    assert set(by_kind["tag"]) == {"best"}
    assert by_kind["text"]["sample.txt"].payload == "hello"
    assert by_kind["dict"]["cfg.json"].payload == {"a": 1}
    ev = by_kind["event"]["epoch_end"]
    assert (ev.payload, ev.step, ev.ts_ms) == ({"epoch": 1}, 1, T0 + 11)
    art = by_kind["artifact"]["model"]
    assert [rel for rel, _ in art.files] == ["w.bin"] and art.artifact_type == "model"


def test_the_ledger_names_the_exported_events_for_the_reader_and_the_next_sync(
        tmp_path: Path, fake_comet: _FakeComet) -> None:
    batch = _batch(tmp_path)
    _export(tmp_path, batch)
    [path] = find_archives(tmp_path / "comet")
    head = read_head(path)
    assert head.key == RUN_ID and head.ledger is not None
    assert head.ledger[names.LEDGER_RUN_ID] == RUN_ID and head.order[0] == 0
    assert names.ledger_uids(head.ledger) == {ev.uid for ev in batch}

    # A sync killed before its cursor was saved hands the batch over again: the next
    # session recognises it from the ledger and writes nothing twice.
    run = _run(tmp_path)
    a = CometAdapter(mode="offline", offline_directory=str(tmp_path / "comet"))
    a.open_run(run)
    assert a.export(run, batch).outcome is Outcome.SUCCESS
    a.shutdown()
    assert find_archives(tmp_path / "comet") == [path]


def test_ledger_encoding_round_trips() -> None:
    uids = {("a", 1), ("a", 2), ("a", 3), ("a", 7), ("b", 5)}
    ledger = names.make_ledger("r", "k", 4, "id", uids)
    assert ledger[names.LEDGER_EVENTS] == {"a": [[1, 3], [7, 7]], "b": [[5, 5]]}
    assert names.ledger_uids(json.loads(json.dumps(ledger))) == uids
    assert ledger[names.LEDGER_FORMAT_FIELD] == names.LEDGER_FORMAT


def test_readback_source_points_the_importer_at_the_adapters_archives(tmp_path: Path) -> None:
    assert names.readback_source(tmp_path, "vision", RUN_ID, {"name": "comet"}) == (
        str(tmp_path / names.DEFAULT_OFFLINE_DIR), {})
    assert names.readback_source(tmp_path, "vision", RUN_ID,
                                 {"offline_directory": "/data/cm"}) == ("/data/cm", {})


def test_experiment_keys() -> None:
    assert names.experiment_key_for(RUN_ID) == RUN_ID
    key = names.experiment_key_for("run/with spaces")
    assert re.fullmatch(r"[0-9a-f]{40}", key) and key == names.experiment_key_for("run/with spaces")


# --- defined once ------------------------------------------------------------------------

_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("package, module, attrs", [
    ("comet", names, ["LEDGER_NAME", "OTHER_RUN_ID", "OTHER_STATUS", "META_EVENT", "META_KIND",
                      "META_ARTIFACT", "META_ARTIFACT_TYPE", "PROCESS_DURATION"]),
    ("tensorboard", tb_names, ["HPARAMS_START", "LOGDIR_TAG", "SKIPPED_TAG", "EVENT_MARK"]),
])
def test_each_name_is_spelled_out_once(package: str, module: Any, attrs: list[str]) -> None:
    """No module of the vendor package writes these as literals: it imports them."""
    sources = [p for p in (_ROOT / "adapters" / package).glob("*.py") if p.name != "names.py"]
    assert sources
    for attr in attrs:
        literal = json.dumps(getattr(module, attr))
        for path in sources:
            assert literal not in path.read_text(encoding="utf-8"), f"{literal} in {path.name}"
