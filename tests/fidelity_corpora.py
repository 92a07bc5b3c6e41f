"""Small source corpora for the migration fidelity matrix, written by each vendor's own SDK.

Every builder writes one run into a directory with the source system's own writer (MLflow's
fluent API, the wandb and comet_ml SDKs in offline mode, the neptune client in offline
mode, pyarrow in neptune-exporter's schema, TensorBoard's writer, the neptune-scale client
and the clearml SDK offline, the trackio package) and returns a
:class:`Corpus`: how to import it (``bridge.importers.make_importer`` arguments) and the
facts the source itself reports (its id, name, start time).

The same shape everywhere, as far as each source allows: params (nested where supported),
one tag, two metric series ``loss`` and ``acc`` of 50 points with explicit steps and
timestamps (``acc`` ends with a step going backwards where the source accepts one), a
summary value, and one file. SDK writers run in child processes: vendor SDKs keep global
state (threads, environment, active runs) that must not leak into the test process.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from bridge.verify import Snapshot

__all__ = ["BUILDERS", "Corpus", "FILE_BYTES", "LINKED_BYTES", "N_POINTS", "SOURCES", "T0",
           "acc_steps", "expected_snapshot"]

T0 = 1_700_000_000_000  # ms; explicit timestamps are T0 + 1000 * i
N_POINTS = 50
FILE_BYTES = b"fidelity corpus file\n" + bytes(range(256))
LINKED_BYTES = b"a file W&B's run.save() links into the run directory\n"


def acc_steps(backwards: bool) -> list[int]:
    """Steps of ``acc``: 0..49; with ``backwards`` the last two swapped (…, 47, 49, 48)."""
    steps = list(range(N_POINTS))
    if backwards:
        steps[-2], steps[-1] = steps[-1], steps[-2]
    return steps


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    """Nested params as ``bridge.verify`` flattens them (dotted keys, JSON leaves)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected_snapshot(metrics: dict[str, list[tuple[int, int, float]]], params: dict[str, Any],
                      tags: dict[str, str], summary: dict[str, Any], files: list[bytes],
                      name: str, start_ms: int | None) -> Snapshot:
    """What the source holds, in the shape ``bridge.verify.compare`` reads."""
    snap = Snapshot(metrics={k: list(v) for k, v in metrics.items()}, tags=dict(tags),
                    artifacts={_sha(b) for b in files}, name=name, start_ms=start_ms)
    _flat("", params, snap.params)
    _flat("", summary, snap.summary)
    return snap


@dataclass
class Corpus:
    """One source run ready for ``make_importer(source, location, **options)``.

    ``expected`` is the run as the source system holds it (in bridge's step units);
    ``source_id`` its id there; ``explicit_timestamps`` False when the source stamps points
    with its own clock (then the import's timestamps cannot be checked against the writer).
    """

    source: str  # the importer name
    location: str
    options: dict[str, Any]
    source_id: str
    expected: Snapshot
    explicit_timestamps: bool = True


def _run(code: str, args: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        raise RuntimeError(f"corpus writer failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def _loss(ts: Callable[[int], int] = lambda i: T0 + 1000 * i,
          step: Callable[[int], int] = lambda i: i) -> list[tuple[int, int, float]]:
    return [(step(i), ts(i), 1.0 / (i + 1)) for i in range(N_POINTS)]


def _acc(backwards: bool, ts: Callable[[int], int] = lambda i: T0 + 1000 * i + 500,
         step: Callable[[int], int] = lambda s: s) -> list[tuple[int, int, float]]:
    return [(step(s), ts(i), s / 100) for i, s in enumerate(acc_steps(backwards))]


NESTED = {"lr": 0.01, "opt": {"name": "adam", "beta": 0.9}}


def _facts(out: str) -> dict[str, Any]:
    """The writer's last stdout line is a JSON object of facts (SDKs print before it)."""
    return json.loads(out.strip().splitlines()[-1])


# -- MLflow: a sqlite store filled with the fluent API ----------------------------------

_MLFLOW = textwrap.dedent("""
    import json, os, sys, mlflow
    uri, work, T0, N = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    acc = json.loads(sys.argv[5])
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("fidelity")
    with mlflow.start_run(run_name="mlflow-run") as run:
        mlflow.log_params({"lr": 0.01, "opt": "adam", "layers": [64, 32]})
        mlflow.set_tag("team", "vision")
        for i in range(N):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i, timestamp=T0 + 1000 * i)
        for i, s in enumerate(acc):
            mlflow.log_metric("acc", s / 100, step=s, timestamp=T0 + 1000 * i + 500)
        path = os.path.join(work, "weights.bin")
        open(path, "wb").write(bytes.fromhex(sys.argv[6]))
        mlflow.log_artifact(path)
        rid = run.info.run_id
    info = mlflow.MlflowClient(uri).get_run(rid).info
    print(json.dumps({"source_id": rid, "name": "mlflow-run", "start_ms": info.start_time}))
""")


def build_mlflow(work: Path) -> Corpus:
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'source.db'}"
    env = dict(os.environ, MLFLOW_ENABLE_ASYNC_LOGGING="false", GIT_PYTHON_REFRESH="quiet",
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    out = _run(_MLFLOW, [uri, str(work), str(T0), str(N_POINTS), json.dumps(acc_steps(True)),
                         FILE_BYTES.hex()], env, work)
    facts = _facts(out)
    expected = expected_snapshot(
        {"loss": _loss(), "acc": _acc(True)},
        {"lr": "0.01", "opt": "adam", "layers": "[64, 32]"},  # MLflow holds strings
        {"team": "vision"}, {}, [FILE_BYTES], "mlflow-run", facts["start_ms"])
    return Corpus("mlflow", uri, {"experiments": ["fidelity"]}, facts["source_id"], expected)


# -- W&B: an offline run written by the wandb SDK ---------------------------------------

_WANDB = textwrap.dedent("""
    import json, sys, wandb
    out, T0, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    settings = wandb.Settings(silent=True, console="off", disable_git=True, disable_code=True,
        x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True,
        x_save_requirements=False)
    run = wandb.init(project="fidelity", id="fid00001", name="wandb-run", mode="offline",
        dir=out, tags=["baseline"], config={"lr": 0.01, "opt": {"name": "adam", "beta": 0.9}},
        settings=settings)
    # W&B refuses a step lower than the last one (it drops the row with a warning), so
    # both series advance together; `_timestamp` in a row is kept as the point's time.
    for i in range(N):
        run.log({"loss": 1.0 / (i + 1), "acc": i / 100, "_timestamp": (T0 + 1000 * i) / 1000},
                step=i)
    with open(out + "/weights.bin", "wb") as f:
        f.write(bytes.fromhex(sys.argv[4]))
    art = wandb.Artifact("weights", type="model")
    art.add_file(out + "/weights.bin", name="weights.bin")
    run.log_artifact(art)
    # wandb.save of a file outside the run directory: the SDK links it into files/.
    with open(out + "/linked.txt", "wb") as f:
        f.write(bytes.fromhex(sys.argv[5]))
    run.save(out + "/linked.txt", base_path=out, policy="now")
    run.summary["best"] = 0.25
    start_ms = int(run.start_time * 1000)
    run.finish()
    print(json.dumps({"source_id": "fid00001", "name": "wandb-run", "start_ms": start_ms}))
""")


def build_wandb(work: Path) -> Corpus:
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(work),
               WANDB_CONFIG_DIR=str(work / "cfg"), WANDB_CACHE_DIR=str(work / "cache"),
               WANDB_DATA_DIR=str(work / "data"), WANDB_ARTIFACT_DIR=str(work / "arts"),
               HOME=str(work / "home"))
    env.pop("WANDB_API_KEY", None)
    out = _run(_WANDB, [str(work), str(T0), str(N_POINTS), FILE_BYTES.hex(), LINKED_BYTES.hex()],
               env, work)
    facts = _facts(out)
    same_row = lambda i: T0 + 1000 * i  # noqa: E731 - both series share each history row
    expected = expected_snapshot(
        {"loss": _loss(), "acc": _acc(False, ts=same_row)}, NESTED, {"baseline": ""},
        {"best": 0.25}, [FILE_BYTES, LINKED_BYTES], "wandb-run", facts["start_ms"])
    return Corpus("wandb", str(work / "wandb"), {}, facts["source_id"], expected)


# -- Comet: an offline archive written by comet_ml ---------------------------------------

_COMET = textwrap.dedent("""
    import json, sys, comet_ml
    directory, N = sys.argv[1], int(sys.argv[2])
    acc = json.loads(sys.argv[3])
    quiet = dict(log_code=False, log_graph=False, parse_args=False, display_summary_level=0,
        log_git_metadata=False, log_git_patch=False, log_env_details=False, log_env_gpu=False,
        log_env_host=False, log_env_cpu=False, log_env_network=False, log_env_disk=False,
        auto_output_logging=False, auto_param_logging=False, auto_metric_logging=False)
    cfg = comet_ml.ExperimentConfig(offline_directory=directory, **quiet)
    exp = comet_ml.start(project_name="fidelity", online=False, experiment_config=cfg)
    exp.set_name("comet-run")
    exp.log_parameters({"lr": 0.01, "opt": {"name": "adam", "beta": 0.9}})
    exp.add_tags(["baseline"])
    # comet_ml's public log_metric stamps each point with the call time: no explicit time.
    for i in range(N):
        exp.log_metric("loss", 1.0 / (i + 1), step=i)
    for s in acc:
        exp.log_metric("acc", s / 100, step=s)
    exp.log_other("best", 0.25)
    exp.log_asset_data(bytes.fromhex(sys.argv[4]), name="weights.bin")
    key = exp.get_key()
    exp.end()
    print(json.dumps({"source_id": key, "name": "comet-run", "start_ms": None}))
""")


def build_comet(work: Path) -> Corpus:
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, COMET_API_KEY="dummy", COMET_ERROR_TRACKING_ENABLE="false",
               HOME=str(work / "home"))
    for var in ("COMET_OFFLINE_DIRECTORY", "COMET_PROJECT_NAME", "COMET_WORKSPACE"):
        env.pop(var, None)
    out = _run(_COMET, [str(work / "archives"), str(N_POINTS), json.dumps(acc_steps(True)),
                        FILE_BYTES.hex()], env, work)
    facts = _facts(out)
    (archive,) = (work / "archives").glob("*.zip")
    with zipfile.ZipFile(archive) as zf:
        start_ms = json.loads(zf.read("experiment.json"))["start_time"]
    # comet_ml stamps points itself: the expected times are placeholders, not checked.
    expected = expected_snapshot(
        {"loss": _loss(), "acc": _acc(True)}, NESTED, {"baseline": ""}, {"best": 0.25},
        [FILE_BYTES], "comet-run", start_ms)
    return Corpus("comet", str(work / "archives"), {}, facts["source_id"], expected,
                  explicit_timestamps=False)


# -- Neptune: an offline run written by the neptune client --------------------------------

_NEPTUNE = textwrap.dedent("""
    import json, sys, neptune
    from neptune.types import File
    T0, N = int(sys.argv[1]), int(sys.argv[2])
    run = neptune.init_run(mode="offline", name="neptune-run", tags=["baseline"],
        capture_stdout=False, capture_stderr=False, capture_hardware_metrics=False,
        capture_traceback=False, git_ref=False, source_files=[])
    run["parameters"] = {"lr": 0.01, "opt": {"name": "adam", "beta": 0.9}}
    # Neptune refuses a step that is not higher than the last one: both series advance.
    for i in range(N):
        run["train/loss"].append(1.0 / (i + 1), step=i, timestamp=(T0 + 1000 * i) / 1000)
        run["train/acc"].append(i / 100, step=i, timestamp=(T0 + 1000 * i + 500) / 1000)
    run["eval/best"] = 0.25
    run["data/weights"].upload(File.from_content(bytes.fromhex(sys.argv[3]), extension="bin"))
    run.stop()
""")


def build_neptune_offline(work: Path) -> Corpus:
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, NEPTUNE_DATA_DIRECTORY=str(work / ".neptune"))
    for var in ("NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT"):
        env.pop(var, None)
    _run(_NEPTUNE, [str(T0), str(N_POINTS), FILE_BYTES.hex()], env, work)
    (run_dir,) = (work / ".neptune" / "offline").glob("run__*")
    uuid = run_dir.name.split("__")[1]  # offline runs get their id when `neptune sync` uploads
    expected = expected_snapshot(
        {"train/loss": _loss(), "train/acc": _acc(False)}, NESTED, {"baseline": ""},
        {"eval/best": 0.25}, [FILE_BYTES], "neptune-run", None)  # creation time: the clock
    return Corpus("neptune", str(work), {"project": "ws/fidelity"}, uuid, expected)


# -- Neptune: a neptune-exporter Parquet export (pyarrow, the exporter's schema) --------


def _parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
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


def build_neptune_parquet(work: Path) -> Corpus:
    """Decimal steps: ``loss`` at 0.5, 1.0, …, ``acc`` at 0, 1, … (the run's multiplier: 10)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bridge.adapters.neptune.importer import sanitize_path_part

    schema = _parquet_schema()
    project, run = "ws/fidelity", "FID-1"

    def utc(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, timezone.utc)

    data = work / "exports" / "data" / sanitize_path_part(project)
    files = work / "exports" / "files" / sanitize_path_part(project) / run
    data.mkdir(parents=True)
    files.mkdir(parents=True)
    (files / "weights.bin").write_bytes(FILE_BYTES)
    rows: list[dict[str, Any]] = [
        dict(attribute_path="sys/name", attribute_type="string", string_value="parquet-run"),
        dict(attribute_path="sys/tags", attribute_type="string_set", string_set_value=["baseline"]),
        dict(attribute_path="sys/creation_time", attribute_type="datetime", datetime_value=utc(T0)),
        dict(attribute_path="parameters/lr", attribute_type="float", float_value=0.01),
        dict(attribute_path="parameters/opt/name", attribute_type="string", string_value="adam"),
        dict(attribute_path="parameters/opt/beta", attribute_type="float", float_value=0.9),
        dict(attribute_path="eval/best", attribute_type="float", float_value=0.25),
        dict(attribute_path="data/weights", attribute_type="file",
             file_value={"path": f"{run}/weights.bin"}),
    ]
    rows += [dict(attribute_path="train/loss", attribute_type="float_series",
                  step=Decimal(i + 1) / 2, timestamp=utc(T0 + 1000 * i), float_value=1.0 / (i + 1))
             for i in range(N_POINTS)]
    rows += [dict(attribute_path="train/acc", attribute_type="float_series", step=Decimal(i),
                  timestamp=utc(T0 + 1000 * i + 500), float_value=i / 100)
             for i in range(N_POINTS)]
    full = []
    for r in rows:
        row = {name: None for name in schema.names}
        row.update(project_id=project, run_id=run, **r)
        full.append(row)
    half = len(full) // 2  # two parts, as the exporter writes a long run
    pq.write_table(pa.Table.from_pylist(full[:half], schema=schema), data / f"{run}_part_0.parquet")
    pq.write_table(pa.Table.from_pylist(full[half:], schema=schema), data / f"{run}_part_1.parquet")
    times10 = lambda s: s * 10  # noqa: E731 - the documented multiplier for 0.5 steps
    expected = expected_snapshot(
        {"train/loss": _loss(ts=lambda i: T0 + 1000 * i, step=lambda i: 5 * (i + 1)),
         "train/acc": _acc(False, step=times10)}, NESTED, {"baseline": ""},
        {"eval/best": 0.25}, [FILE_BYTES], "parquet-run", T0)
    return Corpus("neptune", str(work / "exports" / "data"), {}, run, expected)


# -- TensorBoard: event files as PyTorch's SummaryWriter writes them -------------------


def build_tensorboard(work: Path) -> Corpus:
    """Scalars with explicit steps and wall times, hparams in the same run; no tags,
    summaries or files exist in TensorBoard's format. Written with the ``tensorboard``
    package's own event writer, in the records torch's SummaryWriter writes (tb_events)."""
    import numpy as np

    from tb_events import LegacyWriter

    # A long directory name on purpose: the import records the absolute log dir path in
    # two tags, and W&B's 64-character label limit then refuses both, whatever the base.
    logdir = work / "tensorboard-event-files-written-by-torch-summary-writer"
    w = LegacyWriter(str(logdir / "tb-run"))
    w.add_hparams({"lr": 0.01, "opt": "adam"}, [], walltime=T0 / 1000)
    for i in range(N_POINTS):
        w.add_scalar("loss", 1.0 / (i + 1), i, walltime=(T0 + 1000 * i) / 1000)
    for i, s in enumerate(acc_steps(True)):
        w.add_scalar("acc", s / 100, s, walltime=(T0 + 1000 * i + 500) / 1000)
    w.close()
    f32 = lambda pts: [(s, t, float(np.float32(v))) for s, t, v in pts]  # noqa: E731
    expected = expected_snapshot(
        {"loss": f32(_loss()), "acc": f32(_acc(True))}, {"lr": 0.01, "opt": "adam"}, {}, {}, [],
        "tb-run", None)  # no tags, summaries, files or start time in TensorBoard's format
    return Corpus("tensorboard", str(logdir), {"project": "fidelity"},
                  str((logdir / "tb-run").resolve()), expected)


# -- Neptune 3.x: an operations file written by the neptune-scale client offline ---------

_NEPTUNE_SCALE = textwrap.dedent("""
    import datetime as dt, json, sys
    from neptune_scale import Run
    T0, N, logs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    at = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    with open("weights.bin", "wb") as f:
        f.write(bytes.fromhex(sys.argv[4]))
    with Run(run_id="fid-scale-1", project="ws/fidelity", mode="offline",
             experiment_name="neptune-scale-run", creation_time=at(T0), log_directory=logs,
             enable_console_log_capture=False, source_tracking_config=None) as run:
        # The same attribute layout as the neptune 1.x corpus: configs under parameters/,
        # a single value eval/best (Neptune 3.x has no other kind of summary).
        run.log_configs({"parameters/lr": 0.01, "parameters/opt/name": "adam",
                         "parameters/opt/beta": 0.9, "eval/best": 0.25})
        run.add_tags(["baseline"])
        # Neptune refuses a step that is not higher than the last one: both series advance.
        for i in range(N):
            run.log_metrics({"train/loss": 1.0 / (i + 1)}, step=i, timestamp=at(T0 + 1000 * i))
            run.log_metrics({"train/acc": i / 100}, step=i, timestamp=at(T0 + 1000 * i + 500))
        run.assign_files({"data/weights": "weights.bin"})
    print(json.dumps({"source_id": "fid-scale-1"}))
""")


def build_neptune_scale(work: Path) -> Corpus:
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEPTUNE_")}
    # The client's log directory and the assigned file in one project directory, which is
    # what is imported (a file outside the import location is refused without trusted_roots).
    out = _run(_NEPTUNE_SCALE, [str(T0), str(N_POINTS), str(work / ".neptune"),
                                FILE_BYTES.hex()], env, work)
    facts = _facts(out)
    expected = expected_snapshot(
        {"train/loss": _loss(), "train/acc": _acc(False)}, NESTED, {"baseline": ""},
        {"eval/best": 0.25}, [FILE_BYTES], "neptune-scale-run", T0)
    return Corpus("neptune-scale", str(work), {}, facts["source_id"], expected)


# -- ClearML: an offline session written by the clearml SDK -------------------------------

_CLEARML = textwrap.dedent("""
    import json, socket, sys
    _connect = socket.socket.connect

    def guard(self, address):  # offline: any connection but a local socket is refused
        if self.family != getattr(socket, "AF_UNIX", None):
            raise OSError("network refused by the fidelity corpus")
        return _connect(self, address)

    socket.socket.connect = guard
    from clearml import Task
    N, acc = int(sys.argv[1]), json.loads(sys.argv[2])
    Task.set_offline(offline_mode=True)
    task = Task.init(project_name="fidelity", task_name="clearml-run", tags=["baseline"],
                     auto_connect_frameworks=False, auto_resource_monitoring=False,
                     auto_connect_streams=False)
    task.connect({"lr": 0.01, "opt": {"name": "adam", "beta": 0.9}})
    logger = task.get_logger()
    # report_scalar takes no timestamp: ClearML stamps each event with the call time.
    for i in range(N):
        logger.report_scalar("train", "loss", value=1.0 / (i + 1), iteration=i)
    for s in acc:
        logger.report_scalar("train", "acc", value=s / 100, iteration=s)
    logger.report_single_value("best", 0.25)
    with open("weights.bin", "wb") as f:
        f.write(bytes.fromhex(sys.argv[3]))
    task.upload_artifact("weights", artifact_object="weights.bin", wait_on_upload=True)
    task_id = task.id
    task.close()
    print(json.dumps({"source_id": task_id}))
""")


def build_clearml(work: Path) -> Corpus:
    work.mkdir(parents=True, exist_ok=True)
    (work / "home").mkdir(exist_ok=True)
    # Report from a thread, not the SDK's reporter subprocess (the default on Linux), whose
    # shutdown waits out its 5 s flush period twice; the session written is the same.
    (work / "home" / "clearml.conf").write_text(
        "sdk { development { report_use_subprocess: false } }\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLEARML_", "TRAINS_", "HTTP_PROXY", "HTTPS_PROXY"))}
    env.update(HOME=str(work / "home"), CLEARML_CACHE_DIR=str(work / "cache"),
               CLEARML_OFFLINE_MODE="1", PYTHONUNBUFFERED="1")
    # Output to a file, not a pipe: a helper process the SDK forks may outlive the writer.
    with open(work / "writer.log", "w+") as log:
        proc = subprocess.run([sys.executable, "-c", _CLEARML, str(N_POINTS),
                               json.dumps(acc_steps(True)), FILE_BYTES.hex()], env=env, cwd=work,
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=240)
    text = (work / "writer.log").read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"corpus writer failed:\n{text[-4000:]}")
    facts = _facts(text)
    # ClearML stamps points itself and an offline session has no start time of the writer's.
    expected = expected_snapshot(
        {"train/loss": _loss(), "train/acc": _acc(True)},
        {"General/lr": 0.01, "General/opt/name": "adam", "General/opt/beta": 0.9},
        {"baseline": ""}, {"best": 0.25}, [FILE_BYTES], "clearml-run", None)
    return Corpus("clearml", str(work / "cache"), {}, facts["source_id"], expected,
                  explicit_timestamps=False)


# -- trackio: a project written by the trackio package ------------------------------------

_TRACKIO = textwrap.dedent("""
    import json, sys, trackio
    N, acc = int(sys.argv[1]), json.loads(sys.argv[2])
    run = trackio.init(project="fidelity", name="trackio-run",
                       config={"lr": 0.01, "opt": {"name": "adam", "beta": 0.9}})
    # trackio.log takes a step but no timestamp: trackio stamps each row itself.
    for i in range(N):
        trackio.log({"loss": 1.0 / (i + 1)}, step=i)
    for s in acc:
        trackio.log({"acc": s / 100}, step=s)
    with open("weights.bin", "wb") as f:
        f.write(bytes.fromhex(sys.argv[3]))
    trackio.log_artifact("weights.bin", name="weights", type="model")
    trackio.finish()
    from trackio.sqlite_storage import SQLiteStorage
    (rec,) = [r for r in SQLiteStorage.get_run_records("fidelity") if r["name"] == "trackio-run"]
    print(json.dumps({"source_id": rec["id"]}))
""")


def build_trackio(work: Path) -> Corpus:
    from bridge.adapters.trackio.store import store_env

    work.mkdir(parents=True, exist_ok=True)
    env = store_env(work / "trackio")
    env["HF_HOME"] = str(work / "hf")
    out = _run(_TRACKIO, [str(N_POINTS), json.dumps(acc_steps(True)), FILE_BYTES.hex()], env,
               work)
    facts = _facts(out)
    # trackio has no tags or summaries, stamps rows itself and records its own start time.
    expected = expected_snapshot(
        {"loss": _loss(), "acc": _acc(True)}, NESTED, {}, {}, [FILE_BYTES], "trackio-run", None)
    return Corpus("trackio", str(work / "trackio"), {}, facts["source_id"], expected,
                  explicit_timestamps=False)


BUILDERS: dict[str, Callable[[Path], Corpus]] = {
    "mlflow": build_mlflow,
    "wandb": build_wandb,
    "comet": build_comet,
    "neptune-offline": build_neptune_offline,
    "neptune-parquet": build_neptune_parquet,
    "tensorboard": build_tensorboard,
    "neptune-scale": build_neptune_scale,
    "clearml": build_clearml,
    "trackio": build_trackio,
}
SOURCES = tuple(BUILDERS)
