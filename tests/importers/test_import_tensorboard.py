"""The TensorBoard importer against event files written by TensorBoard's own writers.

Corpora are written inside the tests: with ``torch.utils.tensorboard.SummaryWriter`` when
torch is installed (legacy ``simple_value`` and new-style tensor scalars, text, hparams, a
run resumed into a second event file; skipped, with the reason, without torch), with the
same legacy records written by TensorBoard's own ``EventFileWriter`` (``tb_events``), and
with TensorBoard's TF-free ``tensorboard.summary.Writer`` and
``EventFileWriter`` (v2 tensor scalars, metadata only on a tag's first value).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from bridge.adapters.importing import ImportError_  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.adapters.tensorboard.importer import TensorboardImporter, last_record  # noqa: E402
from bridge.spool.reader import find_run, iter_events, list_runs  # noqa: E402

W0 = 1_700_000_000.0  # wall times in seconds, as TensorBoard stores them


def _f32(x: float) -> float:
    return float(np.float32(x))


def _key(v: float) -> Any:
    return "NaN" if math.isnan(v) else v


def read_back(spool: Path, run_id: str) -> dict[str, Any]:
    rec = find_run(spool, run_id)
    assert rec is not None
    out: dict[str, Any] = {"rec": rec, "points": {}, "params": {}, "texts": {}, "media": {},
                           "tags": {}, "count": 0}
    for ev in iter_events(rec.files, run_id):
        out["count"] += 1
        if ev.kind == "metric":
            out["points"].setdefault(ev.key, []).append((ev.step, ev.ts_ms, _key(ev.value)))
        elif ev.kind == "param":
            out["params"][ev.key] = ev.payload
        elif ev.kind == "media" and ev.payload["type"] == "text":
            out["texts"].setdefault(ev.key, []).append(
                (ev.step, ev.ts_ms, ev.payload["data"]["text"]))
        elif ev.kind == "media":
            out["media"].setdefault(ev.key, []).append((ev.step, ev.ts_ms, ev.payload))
        elif ev.kind == "tag":
            out["tags"][ev.key] = ev.payload
    for pts in out["points"].values():
        pts.sort(key=lambda p: (p[0], p[1]))
    return out


@pytest.fixture
def torch_logdir(tmp_path: Path) -> Path:
    """A log dir written by PyTorch's SummaryWriter: two runs, one resumed, one with hparams."""
    tb = pytest.importorskip("torch.utils.tensorboard")
    logdir = tmp_path / "logs"
    w = tb.SummaryWriter(str(logdir / "train"))
    for s in range(100):
        w.add_scalar("loss", 1.0 / (s + 1), s, walltime=W0 + s)
        w.add_scalar("acc", s / 100, s, walltime=W0 + s + 0.25, new_style=True)
    w.add_scalar("odd", float("nan"), 7, walltime=W0 + 7.5)
    w.add_scalar("odd", float("inf"), 8, walltime=W0 + 8.5)
    w.add_text("notes", "first *note*", 3, walltime=W0 + 3.5)
    w.add_histogram("weights", np.arange(10.0), 1, walltime=W0 + 1.5)
    w.close()
    again = tb.SummaryWriter(str(logdir / "train"))  # a resumed job: a second event file
    for s in range(100, 120):
        again.add_scalar("loss", 1.0 / (s + 1), s, walltime=W0 + s)
    again.add_text("notes", "second", 110, walltime=W0 + 110.5)
    again.close()
    hp = tb.SummaryWriter(str(logdir / "sweep"))
    hp.add_hparams({"lr": 0.01, "opt": "adam", "layers": 4}, {"hp/acc": 0.9}, run_name="trial-1")
    hp.close()
    return logdir


def test_torch_summary_writer(torch_logdir: Path, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    assert len(list((torch_logdir / "train").glob("events.out.tfevents.*"))) == 2
    done = import_runs(TensorboardImporter(torch_logdir, project="tb"), spool)
    # The hparams writer's own directory holds an event file too: TensorBoard lists it as
    # a run (with no data), and so does the import.
    assert sorted(r.name for r in done) == ["sweep", "sweep/trial-1", "train"]
    train = next(r for r in done if r.name == "train")
    got = read_back(spool, train.run_id)
    rec = got["rec"]
    assert (rec.project, rec.name, rec.status) == ("tb", "train", "FINISHED")
    assert rec.end_ms == int((W0 + 110.5) * 1000)  # the last record's wall time
    assert got["points"]["loss"] == [(s, int((W0 + s) * 1000), _f32(1.0 / (s + 1)))
                                     for s in range(120)]
    assert got["points"]["acc"] == [(s, int((W0 + s + 0.25) * 1000), _f32(s / 100))
                                    for s in range(100)]
    assert got["points"]["odd"] == [(7, int((W0 + 7.5) * 1000), "NaN"),
                                    (8, int((W0 + 8.5) * 1000), math.inf)]
    assert got["texts"] == {"notes": [(3, int((W0 + 3.5) * 1000), "first *note*"),
                                      (110, int((W0 + 110.5) * 1000), "second")]}
    [(step, ts, hist)] = got["media"]["weights"]  # a histogram now, not a skipped summary
    assert (step, ts, hist["type"]) == (1, int((W0 + 1.5) * 1000), "histogram")
    assert sum(hist["data"]["counts"]) == 10
    assert "tensorboard.skipped" not in got["tags"]
    assert got["tags"]["tensorboard.logdir"] == str((torch_logdir / "train").resolve())
    assert got["tags"]["bridge.source_id"].endswith("/train")  # the source path is kept

    sweep = next(r for r in done if r.name == "sweep/trial-1")
    hp = read_back(spool, sweep.run_id)
    # TensorBoard keeps hparams as protobuf Values: numbers are doubles.
    assert hp["params"] == {"lr": 0.01, "opt": "adam", "layers": 4.0}
    assert [p[2] for p in hp["points"]["hp/acc"]] == [_f32(0.9)]

    again = import_runs(TensorboardImporter(torch_logdir, project="tb"), spool)
    assert all(r.skipped for r in again)  # deterministic ids: a re-import adds nothing
    assert len(list_runs(spool)) == 3


def test_tensorboard_own_writer_v2_scalars(tmp_path: Path) -> None:
    """TF-free writers of TensorBoard itself; v2 scalars with metadata only at first."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary import DirectoryOutput, Writer
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    logdir = tmp_path / "logs"
    writer = Writer(DirectoryOutput(str(logdir)))
    values = [0.1 * s for s in range(50)]
    for s, v in enumerate(values):
        writer.add_scalar("val/loss", np.float64(v), s, wall_time=W0 + s / 10)
    writer.close()

    raw = EventFileWriter(str(logdir / "v2"))
    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DataClass.DATA_CLASS_SCALAR)
    for s in range(5):
        ev = event_pb2.Event(wall_time=W0 + s, step=10 * s)
        value = ev.summary.value.add(tag="lr", tensor=tensor_util.make_tensor_proto(
            np.float64(0.1 + s / 3)))
        if s == 0:
            value.metadata.CopyFrom(meta)
        raw.add_event(ev)
    raw.close()

    spool = tmp_path / "spool"
    done = import_runs(TensorboardImporter(logdir), spool)
    by_id = {r.name: r for r in done}
    assert sorted(by_id) == ["logs", "v2"]
    root = read_back(spool, by_id["logs"].run_id)
    assert root["rec"].project == "tensorboard"
    # tensorboard.summary.Writer stores float32; the raw writer below keeps float64.
    assert root["points"]["val/loss"] == [(s, int(round((W0 + s / 10) * 1000)), _f32(v))
                                          for s, v in enumerate(values)]
    v2 = read_back(spool, by_id["v2"].run_id)
    assert v2["points"]["lr"] == [(10 * s, int((W0 + s) * 1000), 0.1 + s / 3)  # float64 kept
                                  for s in range(5)]


def test_torn_tail_is_ignored(tmp_path: Path) -> None:
    """A writer killed mid-record leaves a torn tail: the complete records import."""
    from tb_events import LegacyWriter

    logdir = tmp_path / "logs"
    w = LegacyWriter(str(logdir / "train"))
    for s in range(120):
        w.add_scalar("loss", 1.0 / (s + 1), s, walltime=W0 + s)
    w.close()
    path = sorted((logdir / "train").glob("events.out.tfevents.*"))[-1]
    whole = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(whole[-30:-3])  # a header and part of a record
    assert last_record(path) is not None
    done = import_runs(TensorboardImporter(logdir), tmp_path / "spool")
    train = next(r for r in done if r.name == "train")
    got = read_back(tmp_path / "spool", train.run_id)
    assert [p[0] for p in got["points"]["loss"]] == list(range(120))


def test_not_a_log_dir(tmp_path: Path) -> None:
    with pytest.raises(ImportError_):
        TensorboardImporter(tmp_path / "missing")
    assert list(TensorboardImporter(tmp_path).runs()) == []
