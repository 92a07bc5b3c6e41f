"""The neptune-scale importer on operations files the real neptune-scale client wrote in
offline mode (a child process whose working directory is the test's), point by point."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("neptune_scale")
pytest.importorskip("neptune_api")

from bridge.adapters.importing import ImportEvent, bridge_run_id  # noqa: E402
from bridge.adapters.neptune import scale_names as S  # noqa: E402
from bridge.adapters.neptune.scale_importer import NeptuneScaleImporter  # noqa: E402
from bridge.importers import make_importer, recognise  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z
STEPS = ["0", "0.5", "1", "1.5", "2.25"]

WRITER = textwrap.dedent('''
    import datetime as dt, io, sys
    from neptune_scale import Run
    from neptune_scale.types import Histogram
    from PIL import Image

    T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    STEPS = [0, 0.5, 1, 1.5, 2.25]
    open("note.txt", "w").write("a note for the run")
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 10, 10)).save(buf, format="PNG")
    common = dict(project="ws/proj", mode="offline", enable_console_log_capture=False,
                  source_tracking_config=None)
    with Run(run_id="parent-1", experiment_name="exp-a", creation_time=T0, **common) as run:
        run.log_configs({"parameters/lr": 0.01, "parameters/opt/name": "adam",
                         "parameters/epochs": 3, "parameters/flag": True, "parameters/when": T0,
                         "parameters/labels": ["b", "a"], "eval/best": 0.93})
        run.add_tags(["t1", "t2", "t3"])
        run.remove_tags(["t3"])
        run.add_tags(["shared"], group_tags=True)
        for i, s in enumerate(STEPS):
            at = T0 + dt.timedelta(milliseconds=1234 * i + 7)
            run.log_metrics({"train/loss": 1.0 / (i + 1), "acc": i / 8}, step=s, timestamp=at)
        run.log_metrics({"train/loss": 9.0}, step=3, preview=True)
        run.log_string_series({"logs/out": "line one"}, step=1,
                              timestamp=T0 + dt.timedelta(seconds=5))
        run.log_histograms({"weights": Histogram(bin_edges=[0, 1, 2.5], counts=[3, 4])},
                           step=2, timestamp=T0 + dt.timedelta(seconds=6))
        run.assign_files({"files/note": "note.txt"})
        run.log_files({"images/sample": buf.getvalue()}, step=1.5,
                      timestamp=T0 + dt.timedelta(seconds=7))
    with Run(run_id="child-1", fork_run_id="parent-1", fork_step=1.5, **common) as run:
        run.log_metrics({"train/loss": 0.1}, step=2, timestamp=T0 + dt.timedelta(seconds=9))
''')

TAIL_WRITER = textwrap.dedent('''
    import datetime as dt
    from neptune_scale import Run
    T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    with Run(run_id="tail-run", project="ws/proj", mode="offline",
             enable_console_log_capture=False, source_tracking_config=None) as run:
        for step in range(15):
            run.log_metrics({"loss": step / 10}, step=step,
                            timestamp=T0 + dt.timedelta(milliseconds=100 * step + 1))
''')


def _write(where: Path, script: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", script], cwd=where, capture_output=True,
                          text=True, timeout=240,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("NEPTUNE_")})
    assert done.returncode == 0, done.stderr


def _ops_file(where: Path, run_id: str) -> Path:
    (path,) = [p for p in (where / ".neptune").glob(f"*_{run_id}_*/{S.OPS_FILE}")]
    return path


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("scale")
    _write(where, WRITER)
    return where


def _runs(imp: NeptuneScaleImporter) -> dict[str, tuple[Any, list[ImportEvent]]]:
    return {r.source_id: (r, list(imp.events(r))) for r in imp.runs()}


def test_offline_runs_import_point_by_point(written: Path) -> None:
    imp = NeptuneScaleImporter(written)
    runs = _runs(imp)
    assert set(runs) == {"parent-1", "child-1"}
    run, events = runs["parent-1"]
    # The bridge run id is the one the Parquet import of the same run gets.
    assert run.run_id == bridge_run_id("neptune", "parent-1")
    assert run.project == "ws/proj" and run.name == "exp-a" and run.start_ms == T0
    assert run.extra_tags[S.EXPERIMENT_TAG] == "exp-a"
    assert run.extra_tags["bridge.step_multiplier"] == "100"  # 2.25 needs two places

    # as the Parquet and 1.x importers read the same fields: parameters/ -> params (nested),
    # any other config -> a summary under its full path
    params = {e.key: e.payload for e in events if e.kind == "param"}
    assert params == {"lr": 0.01, "opt": {"name": "adam"}, "epochs": 3, "flag": True,
                      "when": "2024-05-01T12:00:00+00:00", "labels": ["a", "b"]}
    assert {e.key: e.payload for e in events if e.kind == "summary"} == {"eval/best": 0.93}
    assert sorted(e.key for e in events if e.kind == "tag") == ["group:shared", "t1", "t2"]

    metrics: dict[str, list[tuple[int, int, float]]] = {}
    for e in events:
        if e.kind == "metric":
            metrics.setdefault(e.key, []).append((e.step, e.ts_ms, e.value))
    want_steps = [int(Decimal(s) * 100) for s in STEPS]
    want_ts = [T0 + 1234 * i + 7 for i in range(len(STEPS))]
    assert metrics["train/loss"] == [(s, t, 1.0 / (i + 1))
                                     for i, (s, t) in enumerate(zip(want_steps, want_ts))]
    assert metrics["acc"] == [(s, t, i / 8) for i, (s, t) in enumerate(zip(want_steps, want_ts))]

    media = {e.key: e for e in events if e.kind == "media"}
    text = media["logs/out"]
    assert (text.payload["type"], text.payload["data"], text.step, text.ts_ms) == \
        ("text", {"text": "line one"}, 100, T0 + 5000)
    hist = media["weights"]
    assert hist.payload["type"] == "histogram" and (hist.step, hist.ts_ms) == (200, T0 + 6000)
    assert hist.payload["data"] == {"edges": [0.0, 1.0, 2.5], "counts": [3.0, 4.0]}
    image = media["images/sample"]
    assert image.payload["type"] == "image" and (image.step, image.ts_ms) == (150, T0 + 7000)
    assert image.payload["items"][0]["width"] == 4 and image.payload["items"][0]["height"] == 3
    from PIL import Image

    (ref, content), = image.files
    assert Image.open(io.BytesIO(Path(content).read_bytes())).size == (4, 3)

    (artifact,) = [e for e in events if e.kind == "artifact"]
    assert artifact.key == "files/note"
    (rel, local), = artifact.files
    assert rel == "note.txt" and Path(local).read_text() == "a note for the run"
    # The preview point is not a value of the series: reported, not imported.
    assert any("1 preview points" in w for w in imp.warnings), imp.warnings

    child, child_events = runs["child-1"]
    assert child.extra_tags[S.FORK_PARENT_TAG] == "parent-1"
    assert child.extra_tags[S.FORK_STEP_TAG] == "1.5"
    assert child.extra_tags["bridge.parent_run_id"] == run.run_id
    assert [(e.key, e.step, e.ts_ms, e.value) for e in child_events if e.kind == "metric"] == \
        [("train/loss", 2, T0 + 9000, 0.1)]


def test_gone_files_and_client_errors_are_warnings(tmp_path: Path) -> None:
    _write(tmp_path, WRITER)
    (tmp_path / "note.txt").unlink()  # the assigned file is gone; the logged image is not
    path = _ops_file(tmp_path, "parent-1")
    with sqlite3.connect(path) as conn:  # as the client's sync process records one
        conn.execute(f"INSERT INTO {S.T_ERRORS} (timestamp, error_type, error_details, "
                     "error_body, sequence_id) VALUES (?, ?, ?, '', ?)",
                     (T0, "NeptuneSeriesStepNonIncreasing", "step 1 after 2", 4))
    imp = NeptuneScaleImporter(tmp_path)
    _, events = _runs(imp)["parent-1"]
    assert not [e for e in events if e.kind == "artifact"]
    gone = [w for w in imp.warnings if "files/note" in w]
    assert len(gone) == 1 and "no longer exists" in gone[0], imp.warnings
    assert any("NeptuneSeriesStepNonIncreasing (operation 4): step 1 after 2" in w
               for w in imp.warnings)
    assert len([e for e in events if e.kind == "metric"]) == 10  # the rest is all there
    assert [e.key for e in events if e.kind == "media"] == ["logs/out", "weights",
                                                            "images/sample"]


CRASH_WRITER = textwrap.dedent('''
    import os
    from neptune_scale import Run
    run = Run(run_id="crash-1", project="ws/proj", mode="offline",
              enable_console_log_capture=False, source_tracking_config=None)
    for step in range(50):
        run.log_metrics({"m": step * 2.0}, step=step)
    run.log_configs({"parameters/a": 1})  # saved to the file before log_configs returns
    os._exit(1)  # killed: no close, the operations are still in the WAL
''')


def test_killed_writer_leaves_a_wal_that_is_read(tmp_path: Path) -> None:
    killed = subprocess.run([sys.executable, "-c", CRASH_WRITER], cwd=tmp_path,
                            capture_output=True, text=True, timeout=240)
    assert killed.returncode == 1, killed.stderr
    ops = _ops_file(tmp_path, "crash-1")
    wal = ops.with_name(ops.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0
    imp = NeptuneScaleImporter(tmp_path)
    (run,) = imp.runs()
    events = list(imp.events(run))
    assert [(e.step, e.value) for e in events if e.kind == "metric"] == \
        [(s, s * 2.0) for s in range(50)]
    assert [(e.key, e.payload) for e in events if e.kind == "param"] == [("a", 1)]
    assert wal.stat().st_size > 0  # read, never checkpointed or changed


def test_cli_imports_and_reports(written: Path, tmp_path: Path) -> None:
    """``bridge import neptune-scale``: both runs in; a file that is not the client's is a
    warning, not a failure."""
    from typer.testing import CliRunner
    from bridge.cli.main import app

    assert isinstance(make_importer("neptune-scale", str(written)), NeptuneScaleImporter)
    out = CliRunner().invoke(app, ["import", "neptune-scale", str(written), "--dir",
                                   str(tmp_path / "spool")])
    assert out.exit_code == 0, out.output
    assert "parent-1" in out.output and "child-1" in out.output
    assert any("source 'neptune-scale'" in s for s in recognise(str(written / ".neptune")))
    bad = tmp_path / "other" / ".neptune" / "x" / S.OPS_FILE
    bad.parent.mkdir(parents=True)
    with sqlite3.connect(bad) as conn:
        conn.execute("CREATE TABLE unrelated (x)")
    out = CliRunner().invoke(app, ["import", "neptune-scale", str(tmp_path / "other"),
                                   "--dir", str(tmp_path / "spool")])
    assert out.exit_code == 1, out.output
    assert "notaneptune-scaleoperationsfile;notread" in "".join(out.output.split())


def _parquet(where: Path, run_id: str, steps: range) -> Path:
    """neptune-exporter's Parquet of a run whose float series ``loss`` has ``steps``."""
    pq = pytest.importorskip("pyarrow.parquet")
    from test_import_neptune import _rows  # neptune-exporter's model.SCHEMA

    rows = [dict(attribute_path="loss", attribute_type="float_series", step=Decimal(s),
                 timestamp=datetime.fromtimestamp((T0 + 100 * s + 1) / 1000, timezone.utc),
                 float_value=s / 10) for s in steps]
    where.mkdir(parents=True)
    pq.write_table(_rows("ws/proj", run_id, rows), where / f"{run_id}_part_0.parquet")
    return where


def test_unsynced_tail_after_a_parquet_import_is_one_run(tmp_path: Path) -> None:
    """The server had steps 0..9 (exported as Parquet); the client still held 8..14 (8 and 9
    sent but never acknowledged): the run has each point once, under one bridge run id."""
    from bridge.adapters.neptune.importer import NeptuneImporter
    from bridge.spool.reader import find_run, iter_events

    _write(tmp_path / "work", TAIL_WRITER)
    ops = _ops_file(tmp_path / "work", "tail-run")
    with sqlite3.connect(ops) as conn:  # what the client deletes once the server acknowledged
        conn.execute(f"DELETE FROM {S.T_OPERATIONS} WHERE {S.COL_SEQ} <= 9")  # run + steps 0..7
    spool = tmp_path / "spool"
    (first,) = import_runs(NeptuneImporter(_parquet(tmp_path / "export", "tail-run", range(10))),
                           spool)
    imp = NeptuneScaleImporter(tmp_path / "work", spool_dir=spool)
    (second,) = import_runs(imp, spool)
    assert first.run_id == second.run_id == bridge_run_id("neptune", "tail-run")
    assert second.points == {"loss": 5}  # 10..14; 8 and 9 were already there
    rec = find_run(spool, first.run_id)
    points = [(e.step, e.ts_ms, e.value) for e in iter_events(rec.files, rec.run_id)
              if e.kind == "metric"]
    assert sorted(points) == [(s, T0 + 100 * s + 1, s / 10) for s in range(15)]
    # Without the spool the tail alone is imported: what the file holds.
    alone = NeptuneScaleImporter(tmp_path / "work")
    (run,) = alone.runs()
    assert [e.step for e in alone.events(run) if e.kind == "metric"] == list(range(8, 15))
    assert run.start_ms == T0 + 801  # no run-creating operation left: the first point's time


def test_tail_keeps_the_step_multiplier_of_the_run(tmp_path: Path) -> None:
    """The Parquet of the run had half steps (multiplier 10); the tail has whole steps only:
    bound to the spool (as the sink binds it), it keeps the run's multiplier."""
    pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from test_import_neptune import _rows
    from bridge.adapters.neptune.importer import NeptuneImporter

    _write(tmp_path / "work", TAIL_WRITER)
    with sqlite3.connect(_ops_file(tmp_path / "work", "tail-run")) as conn:
        conn.execute(f"DELETE FROM {S.T_OPERATIONS} WHERE {S.COL_SEQ} <= 13")  # steps 0..11 synced
    export = tmp_path / "export"
    export.mkdir()
    rows = [dict(attribute_path="loss", attribute_type="float_series", step=Decimal(s) / 2,
                 timestamp=datetime.fromtimestamp((T0 + s) / 1000, timezone.utc),
                 float_value=float(s)) for s in range(24)]  # steps 0, 0.5 .. 11.5
    pq.write_table(_rows("ws/proj", "tail-run", rows), export / "tail-run_part_0.parquet")
    spool = tmp_path / "spool"
    (first,) = import_runs(NeptuneImporter(export), spool)
    imp = NeptuneScaleImporter(tmp_path / "work")
    imp.bind_spool(spool)
    (run,) = imp.runs()
    assert run.extra_tags["bridge.step_multiplier"] == "10" and run.run_id == first.run_id
    assert [(e.step, e.value) for e in imp.events(run) if e.kind == "metric"] == \
        [(10 * s, s / 10) for s in range(12, 15)]


def test_import_then_sync_to_mlflow_verifies(written: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from bridge.agent.sync import Syncer
    from bridge.verify import verify_run

    spool = tmp_path / "spool"
    imp = NeptuneScaleImporter(written)
    imported = import_runs(imp, spool, backends=[{"name": "mlflow"}])
    assert {r.source_id for r in imported} == {"parent-1", "child-1"}
    summary = Syncer(spool).run_once()
    for result in summary.results:
        assert result.error is None and result.pending == 0 and result.dead == 0, result
    for r in imported:
        rep = verify_run(spool, r.run_id, "mlflow")
        assert rep.complete, (rep.notes, rep.per_key)
        assert rep.fields["points"].kept == rep.fields["points"].expected > 0
        assert rep.fields["timestamps"].kept == rep.fields["timestamps"].expected
        assert rep.fields["tags"].kept == rep.fields["tags"].expected > 0
    parent = verify_run(spool, bridge_run_id("neptune", "parent-1"), "mlflow")
    for name, count in (("media", 3), ("media_data", 3), ("media_files", 1),
                        ("artifact_files", 1)):
        assert (parent.fields[name].kept, parent.fields[name].expected) == (count, count), name
    # MLflow keeps params as strings: the number and string ones compare equal.
    assert parent.fields["params"].expected == 6 and parent.fields["params"].kept >= 4


def test_stream_writes_the_spool_events_would(written: Path, tmp_path: Path) -> None:
    """Points handed to the sink as MetricPoints: the same rows, in the same order, as one
    event a point (text, histograms and files between them keep their places)."""
    from same_spool import assert_same_spool

    by_stream, _ = assert_same_spool(lambda: NeptuneScaleImporter(written), tmp_path)
    assert sum(sum(r.points.values()) for r in by_stream) > 0


def test_files_under_an_odd_path_import_the_same(written: Path, tmp_path: Path) -> None:
    """A ``?``, ``#`` or ``%`` in a file's path names the file (opened read-only by URI)."""
    import shutil

    odd = tmp_path / "odd?mode=rw#1%25"
    shutil.copytree(written / ".neptune", odd / ".neptune")
    points = []
    for where in (written, odd):
        imp = NeptuneScaleImporter(where)
        points.append(sorted((run.source_id, e.key, e.step, repr(e.value))
                             for run, events in _runs(imp).values()
                             for e in events if e.kind == "metric"))
    assert points[0] and points[0] == points[1]


def _append_op(seq: int, step: int, append: dict[str, Any]) -> tuple:
    from neptune_api.proto.neptune_pb.ingest.v1 import common_pb2 as pb

    op = pb.UpdateRunSnapshot()
    op.step.whole = step
    op.timestamp.seconds = 1_800_000_000 + step
    for key, value in append.items():
        op.append[key].CopyFrom(value)
    return (seq, 1_800_000_000_000, S.OP_UPDATE_SNAPSHOT, op.SerializeToString())


def test_unsupported_series_and_damaged_operations_are_warned_once(written: Path,
                                                                   tmp_path: Path) -> None:
    """Operations added to a file the real client wrote: two with a bool series beside a
    float one, one damaged. The floats are imported; each problem is one warning."""
    import shutil

    from neptune_api.proto.neptune_pb.ingest.v1 import common_pb2 as pb

    (src,) = [p for p in (written / ".neptune").rglob(S.OPS_FILE) if "parent-1" in p.parent.name]
    dst = tmp_path / ".neptune" / src.parent.name / S.OPS_FILE
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    with sqlite3.connect(dst) as conn:
        top = conn.execute(f"SELECT max({S.COL_SEQ}) FROM {S.T_OPERATIONS}").fetchone()[0]
        rows = [_append_op(top + 1, 1000, {"late": pb.Value(float64=1.5),
                                           "flag": pb.Value(bool=True)}),
                _append_op(top + 2, 1001, {"late": pb.Value(float64=2.5),
                                           "flag": pb.Value(bool=False)}),
                (top + 3, 1_800_000_000_000, S.OP_UPDATE_SNAPSHOT, b"\x0a\xff\xff")]
        conn.executemany(f"INSERT INTO {S.T_OPERATIONS} ({S.COL_SEQ}, {S.COL_OP_TS}, "
                         f"{S.COL_OP_TYPE}, {S.COL_OPERATION}, operation_size_bytes) "
                         "VALUES (?, ?, ?, ?, ?)", [(*r, len(r[3])) for r in rows])
    conn.close()
    imp = NeptuneScaleImporter(tmp_path)
    (run,) = list(imp.runs())
    mult = int(run.extra_tags.get("bridge.step_multiplier", 1))
    late = [(e.step, e.value) for e in imp.events(run) if e.kind == "metric" and e.key == "late"]
    assert late == [(1000 * mult, 1.5), (1001 * mult, 2.5)]
    unsupported = [w for w in imp.warnings if "'flag'" in w]
    damaged = [w for w in imp.warnings if f"operation {top + 3}: cannot be decoded" in w]
    assert len(unsupported) == 1 and "unsupported type" in unsupported[0], imp.warnings
    assert len(damaged) == 1, imp.warnings


ROWS_WRITER = textwrap.dedent('''
    import datetime as dt
    from neptune_scale import Run
    T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    with Run(run_id="rows-1", project="ws/proj", mode="offline",
             enable_console_log_capture=False, source_tracking_config=None) as run:
        for step in range(300):
            at = T0 + dt.timedelta(milliseconds=10 * step + 3)
            if step == 40:  # a string between rows of floats
                run.log_string_series({"logs/out": "halfway"}, step=step, timestamp=at)
            if 150 <= step < 180:  # two sets of keys, by turns
                metrics = {"val/loss": 1.0 / (step + 1)} if step % 2 else {"loss": 0.5 + step}
            else:
                metrics = {"loss": 1.0 / (step + 1), "acc": step / 7 + 0.01, "lr": 0.001}
            if step == 90:
                metrics["acc"] = 0.0  # a 0.0: read a value at a time
            if step == 120:
                metrics["epoch"] = 3  # an int
            run.log_metrics(metrics, step=step, timestamp=at)
''')


def _in_order(spool: Path) -> dict[str, list[tuple]]:
    """:func:`same_spool.spool_rows` without the seq, the metric points of one step and time
    in key order: an operation's series are a map, whose order a parse does not keep."""
    from same_spool import spool_rows

    out = {}
    for name, rows in spool_rows(spool).items():
        events, group = [], []  # group: the metric points of the current step and time
        for row in rows:
            if not isinstance(row[0], int):  # the runs row
                events.append(row)
                continue
            if row[1] == "metric" and (not group or group[0][2:4] == row[3:5]):
                group.append(row[1:])
                continue
            events += sorted(group)
            group = [row[1:]] if row[1] == "metric" else []
            if row[1] != "metric":
                events.append(row[1:])
        out[name] = events + sorted(group)
    return out


def test_rows_of_floats_import_as_a_value_at_a_time_does(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Operations of float64 values only go over as rows of points, read at once, and whole
    chunks of them as columns (scale_columns): the spool holds what reading each operation
    a value at a time writes (a string, a 0.0, an int and alternating keys between them;
    then 2,400 steps of the same series, some decimal, some times of whole seconds), and the
    rows are packed as rows."""
    from bridge.adapters.neptune import scale_importer, scale_offline

    _write(tmp_path / "src", ROWS_WRITER + textwrap.dedent('''
        with Run(run_id="rows-2", project="ws/proj", mode="offline",
                 enable_console_log_capture=False, source_tracking_config=None) as run:
            for i in range(2400):
                at = T0 + dt.timedelta(milliseconds=(1000 if 900 <= i < 1500 else 7) * i)
                step = i / 4 if 1200 <= i < 1300 else i  # decimal steps: a multiplier of 100
                run.log_metrics({"loss": 1.0 / (i + 1), "acc": i / 7, "lr": -0.0},
                                step=step, timestamp=at)
    '''))
    chunks = []
    real_chunk = scale_offline.read_chunk

    def counted(*args: Any, **kwargs: Any) -> Any:
        found = real_chunk(*args, **kwargs)
        chunks.append(found is not None)
        return found

    monkeypatch.setattr(scale_offline, "read_chunk", counted)
    by_rows = import_runs(NeptuneScaleImporter(tmp_path / "src"), tmp_path / "rows")
    assert sum(chunks) >= 2, chunks  # whole chunks were read as columns
    monkeypatch.setattr(scale_offline, "read_chunk", lambda *args, **kwargs: None)
    real = scale_importer.read_appends

    def one_by_one(*args: Any, **kwargs: Any) -> Any:
        for step, ts, names, values in real(*args, **kwargs):
            yield step, ts, None, (values if names is None else
                                   [(k, "float", v) for k, v in zip(names, values)])

    monkeypatch.setattr(scale_importer, "read_appends", one_by_one)
    by_value = import_runs(NeptuneScaleImporter(tmp_path / "src"), tmp_path / "values")
    assert _in_order(tmp_path / "rows") == _in_order(tmp_path / "values")
    (run, run2), (again, again2) = by_rows, by_value
    assert run.points == again.points and run.points["loss"] == 300 - 15
    assert run.points["epoch"] == 1 and run.points["val/loss"] == 15
    assert run2.points == again2.points == {"loss": 2400, "acc": 2400, "lr": 2400}
    multipliers = []
    for db in (tmp_path / "rows" / "spool").glob("import-*.db"):
        with sqlite3.connect(db) as c:
            layouts = [blob[11:12] for (blob,) in c.execute(
                "SELECT payload FROM events WHERE kind = 'points'")]
            multipliers += c.execute("SELECT payload FROM events WHERE kind = 'tag' AND "
                                     "key = 'bridge.step_multiplier'").fetchall()
        c.close()
        assert b"r" in layouts, layouts
    assert len(multipliers) == 1 and "100" in str(multipliers[0][0]), multipliers
