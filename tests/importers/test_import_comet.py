"""The Comet importer on offline archives written by the real comet_ml SDK, on what
bridge's own Comet adapter wrote, and on a hostile archive."""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import pytest

comet_ml = pytest.importorskip("comet_ml")

from bridge.adapters.importing import ImportError_, ImportEvent, bridge_run_id  # noqa: E402
from bridge.adapters.comet.importer import CometImporter  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402

T0 = 1_700_000_000_000
RID = "0123456789abcdef0123456789abcdef"
KEY = "abcdefabcdefabcdefabcdefabcdef12"


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMET_API_KEY", "dummy")
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")
    for var in ("COMET_OFFLINE_DIRECTORY", "COMET_PROJECT_NAME", "COMET_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)


_QUIET = dict(log_code=False, log_graph=False, parse_args=False, display_summary_level=0,
              log_git_metadata=False, log_git_patch=False, log_env_details=False,
              log_env_gpu=False, log_env_host=False, log_env_cpu=False, log_env_network=False,
              log_env_disk=False, auto_output_logging=False, auto_param_logging=False,
              auto_metric_logging=False)


def _native(directory: Path, phase: int) -> None:
    cfg = comet_ml.ExperimentConfig(offline_directory=str(directory), **_QUIET)
    exp = comet_ml.start(project_name="native", experiment_key=KEY, mode="get_or_create",
                         online=False, experiment_config=cfg)
    if phase == 1:
        exp.set_name("native run")
        exp.log_parameters({"lr": 0.1, "opt": {"name": "adam"}})
        for i in range(3):
            exp.log_metric("loss", 1.0 / (i + 1), step=i, epoch=0)
        exp.log_metric("bad", float("nan"), step=0)
        exp.log_other("dataset", "mnist")
        exp.add_tags(["t1"])
        exp.log_text("a sample", step=1, metadata={"m": 1})
        exp.log_asset_data(b"\x00bytes", name="dir/blob.bin")
        exp.log_system_info("host", "node7")
    else:
        for i in range(3, 5):
            exp.log_metric("loss", 1.0 / (i + 1), step=i)
        exp.add_tags(["t2"])
        exp.log_parameter("lr", 0.05)
    exp.end()


CONTENT: dict[tuple[str | None, str], bytes] = {}


def _events(imp: CometImporter) -> tuple[Any, list[ImportEvent]]:
    """A run's events; artifact bytes are read while the generator runs (its temporary
    files go away when it finishes) into ``CONTENT[(artifact, path)]``."""
    (run,) = list(imp.runs())
    events = []
    for e in imp.events(run):
        for rel, local in e.files:
            CONTENT[(e.key, rel)] = local.read_bytes()
        events.append(e)
    return run, events


def _files(e: ImportEvent) -> list[tuple[str, bytes]]:
    return sorted((rel, CONTENT[(e.key, rel)]) for rel, _ in e.files)


def _by(events: list[ImportEvent], kind: str) -> dict[str | None, Any]:
    return {e.key: e.payload for e in events if e.kind == kind}


def _metrics(events: list[ImportEvent]) -> dict[str, list[tuple[Any, int, float]]]:
    out: dict[str, list[tuple[Any, int, float]]] = {}
    for e in events:
        if e.kind == "metric":
            out.setdefault(e.key, []).append((e.step, e.ts_ms, e.value))
    return out


def test_archives_written_by_comet_ml(tmp_path: Path) -> None:
    _native(tmp_path, 1)
    _native(tmp_path, 2)
    assert len(list(tmp_path.glob(f"{KEY}-*.zip"))) == 2
    run, events = _events(CometImporter(tmp_path))
    assert run.source_id == KEY == run.run_id  # a 32-hex key stays the bridge id
    assert (run.project, run.name, run.status) == ("native", "native run", "FINISHED")
    assert run.start_ms > 0 and run.end_ms >= run.start_ms
    m = _metrics(events)
    assert [s for s, _, _ in m["loss"]] == [0, 1, 2, 3, 4]
    assert [v for _, _, v in m["loss"]] == pytest.approx([1 / (i + 1) for i in range(5)])
    assert all(ts >= run.start_ms for _, ts, _ in m["loss"])
    assert math.isnan(m["bad"][0][2])
    assert "process duration" not in m
    assert _by(events, "param") == {"lr": 0.05, "opt": {"name": "adam"}}  # later archive wins
    assert _by(events, "summary") == {"dataset": "mnist"}
    assert _by(events, "tag") == {"t1": "", "t2": ""}
    assert _by(events, "system") == {"system": {"host": "node7"}}
    (text,) = [e for e in events if e.kind == "media"]  # a text sample: a text series point
    assert (text.key, text.step, text.payload["type"], text.payload["data"]) == (
        "text", 1, "text", {"text": "a sample"})
    assert text.payload["source"]["descriptor"]["metadata"] == {"m": 1}
    (art,) = [e for e in events if e.kind == "artifact"]
    assert art.key == "dir/blob.bin" and _files(art) == [("dir/blob.bin", b"\x00bytes")]


def test_through_the_sink(tmp_path: Path) -> None:
    _native(tmp_path / "arch", 1)
    (res,) = import_runs(CometImporter(tmp_path / "arch"), tmp_path / "spool")
    assert res.points == {"loss": 3, "bad": 1} and res.counts["artifact"] == 1
    assert import_runs(CometImporter(tmp_path / "arch"), tmp_path / "spool")[0].skipped


def _hostile(path: Path) -> None:
    msgs = [
        {"type": "metric_msg", "payload": {"local_timestamp": T0, "metric": {
            "metricName": "m", "metricValue": 1.5, "step": 0}}},
        {"type": "file_upload", "payload": {"file_path": "a", "upload_type": "asset",
                                            "additional_params": {"fileName": "../../evil.txt"}}},
        {"type": "file_upload", "payload": {"file_path": "a", "upload_type": "asset",
                                            "additional_params": {"fileName": "/tmp/evil.txt"}}},
        {"type": "file_upload", "payload": {"file_path": "../../a", "upload_type": "asset",
                                            "additional_params": {"fileName": "ok.txt"}}},
    ]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("experiment.json", json.dumps({"offline_id": "hostile1", "project_name": "p",
                                                   "start_time": T0, "tags": []}))
        zf.writestr("messages.json", "\n".join(json.dumps(m) for m in msgs))
        zf.writestr("a", "evil content")
        zf.writestr("../../a", "member with a climbing name")


def test_hostile_archive_never_writes_outside(tmp_path: Path) -> None:
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    _hostile(work / "hostile1-x.zip")
    imp = CometImporter(work / "hostile1-x.zip")
    (res,) = import_runs(imp, work / "spool")
    assert res.source_id == "hostile1" and res.run_id == bridge_run_id("comet", "hostile1")
    assert res.points == {"m": 1}
    assert res.counts.get("artifact") == 1  # only ok.txt, read from its member, not a path
    assert len(imp.warnings) == 2 and all("refused" in w for w in imp.warnings)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "a").exists()
    assert not Path("/tmp/evil.txt").exists() or Path("/tmp/evil.txt").read_text() != "evil content"


def test_bad_location(tmp_path: Path) -> None:
    with pytest.raises(ImportError_):
        CometImporter(tmp_path / "missing")
    with pytest.raises(ImportError_):
        CometImporter("https://www.comet.com/api/rest/v2")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    imp = CometImporter(tmp_path)
    assert list(imp.runs()) == [] and len(imp.warnings) == 1


# -- bridge -> comet adapter (offline) -> import -------------------------------------


def _blob(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (root / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha[:2] / sha).write_bytes(data)
    return sha


def test_bridge_written_run_round_trips(tmp_path: Path) -> None:
    from bridge.adapters.base import Event, RunInfo
    from bridge.adapters.comet import CometAdapter

    blobs = tmp_path / "blobs"
    sha_a, sha_b = _blob(blobs, b"A"), _blob(blobs, b"BB")
    seq = iter(range(1, 10_000))

    def ev(kind: str, key: str | None, ts: int, **kw: Any) -> Event:
        return Event("f0", next(seq), RID, kind, key, kw.pop("step", None), ts, **kw)

    batch1 = [ev("metric", "loss", T0 + i, step=s, value=v)
              for i, (s, v) in enumerate([(0, 1.0), (2, 0.5), (1, float("-inf"))])]
    batch1 += [ev("param", "opt", T0, payload={"name": "adam", "lr": 0.1}),
               ev("param", "epochs", T0, payload=3),
               ev("tag", "baseline", T0, payload=""),
               ev("summary", "best", T0, payload={"loss": 0.5}),
               ev("text", "readme.txt", T0, payload="hello", step=1),
               ev("dict", "cfg.json", T0, payload={"a": 1}),
               ev("system", "system", T0, payload={"hostname": "h1", "cpus": 8}),
               ev("event", "checkpoint", T0 + 3, step=2, payload={"path": "x"})]
    batch2 = [ev("metric", "acc", T0 + 50, step=7, value=0.9),
              ev("artifact", "model", T0, payload={
                  "name": "model", "type": "model", "is_dir": False, "source": "t",
                  "files": [{"path": "model.bin", "sha256": sha_a, "size": 1}]}),
              ev("artifact", "data", T0, payload={
                  "name": "data", "type": "dataset", "is_dir": True, "source": "t",
                  "files": [{"path": "x/a.bin", "sha256": sha_a, "size": 1},
                            {"path": "b.bin", "sha256": sha_b, "size": 2}]})]
    adapter = CometAdapter(mode="offline", offline_directory=str(tmp_path / "comet"),
                           spool_dir=str(tmp_path))
    info = RunInfo(run_id=RID, project="vision", name="bridged", notes="the notes", group="g",
                   blob_root=blobs, start_ms=T0)
    adapter.open_run(info)
    assert adapter.export(info, batch1).outcome.value == "success"
    assert adapter.export(info, batch2).outcome.value == "success"
    adapter.close_run(info, "FAILED", T0 + 999)
    adapter.shutdown()

    run, events = _events(CometImporter(tmp_path / "comet"))
    assert run.source_id == RID == run.run_id
    assert (run.project, run.name, run.notes, run.group) == ("vision", "bridged", "the notes", "g")
    assert (run.start_ms, run.status) == (T0, "FAILED")
    sent: dict[str, list] = {}
    for e in batch1 + batch2:
        if e.kind == "metric":
            sent.setdefault(e.key, []).append((e.step, e.ts_ms, e.value))
    assert _metrics(events) == sent
    assert _by(events, "param") == {"opt": {"name": "adam", "lr": 0.1}, "epochs": 3}
    assert _by(events, "tag") == {"baseline": ""}
    assert _by(events, "summary") == {"best": {"loss": 0.5}}
    assert _by(events, "text") == {"readme.txt": "hello"}
    assert _by(events, "dict") == {"cfg.json": {"a": 1}}
    assert _by(events, "system") == {"system": {"hostname": "h1", "cpus": 8}}
    (cp,) = [e for e in events if e.kind == "event"]
    assert (cp.key, cp.ts_ms, cp.step, cp.payload) == ("checkpoint", T0 + 3, 2, {"path": "x"})
    arts = {e.key: e for e in events if e.kind == "artifact"}
    assert arts["model"].artifact_type == "model"
    assert _files(arts["model"]) == [("model.bin", b"A")]
    assert arts["data"].artifact_type == "dataset"
    assert _files(arts["data"]) == [("b.bin", b"BB"), ("x/a.bin", b"A")]
