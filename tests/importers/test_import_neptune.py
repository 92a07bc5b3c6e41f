"""The Neptune importer on neptune-exporter Parquet, on an offline run written by the
real neptune client, and on what bridge's own Neptune adapter wrote."""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from bridge.adapters.importing import ImportError_, ImportEvent, bridge_run_id  # noqa: E402
from bridge.adapters.neptune.importer import NeptuneImporter, sanitize_path_part  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402

T0 = 1_700_000_000_000
RID = "0123456789abcdef0123456789abcdef"

# neptune-exporter's model.SCHEMA
SCHEMA = pa.schema([
    ("project_id", pa.string()), ("run_id", pa.string()), ("attribute_path", pa.string()),
    ("attribute_type", pa.string()), ("step", pa.decimal128(18, 6)),
    ("timestamp", pa.timestamp("ms", tz="UTC")), ("int_value", pa.int64()),
    ("float_value", pa.float64()), ("string_value", pa.string()), ("bool_value", pa.bool_()),
    ("datetime_value", pa.timestamp("ms", tz="UTC")), ("string_set_value", pa.list_(pa.string())),
    ("file_value", pa.struct([("path", pa.string())])),
    ("histogram_value", pa.struct([("type", pa.string()), ("edges", pa.list_(pa.float64())),
                                   ("values", pa.list_(pa.float64()))])),
])


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _rows(project: str, run: str, rows: list[dict[str, Any]]) -> Any:
    full = []
    for r in rows:
        row = {name: None for name in SCHEMA.names}
        row.update(project_id=project, run_id=run, **r)
        full.append(row)
    return pa.Table.from_pylist(full, schema=SCHEMA)


def _events(imp: NeptuneImporter) -> tuple[Any, list[ImportEvent]]:
    (run,) = list(imp.runs())
    return run, list(imp.events(run))


def _by(events: list[ImportEvent], kind: str) -> dict[str | None, Any]:
    return {e.key: e.payload for e in events if e.kind == kind}


def _metrics(events: list[ImportEvent]) -> dict[str, list[tuple[Any, int, float]]]:
    out: dict[str, list[tuple[Any, int, float]]] = {}
    for e in events:
        if e.kind == "metric":
            out.setdefault(e.key, []).append((e.step, e.ts_ms, e.value))
    return out


# -- neptune-exporter Parquet ----------------------------------------------------------


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """An export in the exporter's layout: data/<project>/<run>_part_<n>.parquet + files/."""
    project, run = "ws/proj", "PROJ-123"
    data = tmp_path / "exports" / "data" / sanitize_path_part(project)
    files = tmp_path / "exports" / "files" / sanitize_path_part(project)
    (files / "PROJ-123" / "files").mkdir(parents=True)
    (files / "PROJ-123" / "files" / "desc.json").write_text('{"rows": 3}')
    data.mkdir(parents=True)
    part0 = [
        dict(attribute_path="sys/name", attribute_type="string", string_value="exported run"),
        dict(attribute_path="sys/description", attribute_type="string", string_value="about"),
        dict(attribute_path="sys/tags", attribute_type="string_set", string_set_value=["b", "a"]),
        dict(attribute_path="sys/creation_time", attribute_type="datetime", datetime_value=_utc(T0)),
        dict(attribute_path="sys/failed", attribute_type="bool", bool_value=True),
        dict(attribute_path="parameters/lr", attribute_type="float", float_value=0.01),
        dict(attribute_path="parameters/opt/name", attribute_type="string", string_value="adam"),
        dict(attribute_path="parameters/opt/layers", attribute_type="int", int_value=4),
        dict(attribute_path="eval/acc", attribute_type="float", float_value=0.9),
        dict(attribute_path="files/desc", attribute_type="file",
             file_value={"path": "PROJ-123/files/desc.json"}),
        dict(attribute_path="files/evil", attribute_type="file",
             file_value={"path": "../../evil.txt"}),
    ]
    part0 += [dict(attribute_path="train/loss", attribute_type="float_series",
                   step=Decimal(s), timestamp=_utc(T0 + i * 100), float_value=1.0 / (i + 1))
              for i, s in enumerate(["0.5", "1.0", "1.5"])]
    part1 = [dict(attribute_path="train/loss", attribute_type="float_series",
                  step=Decimal("2.000000"), timestamp=_utc(T0 + 300), float_value=None),
             dict(attribute_path="logs/out", attribute_type="string_series",
                  step=Decimal(0), timestamp=_utc(T0 + 5), string_value="hello"),
             dict(attribute_path="hist", attribute_type="histogram_series", step=Decimal(0),
                  timestamp=_utc(T0), histogram_value={"type": "linear", "edges": [0, 1],
                                                       "values": [3]})]
    pq.write_table(_rows(project, run, part0), data / "PROJ-123_part_0.parquet")
    pq.write_table(_rows(project, run, part1), data / "PROJ-123_part_1.parquet")
    (tmp_path / "evil.txt").write_text("outside")
    return tmp_path / "exports" / "data"


def test_parquet_export(export: Path) -> None:
    imp = NeptuneImporter(export)
    run, events = _events(imp)
    assert run.source_id == "PROJ-123" and run.run_id == bridge_run_id("neptune", "PROJ-123")
    assert (run.project, run.name, run.notes, run.status) == ("ws/proj", "exported run", "about", "FAILED")
    assert run.start_ms == T0
    assert run.extra_tags == {"bridge.step_multiplier": "10"}
    loss = _metrics(events)["train/loss"]
    assert [(s, ts) for s, ts, _ in loss] == [(5, T0), (10, T0 + 100), (15, T0 + 200), (20, T0 + 300)]
    assert [v for _, _, v in loss][:3] == pytest.approx([1.0, 0.5, 1 / 3]) and math.isnan(loss[3][2])
    assert _by(events, "param") == {"lr": 0.01, "opt": {"name": "adam", "layers": 4}}
    assert _by(events, "summary") == {"eval/acc": 0.9}
    assert _by(events, "tag") == {"b": "", "a": ""}
    (ev,) = [e for e in events if e.key == "logs/out"]  # a StringSeries is a text series
    assert (ev.kind, ev.step, ev.ts_ms, ev.payload["data"]) == ("media", 0, T0 + 5, {"text": "hello"})
    (art,) = [e for e in events if e.kind == "artifact"]
    assert art.key == "files/desc" and art.files[0][0] == "desc.json"
    assert art.files[0][1].read_text() == '{"rows": 3}'
    assert len(imp.warnings) == 1 and "files/evil" in imp.warnings[0]  # refused, counted


def test_parquet_given_multiplier_and_integer_steps(export: Path, tmp_path: Path) -> None:
    run, events = _events(NeptuneImporter(export / "..", step_multiplier=100))
    assert run.extra_tags == {"bridge.step_multiplier": "100"}
    assert [s for s, _, _ in _metrics(events)["train/loss"]] == [50, 100, 150, 200]
    one = tmp_path / "one_part_0.parquet"
    pq.write_table(_rows("p", "custom", [
        dict(attribute_path="sys/custom_run_id", attribute_type="string", string_value=RID),
        dict(attribute_path="m", attribute_type="float_series", step=Decimal(3),
             timestamp=_utc(T0), float_value=2.0)]), one)
    run, events = _events(NeptuneImporter(one))
    assert run.source_id == RID == run.run_id and run.extra_tags == {}
    assert _metrics(events) == {"m": [(3, T0, 2.0)]}


def test_parquet_through_the_sink_in_bounded_batches(export: Path, tmp_path: Path) -> None:
    imp = NeptuneImporter(export, batch_rows=2)
    (res,) = import_runs(imp, tmp_path / "spool")
    assert res.points == {"train/loss": 4} and res.counts["artifact"] == 1
    assert NeptuneImporter(export).runs().__next__().source_id == "PROJ-123"


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ImportError_):
        NeptuneImporter(tmp_path / "nope")
    with pytest.raises(ImportError_):
        NeptuneImporter(tmp_path, step_multiplier=0)
    with pytest.raises(ImportError_):
        NeptuneImporter(tmp_path, other=1)


# -- offline runs written by the neptune client ----------------------------------------


_QUIET = dict(capture_stdout=False, capture_stderr=False, capture_hardware_metrics=False,
              capture_traceback=False, git_ref=False, source_files=[])


def test_offline_run_written_by_neptune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    neptune = pytest.importorskip("neptune")
    from neptune.types import File

    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(tmp_path / ".neptune"))
    run = neptune.init_run(mode="offline", name="native", description="desc", tags=["x"], **_QUIET)
    run["parameters"] = {"lr": 0.1, "opt": {"name": "sgd"}}
    for i in range(4):
        run["train/loss"].append(1.0 / (i + 1), step=0.5 * i, timestamp=(T0 + i * 10) / 1000)
    run["eval/acc"] = 0.75
    run["data/sample"].upload(File.from_content("sample text", extension="txt"))
    run.stop()
    imp = NeptuneImporter(tmp_path)
    run_, events = _events(imp)
    assert (run_.name, run_.notes, run_.status) == ("native", "desc", "FINISHED")
    assert run_.extra_tags == {"bridge.step_multiplier": "10"}
    assert _metrics(events)["train/loss"] == [
        (i * 5, T0 + i * 10, pytest.approx(1.0 / (i + 1))) for i in range(4)]
    params = _by(events, "param")
    assert params == {"lr": 0.1, "opt": {"name": "sgd"}}
    assert _by(events, "summary")["eval/acc"] == 0.75
    assert _by(events, "tag") == {"x": ""}
    (art,) = [e for e in events if e.kind == "artifact"]
    assert art.key == "data/sample" and art.files[0][1].read_text() == "sample text"


# -- bridge -> neptune adapter (offline) -> import ------------------------------------


def _blob(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (root / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha[:2] / sha).write_bytes(data)
    return sha


def test_bridge_written_run_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("neptune")
    from bridge.adapters.base import Event, RunInfo
    from bridge.adapters.neptune import NeptuneAdapter

    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    blobs = tmp_path / "blobs"
    sha_a, sha_b = _blob(blobs, b"A"), _blob(blobs, b"BB")
    seq = iter(range(1, 10_000))

    def ev(kind: str, key: str | None, ts: int, **kw: Any) -> Event:
        return Event("f0", next(seq), RID, kind, key, kw.pop("step", None), ts, **kw)

    batch = [ev("metric", "loss", T0 + i, step=i, value=1.0 / (i + 1)) for i in range(5)]
    batch += [ev("param", "opt", T0, payload={"name": "adam", "lr": 0.1}),
              ev("param", "epochs", T0, payload=3),
              ev("tag", "team", T0, payload="vision"), ev("tag", "baseline", T0, payload=""),
              ev("summary", "best", T0, payload=0.2),
              ev("text", "readme.txt", T0, payload="hello"),
              ev("dict", "cfg.json", T0, payload={"a": 1}),
              ev("system", "system", T0, payload={"hostname": "h1", "cpus": 8}),
              ev("event", "checkpoint", T0 + 3, step=2, payload={"path": "x"}),
              ev("artifact", "model", T0, payload={
                  "name": "model", "type": "model", "is_dir": False, "source": "t",
                  "files": [{"path": "model.bin", "sha256": sha_a, "size": 1}]}),
              ev("artifact", "data", T0, payload={
                  "name": "data", "type": "dataset", "is_dir": True, "source": "t",
                  "files": [{"path": "x/a.bin", "sha256": sha_a, "size": 1},
                            {"path": "b.bin", "sha256": sha_b, "size": 2}]})]
    adapter = NeptuneAdapter(mode="offline", data_dir=str(tmp_path / "nep"), spool_dir=str(tmp_path))
    info = RunInfo(run_id=RID, project="ws/proj", name="bridged", notes="the notes", group="g",
                   blob_root=blobs, start_ms=T0)
    adapter.open_run(info)
    assert adapter.export(info, batch).outcome.value == "success"
    adapter.close_run(info, "KILLED", T0 + 999)
    adapter.shutdown()

    run, events = _events(NeptuneImporter(tmp_path / "nep"))
    assert run.source_id == RID == run.run_id
    assert (run.project, run.name, run.notes, run.group) == ("ws/proj", "bridged", "the notes", "g")
    assert (run.start_ms, run.end_ms, run.status) == (T0, T0 + 999, "KILLED")
    assert run.extra_tags == {}
    assert _metrics(events) == {"loss": [(i, T0 + i, pytest.approx(1.0 / (i + 1))) for i in range(5)]}
    assert _by(events, "param") == {"opt": {"name": "adam", "lr": 0.1}, "epochs": 3}
    assert _by(events, "tag") == {"team": "vision", "baseline": ""}
    assert _by(events, "summary") == {"best": 0.2}
    assert _by(events, "text") == {"readme.txt": "hello"}
    assert _by(events, "dict") == {"cfg.json": {"a": 1}}
    assert _by(events, "system") == {"system": {"hostname": "h1", "cpus": 8}}
    (cp,) = [e for e in events if e.kind == "event"]
    assert (cp.key, cp.ts_ms, cp.step, cp.payload) == ("checkpoint", T0 + 3, 2, {"path": "x"})
    arts = {e.key: e for e in events if e.kind == "artifact"}
    assert arts["model"].artifact_type == "model"
    assert [(r, p.read_bytes()) for r, p in arts["model"].files] == [("model.bin", b"A")]
    assert arts["data"].artifact_type == "dataset"
    assert sorted((r, p.read_bytes()) for r, p in arts["data"].files) == [("b.bin", b"BB"), ("x/a.bin", b"A")]


# -- neptune (native) -> import -> neptune adapter: the same Neptune fields ---------------


def test_native_run_exports_back_to_the_same_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct Neptune fields under one namespace (atoms and a series in ``parameters/opt``,
    series ``k/x`` and ``k/y``) stay distinct through import and export: no dead letter."""
    neptune = pytest.importorskip("neptune")
    from bridge.adapters.base import Event, RunInfo
    from bridge.adapters.neptune import NeptuneAdapter
    from bridge.adapters.neptune.offline import find_run_dirs, scan, series_points

    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(tmp_path / "src" / ".neptune"))
    run = neptune.init_run(mode="offline", name="native", **_QUIET)
    run["parameters"] = {"lr": 0.1, "opt": {"name": "sgd", "mom": 0.9}}
    for i in range(3):
        run["parameters/opt/schedule"].append(0.1 / (i + 1), step=i, timestamp=(T0 + i) / 1000)
        run["k/x"].append(float(i), step=i, timestamp=(T0 + i) / 1000)
        run["k/y"].append(float(-i), step=i, timestamp=(T0 + i) / 1000)
    run.stop()
    monkeypatch.delenv("NEPTUNE_DATA_DIRECTORY")

    _, imported = _events(NeptuneImporter(tmp_path / "src"))
    seq = iter(range(1, 10_000))
    batch = [Event("f0", next(seq), RID, e.kind, e.key, e.step, e.ts_ms, e.value, e.payload)
             for e in imported if e.kind in ("metric", "param")]
    adapter = NeptuneAdapter(mode="offline", data_dir=str(tmp_path / "out"), spool_dir=str(tmp_path))
    info = RunInfo(run_id=RID, project="ws/proj", name="native", blob_root=tmp_path / "blobs", start_ms=T0)
    adapter.open_run(info)
    result = adapter.export(info, batch)
    assert result.outcome.value == "success" and not result.rejected, result.rejected
    adapter.close_run(info, "FINISHED", T0 + 999)

    def fields(location: Path) -> tuple[dict[str, list[tuple[Any, Any]]], dict[str, Any]]:
        dirs = find_run_dirs(location)
        series: dict[str, list[tuple[Any, Any]]] = {}
        for p in series_points(dirs):
            series.setdefault(p.path, []).append((p.step, p.value))
        atoms = {k: v for k, (_, v) in scan(dirs).fields.items() if k.startswith("parameters/")}
        return series, atoms

    assert fields(tmp_path / "out") == fields(tmp_path / "src")
