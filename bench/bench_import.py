"""Import throughput: `bridge import` of each source beside its raw read ceiling.

Run ``python -m bench.bench_import [--quick] [--points N] [--only SOURCE] [--repeat R]
[--json F] [--profile DIR]``.

For each source a corpus of N metric points (default 1,000,000; quick 100,000) in one run,
four keys (``train/loss``, ``train/acc``, ``train/grad_norm``, ``train/lr``) at N/4 steps, is
written by the vendor's own writer in a child process, batched where its API allows:

- ``neptune``: neptune-exporter Parquet (its schema, ``<run>_part_<n>.parquet``), pyarrow;
- ``wandb``: a ``.wandb`` offline run, ``wandb.init(mode="offline")`` + ``run.log`` of a row;
- ``tensorboard``: event files, tensorboard's ``EventFileWriter``, one event per scalar as
  torch's SummaryWriter writes them;
- ``comet``: an offline archive, ``comet_ml.OfflineExperiment.log_metrics`` of a row;
- ``mlflow``: a SQLite store, ``MlflowClient.log_batch`` of 1,000 metrics a call;
- ``mlflow-server``: the same run, written the same way, to a real ``mlflow server`` on
  127.0.0.1 (sqlite backend store, ``--workers 1``, as ``tests/mlflow_server.py`` starts it),
  started by this process for this source alone and stopped when it is done, whatever
  happens (the writer, the ceiling and the import all talk to that one server). Not in the
  default set, as it nearly doubles the run (1,000,000 points: the writer reaches its budget
  near 985,000 at ~6,500 points/s, each read takes ~1 min at ~15-18k points/s; about 7 min
  in all, 40 s with ``--quick``): run it with ``--only mlflow-server``;
- ``mlflow-runs``: the same points in a SQLite store as :data:`MANY_RUNS` (100) runs of
  N/100 points, logged one after another (what a store of an org's history looks like, where
  each run is found among the others); the ceiling reads the whole ``metrics`` table. Not in
  the default set (its writer takes as long as ``mlflow``'s): ``--only mlflow-runs``;
- ``neptune-scale``: ``run_operations.sqlite3``, ``neptune_scale.Run(mode="offline")``;
- ``trackio``: a project, trackio's ``SQLiteStorage.bulk_log`` with ``TRACKIO_DIR`` in a
  temp dir, a log id a row (a uuid, as ``trackio.log`` writes each row with).

A writer that cannot produce N points within ``--write-budget`` seconds (default 150) stops
at a step boundary and the source is measured on what it wrote; the table says so.

Then, alternating, each in a fresh child process (best of ``--repeat``):

- the *ceiling*: the source read with its own reader and every point decoded into a Python
  ``(key, step, time, value)``, nothing else: pyarrow's Parquet reader (``to_pylist`` of the
  columns), the ``.wandb`` records (the LevelDB framing the importer uses, as wandb ships no
  Python reader, then wandb's protobuf ``Record`` and ``json.loads`` of each value), tensorboard's
  ``LegacyEventFileLoader``, the MLflow ``metrics`` table with plain ``sqlite3``, for the
  MLflow server ``MlflowClient(url)``'s REST store paging ``get_metric_history`` of each key
  of the run (see ``_c_mlflow_server``: what an export script of one's own would do), the Comet
  ``messages.json`` with ``json``, neptune-scale's operations with ``sqlite3`` + neptune_api's
  protobuf, trackio's ``metrics`` rows with ``sqlite3`` + ``orjson`` (as trackio's own
  ``SQLiteStorage`` decodes them);
- ``bridge import``: ``make_importer(source, location)`` + ``import_runs(importer, spool)``
  (``make_importer("mlflow", url)`` for the server)
  into a fresh spool: wall time, points/s, and the RSS growth of the importing process
  during the import (``ru_maxrss`` at the end minus the RSS before ``import_runs``).

The spool sink alone (``import_runs`` of a synthetic importer yielding ready-made metric
events) is measured once: it bounds every import from above. It is also split (on at most
200,000 points) into making the ``ImportEvent``s, which an importer of one event a point
does once per point, and ``import_runs`` of events made beforehand; and measured once more
with the points handed over as ``MetricPoints`` (an importer's ``stream``).

Targets per source: import throughput ≥ 0.5× the ceiling, RSS growth ≤ 150 MB. A benchmark,
not a test: nothing asserts; the figures go to BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

from bench.common import fmt_rate, header, mark, meta, quiet_vendor_env, run_in_child

__all__ = ["SOURCES", "main"]

_REPO = Path(__file__).resolve().parent.parent
KEYS = ("train/loss", "train/acc", "train/grad_norm", "train/lr")
T0_MS = 1_700_000_000_000
RATIO_TARGET = 0.5
RSS_TARGET_MB = 150.0


def _value(step: int, j: int) -> float:
    return 1.0 / (step + 1) + j


def _ms(step: int) -> int:
    return T0_MS + 10 * step


class _Budget:
    """Stops a writer at a step boundary once its time is spent (checked every ``every``)."""

    def __init__(self, seconds: float, every: int = 1000) -> None:
        self.end = time.monotonic() + seconds
        self.every = every

    def spent(self, step: int) -> bool:
        return step % self.every == 0 and time.monotonic() > self.end


# -- writers (each runs in a child process; returns the facts the import needs) ------------


def _w_neptune(d: str, steps: int, budget: float) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bridge.adapters.neptune.importer import sanitize_path_part

    schema = pa.schema([
        ("project_id", pa.string()), ("run_id", pa.string()), ("attribute_path", pa.string()),
        ("attribute_type", pa.string()), ("step", pa.decimal128(18, 6)),
        ("timestamp", pa.timestamp("ms", tz="UTC")), ("int_value", pa.int64()),
        ("float_value", pa.float64()), ("string_value", pa.string()), ("bool_value", pa.bool_()),
        ("datetime_value", pa.timestamp("ms", tz="UTC")),
        ("string_set_value", pa.list_(pa.string())),
        ("file_value", pa.struct([("path", pa.string())])),
        ("histogram_value", pa.struct([("type", pa.string()), ("edges", pa.list_(pa.float64())),
                                       ("values", pa.list_(pa.float64()))])),
    ])
    project, run = "ws/bench", "BENCH-1"
    out = Path(d) / "data" / sanitize_path_part(project)
    out.mkdir(parents=True)

    def table(cols: dict[str, Any], n: int) -> Any:
        arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema]
        return pa.Table.from_arrays(arrays, schema=schema)

    n0 = 2
    head = table({
        "project_id": pa.array([project] * n0), "run_id": pa.array([run] * n0),
        "attribute_path": pa.array(["sys/name", "sys/creation_time"]),
        "attribute_type": pa.array(["string", "datetime"]),
        "string_value": pa.array(["bench-import", None]),
        "datetime_value": pa.array([None, T0_MS], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
    }, n0)
    part_steps = 125_000  # 500,000 rows a part, as the exporter splits a long run
    parts = []
    for part, s0 in enumerate(range(0, steps, part_steps)):
        st = np.arange(s0, min(steps, s0 + part_steps), dtype=np.int64)
        n = len(st) * len(KEYS)
        step_col = np.repeat(st, len(KEYS))
        key_col = np.tile(np.arange(len(KEYS)), len(st))
        cols = {
            "project_id": pa.array([project] * n), "run_id": pa.array([run] * n),
            "attribute_path": pa.DictionaryArray.from_arrays(
                pa.array(key_col.astype(np.int32)), pa.array(list(KEYS))).cast(pa.string()),
            "attribute_type": pa.array(["float_series"] * n),
            "step": pa.array(step_col.astype(np.float64)).cast(pa.decimal128(18, 6)),
            "timestamp": pa.array(T0_MS + 10 * step_col).cast(pa.timestamp("ms", tz="UTC")),
            "float_value": pa.array(1.0 / (step_col + 1) + key_col),
        }
        t = table(cols, n)
        if part == 0:
            t = pa.concat_tables([head, t])
        pq.write_table(t, out / f"{run}_part_{part}.parquet")
        parts.append(n)
    return {"location": str(Path(d) / "data"), "options": {}, "points": sum(parts)}


def _w_wandb(d: str, steps: int, budget: float) -> dict:
    quiet_vendor_env(Path(d))
    import wandb

    settings = wandb.Settings(silent=True, console="off", disable_git=True, disable_code=True,
                              x_disable_stats=True, x_disable_meta=True,
                              x_disable_machine_info=True, x_save_requirements=False)
    run = wandb.init(project="bench", id="bench0001", name="bench-import", mode="offline",
                     dir=d, settings=settings)
    b = _Budget(budget)
    done = 0
    for i in range(steps):
        if b.spent(i):
            break
        run.log({k: _value(i, j) for j, k in enumerate(KEYS)}, step=i)
        done += 1
    run.finish()
    return {"location": str(Path(d) / "wandb"), "options": {}, "points": done * len(KEYS)}


def _w_tensorboard(d: str, steps: int, budget: float) -> dict:
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logdir = Path(d) / "tb" / "bench-run"
    w = EventFileWriter(str(logdir), max_queue_size=10_000)
    b = _Budget(budget)
    done = 0
    for i in range(steps):
        if b.spent(i):
            break
        wall = _ms(i) / 1000
        for j, k in enumerate(KEYS):
            ev = event_pb2.Event(wall_time=wall, step=i)
            ev.summary.value.add(tag=k, simple_value=_value(i, j))
            w.add_event(ev)
        done += 1
    w.close()
    return {"location": str(Path(d) / "tb"), "options": {"project": "bench"},
            "points": done * len(KEYS)}


def _w_comet(d: str, steps: int, budget: float) -> dict:
    quiet_vendor_env(Path(d))
    import comet_ml

    exp = comet_ml.OfflineExperiment(
        project_name="bench", offline_directory=str(Path(d) / "comet"),
        auto_metric_logging=False, auto_param_logging=False, auto_output_logging=False,
        log_code=False, log_graph=False, parse_args=False, log_env_details=False,
        log_git_metadata=False, log_git_patch=False, log_env_gpu=False, log_env_host=False,
        log_env_cpu=False, log_env_network=False, log_env_disk=False, display_summary_level=0)
    b = _Budget(budget)
    done = 0
    for i in range(steps):
        if b.spent(i):
            break
        exp.log_metrics({k: _value(i, j) for j, k in enumerate(KEYS)}, step=i)
        done += 1
    exp.end()
    return {"location": str(Path(d) / "comet"), "options": {}, "points": done * len(KEYS)}


def _w_mlflow(d: str, steps: int, budget: float) -> dict:
    return _mlflow_write(d, f"sqlite:///{Path(d) / 'mlflow.db'}", steps, budget)


def _w_mlflow_server(d: str, steps: int, budget: float, url: str) -> dict:
    return _mlflow_write(d, url, steps, budget)


# mlflow-runs: the corpus's points split evenly over this many runs, logged one after another
MANY_RUNS = 100


def _w_mlflow_runs(d: str, steps: int, budget: float) -> dict:
    return _mlflow_write(d, f"sqlite:///{Path(d) / 'mlflow.db'}", steps, budget, MANY_RUNS)


def _mlflow_write(d: str, uri: str, steps: int, budget: float, runs: int = 1) -> dict:
    """``steps`` steps of the 4 keys, as ``runs`` runs of ``steps // runs`` steps each."""
    quiet_vendor_env(Path(d))
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri)
    exp = client.create_experiment("bench")
    per_run = steps // runs
    b = _Budget(budget, every=250)
    done = 0
    for r in range(runs):
        name = "bench-import" if runs == 1 else f"bench-import-{r}"
        rid = client.create_run(exp, run_name=name, start_time=T0_MS).info.run_id
        batch: list[Any] = []
        for i in range(per_run):
            if b.spent(done):
                break
            ts = _ms(i)
            batch.extend(Metric(k, _value(i, j), ts, i) for j, k in enumerate(KEYS))
            done += 1
            if len(batch) >= 1000:  # MLflow's limit of metrics per log_batch
                client.log_batch(rid, metrics=batch)
                batch = []
        if batch:
            client.log_batch(rid, metrics=batch)
        client.set_terminated(rid, end_time=_ms(per_run))
        if b.spent(done):
            break
    return {"location": uri, "options": {"experiments": ["bench"]}, "points": done * len(KEYS)}


def _w_neptune_scale(d: str, steps: int, budget: float) -> dict:
    import datetime as dt

    for var in [v for v in os.environ if v.startswith("NEPTUNE_")]:
        os.environ.pop(var)
    from neptune_scale import Run

    at = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)  # noqa: E731
    logs = Path(d) / ".neptune"
    b = _Budget(budget)
    done = 0
    with Run(run_id="bench-import-1", project="ws/bench", mode="offline",
             experiment_name="bench-import", creation_time=at(T0_MS), log_directory=str(logs),
             enable_console_log_capture=False, source_tracking_config=None) as run:
        for i in range(steps):
            if b.spent(i):
                break
            run.log_metrics({k: _value(i, j) for j, k in enumerate(KEYS)}, step=i,
                            timestamp=at(_ms(i)))
            done += 1
    return {"location": str(logs), "options": {}, "points": done * len(KEYS)}


def _w_trackio(d: str, steps: int, budget: float) -> dict:
    import datetime as dt

    from bridge.adapters.trackio.store import store_env

    env = store_env(Path(d) / "trackio")
    for var in [v for v in os.environ if v not in env]:
        os.environ.pop(var)
    os.environ.update(env, HF_HOME=str(Path(d) / "hf"))
    from trackio.sqlite_storage import SQLiteStorage

    iso = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat()  # noqa: E731
    b = _Budget(budget, every=10_000)
    done = 0
    chunk = 10_000
    for s0 in range(0, steps, chunk):
        if b.spent(s0):
            break
        rng = range(s0, min(steps, s0 + chunk))
        SQLiteStorage.bulk_log(  # a log id a row, as trackio's Run.log gives each
            "bench", "bench-import",
            [{k: _value(i, j) for j, k in enumerate(KEYS)} for i in rng],
            steps=list(rng), timestamps=[iso(_ms(i)) for i in rng],
            config={"lr": 0.01} if s0 == 0 else None,
            log_ids=[uuid.uuid4().hex for _ in rng])
        done += len(rng)
    return {"location": str(Path(d) / "trackio"), "options": {}, "points": done * len(KEYS)}


# -- ceilings: the source's own reader, every point decoded into Python, nothing else -------


def _c_neptune(loc: str, options: dict) -> int:
    import pyarrow.parquet as pq

    n = 0
    for f in sorted(Path(loc).rglob("*.parquet")):
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=65_536, columns=[
                "attribute_path", "attribute_type", "step", "timestamp", "float_value"]):
            paths, kinds, steps, ts, vals = (c.to_pylist() for c in batch.columns)
            for key, kind, step, t, v in zip(paths, kinds, steps, ts, vals):
                if kind == "float_series":
                    n += 1
    return n


def _c_wandb(loc: str, options: dict) -> int:
    from bridge.adapters.wandb.log import WandbLog

    (path,) = Path(loc).rglob("*.wandb")
    n = 0
    loads = json.loads
    for rec in WandbLog(path).records():  # bridge's framing; wandb's protobuf Record
        if rec.WhichOneof("record_type") != "history":
            continue
        for item in rec.history.item:
            key = item.key or "/".join(item.nested_key)
            value = loads(item.value_json)
            if not key.startswith("_") and isinstance(value, (int, float)):
                n += 1
    return n


def _c_tensorboard(loc: str, options: dict) -> int:
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    n = 0
    for f in sorted(Path(loc).rglob("events.out.tfevents.*")):
        for ev in LegacyEventFileLoader(str(f)).Load():
            for v in ev.summary.value:
                if v.WhichOneof("value") == "simple_value":
                    _ = (v.tag, ev.step, ev.wall_time, v.simple_value)
                    n += 1
    return n


def _c_comet(loc: str, options: dict) -> int:
    import zipfile

    from bridge.adapters.comet.names import AUTO_METRICS

    n = 0
    for z in sorted(Path(loc).glob("*.zip")):
        with zipfile.ZipFile(z) as zf, zf.open("messages.json") as raw:
            for line in raw:
                msg = json.loads(line)
                if msg.get("type") == "metric_msg":
                    m = msg["payload"]["metric"]
                    if m["metricName"] in AUTO_METRICS:  # comet_ml's own; not imported
                        continue
                    _ = (m["metricName"], m.get("step"), msg["payload"].get("local_timestamp"),
                         float(m["metricValue"]))
                    n += 1
    return n


def _c_mlflow(loc: str, options: dict) -> int:
    import sqlite3

    n = 0
    with sqlite3.connect(f"file:{loc.removeprefix('sqlite:///')}?mode=ro", uri=True) as c:
        cur = c.execute("SELECT key, value, timestamp, step FROM metrics")
        while rows := cur.fetchmany(10_000):
            n += len(rows)
    return n


# The server sets no upper bound on GetMetricHistory's ``max_results`` (MLflow 3.17): one
# page holds a whole key here. On 100,000 points, pages of 2,500 / 10,000 / 25,000 / a
# key read at 15.3k / 16.9k / 17.4k / 17.5k points/s: beyond 10,000 the size hardly matters.
SERVER_CEILING_PAGE = 1_000_000


def _c_mlflow_server(loc: str, options: dict) -> int:
    """``MlflowClient(url)``: the experiment by name, its runs (``search_runs``), then for each
    metric key of each run (``run.data.metrics``) its whole history, page by page, with the
    REST store's ``get_metric_history(run_id, key, max_results, page_token)`` (what
    ``MlflowClient.get_metric_history`` loops over, at 25,000 a page; the importer calls the
    same with its ``page_size``), every point a ``Metric`` (MLflow's JSON → protobuf →
    entity), its key, step, timestamp and value read. Pages of ``SERVER_CEILING_PAGE``: one a
    key here, which costs this reader ~260 MB at 1,000,000 points (not a target of it)."""
    from mlflow import MlflowClient

    client = MlflowClient(loc)
    store = client._tracking_client.store  # the REST store: the only way to set a page size
    n = 0
    for name in options["experiments"]:
        exp = client.get_experiment_by_name(name)
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            rid = run.info.run_id
            for key in sorted(run.data.metrics):
                token = None
                while True:
                    page = store.get_metric_history(rid, key, max_results=SERVER_CEILING_PAGE,
                                                    page_token=token)
                    for m in page:
                        _ = (m.key, m.step, m.timestamp, m.value)
                        n += 1
                    token = page.token
                    if not token:
                        break
    return n


def _c_neptune_scale(loc: str, options: dict) -> int:
    import sqlite3

    from neptune_api.proto.neptune_pb.ingest.v1 import common_pb2 as pb

    n = 0
    for f in sorted(Path(loc).rglob("run_operations.sqlite3")):
        with sqlite3.connect(f"file:{f}?mode=ro", uri=True) as c:
            cur = c.execute("SELECT operation_type, operation FROM run_operations "
                            "ORDER BY sequence_id")
            for kind, blob in cur:
                if kind != 0:
                    continue
                op = pb.UpdateRunSnapshot.FromString(blob)
                step = op.step.whole + op.step.micro / 1e6
                ts = op.timestamp.seconds * 1000 + op.timestamp.nanos // 1_000_000
                for key, v in op.append.items():
                    _ = (key, step, ts, v.float64)
                    n += 1
    return n


def _c_trackio(loc: str, options: dict) -> int:
    """trackio's rows as trackio's own ``SQLiteStorage`` decodes them: ``orjson.loads``."""
    import sqlite3

    import orjson

    n = 0
    for f in sorted(Path(loc).glob("*.db")):
        with sqlite3.connect(f"file:{f}?mode=ro", uri=True) as c:
            for step, ts, metrics in c.execute("SELECT step, timestamp, metrics FROM metrics"):
                for key, v in orjson.loads(metrics).items():
                    if isinstance(v, (int, float)):
                        n += 1
    return n


# source -> (writer, ceiling, what the ceiling reads with)
SOURCES: dict[str, tuple[Callable[..., dict], Callable[[str, dict], int], str]] = {
    "neptune": (_w_neptune, _c_neptune, "pyarrow `iter_batches` + `to_pylist`"),
    "wandb": (_w_wandb, _c_wandb, "LevelDB framing + wandb protobuf `Record` + `json.loads`"),
    "tensorboard": (_w_tensorboard, _c_tensorboard, "tensorboard `LegacyEventFileLoader`"),
    "comet": (_w_comet, _c_comet, "`zipfile` + `json.loads` of `messages.json`"),
    "mlflow": (_w_mlflow, _c_mlflow, "`sqlite3` `SELECT … FROM metrics`"),
    "mlflow-runs": (_w_mlflow_runs, _c_mlflow, "`sqlite3` `SELECT … FROM metrics`"),
    "mlflow-server": (_w_mlflow_server, _c_mlflow_server,
                      "`MlflowClient(url)` REST `get_metric_history`, paged"),
    "neptune-scale": (_w_neptune_scale, _c_neptune_scale,
                      "`sqlite3` + neptune_api protobuf `UpdateRunSnapshot`"),
    "trackio": (_w_trackio, _c_trackio, "`sqlite3` + `orjson.loads` of `metrics` rows"),
}


# Modules both the ceiling and the import load before their clock starts: a module's import
# is a fixed cost, not throughput, and its memory is not the import's growth.
PRELOAD: dict[str, tuple[str, ...]] = {
    "neptune": ("pyarrow", "pyarrow.parquet", "pyarrow.compute"),
    "wandb": ("wandb.proto.wandb_internal_pb2",),
    "tensorboard": ("tensorboard.backend.event_processing.event_file_loader",
                    "tensorboard.compat.proto.event_pb2"),
    "comet": ("zipfile",),
    "mlflow": ("sqlite3", "mlflow", "mlflow.store.tracking.sqlalchemy_store"),
    "mlflow-runs": ("sqlite3", "mlflow", "mlflow.store.tracking.sqlalchemy_store"),
    "mlflow-server": ("mlflow", "mlflow.store.tracking.rest_store", "requests"),
    "neptune-scale": ("sqlite3", "neptune_api.proto.neptune_pb.ingest.v1.common_pb2"),
    "trackio": ("sqlite3", "orjson"),
}


@contextlib.contextmanager
def _served_mlflow(d: Path) -> Iterator[tuple[str, ...]]:
    """A real ``mlflow server`` for the length of the block (``tests/mlflow_server.py``, as
    ``bench_sync_mlflow`` starts it: its own process group, killed whole on the way out).
    SIGTERM to this process unwinds the block too, so the server never outlives the bench."""
    if str(_REPO / "tests") not in sys.path:
        sys.path.insert(0, str(_REPO / "tests"))
    from mlflow_server import MlflowServer  # type: ignore[import-not-found]

    def _term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _term)
    server = MlflowServer(d / "server")
    try:
        server.start()  # stops what it started and raises RuntimeError if it cannot
        yield (server.url,)
    finally:
        try:
            server.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)


# source -> bridge's importer of it, where the two names differ
IMPORTER = {"mlflow-server": "mlflow", "mlflow-runs": "mlflow"}

# source -> the service its writer, ceiling and import share; its address is the writer's
# last argument and the corpus's location.
SERVED: dict[str, Callable[[Path], ContextManager[tuple[str, ...]]]] = {
    "mlflow-server": _served_mlflow,
}
OPT_IN = ("mlflow-server", "mlflow-runs")  # measured only when named with --only (docstring)


def _preload(source: str) -> None:
    import importlib

    for name in PRELOAD[source]:
        importlib.import_module(name)


def _rss_now() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _ceiling(source: str, loc: str, options: dict) -> dict:
    fn = SOURCES[source][1]
    _preload(source)
    rss0 = _rss_now()
    t0 = time.perf_counter()
    n = fn(loc, options)
    wall = time.perf_counter() - t0
    return {"points": n, "wall_s": wall, "rss_growth_mb": max(0, _maxrss() - rss0) / 2**20}


def _import(source: str, loc: str, options: dict, spool: str, profile: str | None = None) -> dict:
    from bridge.importers import make_importer
    from bridge.importers.sink import import_runs

    _preload(source)
    importer = make_importer(IMPORTER.get(source, source), loc, **options)
    rss0 = _rss_now()
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    runs = import_runs(importer, Path(spool))
    wall = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile)
    points = sum(sum(r.points.values()) for r in runs)
    return {"points": points, "runs": len(runs), "wall_s": wall,
            "rss_before_mb": rss0 / 2**20, "peak_rss_mb": _maxrss() / 2**20,
            "rss_growth_mb": max(0, _maxrss() - rss0) / 2**20}


class _Synthetic:
    """An importer of one run of ready-made metric events: ``import_runs`` of it is the
    spool sink's own cost, the most any importer can reach."""

    name = "synthetic"

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def runs(self) -> Any:
        from bridge.importers import SourceRun

        yield SourceRun("synthetic", "bench-1", "bench", name="bench-import", start_ms=T0_MS)

    def events(self, run: Any) -> Any:
        from bridge.importers import ImportEvent

        for i in range(self.steps):
            ts = _ms(i)
            for j, k in enumerate(KEYS):
                yield ImportEvent("metric", k, ts, step=i, value=_value(i, j))


class _Ready(_Synthetic):
    """The synthetic run's events made beforehand: ``import_runs`` of it is the sink's share
    of the synthetic import, the rest is making the ``ImportEvent``s."""

    def __init__(self, steps: int) -> None:
        super().__init__(steps)
        self.ready = list(_Synthetic.events(self, None))

    def events(self, run: Any) -> Any:
        return iter(self.ready)


class _SyntheticPoints(_Synthetic):
    """The synthetic run through ``stream(run)``: its points as ``MetricPoints`` (what the
    W&B importer hands the sink), made as they are made."""

    def stream(self, run: Any) -> Any:
        from bridge.adapters.importing import POINTS_BATCH, take_points

        flat: list[Any] = []
        point = flat.extend
        for i in range(self.steps):
            ts = _ms(i)
            for j, k in enumerate(KEYS):
                point((k, i, ts, _value(i, j)))
            if len(flat) >= POINTS_BATCH:
                yield take_points(flat)
        if flat:
            yield take_points(flat)


READY_POINTS = 200_000  # held in memory at once: the split is measured on at most these


def _sink(points: int, spool: str) -> dict:
    from bridge.importers.sink import import_runs

    rss0 = _rss_now()
    t0 = time.perf_counter()
    runs = import_runs(_Synthetic(points // len(KEYS)), Path(spool))
    wall = time.perf_counter() - t0
    out = {"points": sum(sum(r.points.values()) for r in runs), "wall_s": wall,
           "rss_growth_mb": max(0, _maxrss() - rss0) / 2**20}
    steps = min(points, READY_POINTS) // len(KEYS)
    t0 = time.perf_counter()
    ready = _Ready(steps)
    make = time.perf_counter() - t0
    t0 = time.perf_counter()
    import_runs(ready, Path(spool + "-ready"))
    out.update(ready_points=steps * len(KEYS), make_events_s=make,
               ready_wall_s=time.perf_counter() - t0)
    t0 = time.perf_counter()
    runs = import_runs(_SyntheticPoints(points // len(KEYS)), Path(spool + "-points"))
    out.update(stream_points=sum(sum(r.points.values()) for r in runs),
               stream_wall_s=time.perf_counter() - t0)
    out.update(_writer_alone(steps, Path(spool + "-writer")))
    return out


def _writer_alone(steps: int, spool: Path) -> dict:
    """The spool writer alone on points made beforehand (a flat list): its ``INSERT``s, then
    its commit (fsync, rename; the ``(run_id, seq)`` index is kept as the rows go in)."""
    from bridge.spool.imported import ImportedRunWriter

    flat: list[Any] = []
    for i in range(steps):
        ts = _ms(i)
        for j, k in enumerate(KEYS):
            flat.extend((k, i, ts, _value(i, j)))
    (spool / "spool").mkdir(parents=True)
    out = ImportedRunWriter(spool, spool / "spool" / "writer.db", {"node": "bench"})
    out.run_row("0" * 32, "bench", None, None, None, "[]", T0_MS, None, "FINISHED")
    t0 = time.perf_counter()
    columns = out.points_of("0" * 32)  # keys, steps, times, values
    for i in range(0, len(flat), 20_000):
        part = flat[i:i + 20_000]
        for j, column in enumerate(columns):
            column.extend(part[j::4])
        out.flush_rows()
    t1 = time.perf_counter()
    out.commit()
    return {"writer_points": steps * len(KEYS), "writer_insert_s": t1 - t0,
            "writer_commit_s": time.perf_counter() - t1}


def _top(prof: str, limit: int = 15) -> str:
    """The ``limit`` functions of bridge's own code with the most cumulative time."""
    import io
    import pstats

    import bridge

    root = str(Path(bridge.__file__).resolve().parent.parent)
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    st.sort_stats("cumulative").print_stats(
        rf"^{root}/(bridge|adapters|agent)/", limit)
    return out.getvalue()


# -- driver ---------------------------------------------------------------------------------


def measure_source(tmp: Path, source: str, points: int, repeat: int, budget: float,
                   profile: Path | None = None) -> dict:
    writer = SOURCES[source][0]
    d = tmp / source
    d.mkdir()
    steps = points // len(KEYS)
    serve = SERVED.get(source)
    with serve(d) if serve is not None else contextlib.nullcontext(()) as service:
        t0 = time.monotonic()
        corpus = run_in_child(writer, str(d), steps, budget, *service, timeout=budget + 900)
        corpus["write_s"] = time.monotonic() - t0
        loc, options = corpus["location"], corpus["options"]
        ceil, imp = [], []
        for r in range(repeat):
            ceil.append(run_in_child(_ceiling, source, loc, options, timeout=1800))
            spool = tmp / f"spool-{source}-{r}"
            imp.append(run_in_child(_import, source, loc, options, str(spool), timeout=1800))
            shutil.rmtree(spool, ignore_errors=True)
        if profile is not None:  # one more import, under cProfile, not part of the figures
            profile.mkdir(parents=True, exist_ok=True)
            prof = profile / f"{source}.prof"
            spool = tmp / f"spool-{source}-profile"
            run_in_child(_import, source, loc, options, str(spool), str(prof), timeout=3600)
            shutil.rmtree(spool, ignore_errors=True)
            (profile / f"{source}.txt").write_text(_top(str(prof)))
    best_c = min(ceil, key=lambda x: x["wall_s"])
    best_i = min(imp, key=lambda x: x["wall_s"])
    shutil.rmtree(d, ignore_errors=True)
    return {"corpus": corpus, "ceiling": best_c, "import": best_i, "ceiling_all": ceil,
            "import_all": imp, "reduced": corpus["points"] < points}


def render(m: dict, res: dict[str, dict], points: int, repeat: int,
           sink: dict | None = None) -> str:
    lines = header("Import throughput beside each source's raw read", m)
    many = (f" (`mlflow-runs`: the same points as {MANY_RUNS} runs of "
            f"{points // 4 // MANY_RUNS:,} steps in one store)" if "mlflow-runs" in res else "")
    lines += [f"One run of {points:,} metric points a source (4 keys × {points // 4:,} steps)"
              f"{many}, written by the vendor's own writer; ceiling and `bridge import` "
              f"alternate, each in a fresh process, best of {repeat}. Points/s counts metric "
              "points.", "",
              "| source | corpus (writer time) | ceiling: read with | ceiling | "
              "`bridge import` | ratio | import RSS growth |",
              "|---|---|---|---|---|---|---|"]
    targets = []
    for source, r in res.items():
        if "error" in r:
            lines.append(f"| {source} | — | {SOURCES[source][2]} | — | — | — | "
                         f"not measured: {r['error']} |")
            targets.append(f"- Target {source}: not measured — **MISSED**")
            continue
        c, i, w = r["ceiling"], r["import"], r["corpus"]
        c_rate = c["points"] / c["wall_s"]
        i_rate = i["points"] / i["wall_s"]
        ratio = i_rate / c_rate
        note = " (reduced: writer budget)" if r["reduced"] else ""
        lines.append(
            f"| {source} | {w['points']:,}{note} ({w['write_s']:.0f} s) | {SOURCES[source][2]} | "
            f"{fmt_rate(c_rate)}/s ({c['wall_s']:.2f} s) | {fmt_rate(i_rate)}/s "
            f"({i['wall_s']:.2f} s) | {ratio:.2f}× | {i['rss_growth_mb']:.0f} MB |")
        if i["points"] != w["points"] or c["points"] != w["points"]:
            lines.append(f"| | ⚠ points written {w['points']:,}, ceiling read "
                         f"{c['points']:,}, imported {i['points']:,} | | | | | |")
        targets.append(f"- Target {source} import ≥ {RATIO_TARGET}× its raw read ceiling: "
                       f"{ratio:.2f}× — **{mark(ratio >= RATIO_TARGET)}**")
        grew = i["rss_growth_mb"]
        targets.append(f"- Target {source} import peak RSS growth ≤ {RSS_TARGET_MB:.0f} MB: "
                       f"{grew:.0f} MB — **{mark(grew <= RSS_TARGET_MB)}**")
    if sink is not None:
        rate = sink["points"] / sink["wall_s"]
        lines += ["", f"The spool sink alone (`import_runs` of a synthetic importer that yields "
                  f"ready-made metric `ImportEvent`s, {sink['points']:,} points): "
                  f"{fmt_rate(rate)}/s ({sink['wall_s']:.2f} s), RSS growth "
                  f"{sink['rss_growth_mb']:.0f} MB: no import can be faster, so a source whose "
                  f"ceiling is above {fmt_rate(rate / RATIO_TARGET)}/s cannot reach "
                  f"{RATIO_TARGET}× without a faster sink."]
        if "ready_wall_s" in sink:
            n = sink["ready_points"]
            lines += ["", f"Of that ({n:,} points): making the `ImportEvent`s "
                      f"{fmt_rate(n / sink['make_events_s'])}/s "
                      f"({sink['make_events_s']:.2f} s), `import_runs` of the events made "
                      f"beforehand {fmt_rate(n / sink['ready_wall_s'])}/s "
                      f"({sink['ready_wall_s']:.2f} s)."]
        if "stream_wall_s" in sink:
            n = sink["stream_points"]
            lines += ["", f"The same run handed over as `MetricPoints` (an importer's "
                      f"`stream(run)`, as the W&B importer does; trackio and neptune-scale "
                      f"hand `MetricRows`, a step and a time a row; MLflow's sqlite store "
                      f"hands `SqlPoints`, read from the store a block at a time), {n:,} "
                      f"points: {fmt_rate(n / sink['stream_wall_s'])}/s "
                      f"({sink['stream_wall_s']:.2f} s)."]
        if "writer_insert_s" in sink:
            n, ins, com = (sink["writer_points"], sink["writer_insert_s"],
                           sink["writer_commit_s"])
            lines += ["", f"The spool writer alone on {n:,} points made beforehand: its "
                      f"`INSERT`s (the `(run_id, seq)` index kept as they go) {ins:.2f} s "
                      f"({fmt_rate(n / ins)}/s), its commit (fsync, rename) {com:.2f} s; "
                      f"{fmt_rate(n / (ins + com))}/s together."]
    lines += [""] + targets + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_import",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 points a source")
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None, help="best of R (default 2; quick 1)")
    ap.add_argument("--write-budget", type=float, default=150.0,
                    help="seconds a writer may take before it stops at fewer points")
    ap.add_argument("--only", action="append", choices=list(SOURCES),
                    help="a source (repeatable; default: all but "
                         + ", ".join(OPT_IN) + ")")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--profile", metavar="DIR", type=Path,
                    help="also run one import per source under cProfile: DIR/<source>.prof "
                         "and DIR/<source>.txt (top 15 of bridge's code by cumulative time)")
    args = ap.parse_args(argv)
    points = args.points or (100_000 if args.quick else 1_000_000)
    repeat = args.repeat or (1 if args.quick else 2)
    m = meta("bench.bench_import", ("pyarrow", "wandb", "tensorboard", "comet_ml", "mlflow",
                                     "neptune-scale", "trackio"))
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as d:
        sink = min((run_in_child(_sink, points, str(Path(d) / f"sink-{r}"), timeout=1800)
                    for r in range(repeat)), key=lambda x: x["wall_s"])
        chosen = args.only or [s for s in SOURCES if s not in OPT_IN]
        for source in SOURCES:
            if source not in chosen:
                continue
            try:
                res[source] = measure_source(Path(d), source, points, repeat, args.write_budget,
                                             args.profile)
            except RuntimeError as exc:  # an SDK missing or failing: say so, go on
                res[source] = {"error": str(exc).strip().splitlines()[-1]}
    print(render(m, res, points, repeat, sink))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": m, "points": points, "repeat": repeat,
                                               "sink": sink, "results": res}, indent=2,
                                              default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
