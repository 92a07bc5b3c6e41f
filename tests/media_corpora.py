"""Small media corpora for the media fidelity matrix, written by each vendor's own SDK.

Every builder writes one run with the source's own writer, in a child process (vendor SDKs
keep global state): three images of key ``samples`` at steps 0, 1, 2 (distinct 8×8 RGB
arrays, :func:`image`), and, where the source has them, a histogram series ``weights`` at the
same steps (:func:`hist_values`), a text series ``status`` and a table ``preds``. It returns a
:class:`MediaCorpus`: how to import it and what the source holds (key -> step -> what).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parent))
from fidelity_corpora import T0, _facts, _parquet_schema, _run  # noqa: E402

__all__ = ["BUILDERS", "MediaCorpus", "STEPS", "hist_values", "image", "pixel_digest"]

STEPS = (0, 1, 2)


def image(step: int) -> Any:
    """The 8×8 RGB uint8 image logged at ``step``."""
    import numpy as np

    a = np.zeros((8, 8, 3), np.uint8)
    a[..., 0] = 30 * step
    a[..., 1] = np.arange(8)[None, :] * 20
    a[..., 2] = np.arange(8)[:, None] * 25
    return a


def hist_values(step: int) -> list[float]:
    return [float(x) for x in range(10 + step)]


def pixel_digest(data: bytes) -> str:
    """SHA-256 of the decoded RGB pixels of encoded image bytes (the encoding aside)."""
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return hashlib.sha256(np.asarray(img.convert("RGB")).tobytes()).hexdigest()


def image_digest(step: int) -> str:
    return hashlib.sha256(image(step).tobytes()).hexdigest()


@dataclass
class MediaCorpus:
    """``expected``: key -> {step: (media type, pixel digests of its images)}."""

    source: str
    location: str
    options: dict[str, Any]
    expected: dict[str, dict[int, tuple[str, tuple[str, ...]]]] = field(default_factory=dict)


def _images_expected() -> dict[int, tuple[str, tuple[str, ...]]]:
    return {s: ("image", (image_digest(s),)) for s in STEPS}


def _series(kind: str) -> dict[int, tuple[str, tuple[str, ...]]]:
    return {s: (kind, ()) for s in STEPS}


_PRELUDE = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from media_corpora import image, hist_values, STEPS
""")

# -- MLflow: log_image with key and step, log_table -------------------------------------

_MLFLOW = _PRELUDE + textwrap.dedent("""
    import mlflow
    uri = sys.argv[2]
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("media")
    with mlflow.start_run(run_name="mlflow-media") as run:
        for s in STEPS:
            mlflow.log_image(image(s), key="samples", step=s)
        mlflow.log_table({"id": [1, 2], "label": ["cat", "dog"]}, artifact_file="preds.json")
    print(json.dumps({"source_id": run.info.run_id}))
""")


def build_mlflow(work: Path) -> MediaCorpus:
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'source.db'}"
    env = dict(os.environ, MLFLOW_ENABLE_ASYNC_LOGGING="false", GIT_PYTHON_REFRESH="quiet")
    _run(_MLFLOW, [str(Path(__file__).parent), uri], env, work)
    return MediaCorpus("mlflow", uri, {"experiments": ["media"]},
                       {"samples": _images_expected(), "preds.json": {None: ("table", ())}})


# -- W&B: images with captions, histograms, text, a table with an image ------------------

_WANDB = _PRELUDE + textwrap.dedent("""
    import wandb
    out = sys.argv[2]
    settings = wandb.Settings(silent=True, console="off", disable_git=True, disable_code=True,
        x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True,
        x_save_requirements=False)
    run = wandb.init(project="media", id="media0001", name="wandb-media", mode="offline",
        dir=out, settings=settings)
    for s in STEPS:
        run.log({"samples": wandb.Image(image(s), caption=f"step {s}"),
                 "weights": wandb.Histogram(hist_values(s)), "status": f"epoch {s}"}, step=s)
    table = wandb.Table(columns=["id", "image"], data=[[1, wandb.Image(image(0))]])
    run.log({"preds": table}, step=3)
    run.finish()
    print(json.dumps({"source_id": "media0001"}))
""")


def build_wandb(work: Path) -> MediaCorpus:
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(work),
               WANDB_CONFIG_DIR=str(work / "cfg"), WANDB_CACHE_DIR=str(work / "cache"),
               WANDB_DATA_DIR=str(work / "data"), WANDB_ARTIFACT_DIR=str(work / "arts"),
               HOME=str(work / "home"))
    env.pop("WANDB_API_KEY", None)
    _run(_WANDB, [str(Path(__file__).parent), str(work)], env, work)
    return MediaCorpus("wandb", str(work / "wandb"), {}, {
        "samples": _images_expected(), "weights": _series("histogram"), "status": _series("text"),
        "preds": {3: ("table", (image_digest(0),))}})


# -- Comet: log_image, log_histogram_3d, log_text ----------------------------------------

_COMET = _PRELUDE + textwrap.dedent("""
    import comet_ml
    directory = sys.argv[2]
    quiet = dict(log_code=False, log_graph=False, parse_args=False, display_summary_level=0,
        log_git_metadata=False, log_git_patch=False, log_env_details=False, log_env_gpu=False,
        log_env_host=False, log_env_cpu=False, log_env_network=False, log_env_disk=False,
        auto_output_logging=False, auto_param_logging=False, auto_metric_logging=False)
    cfg = comet_ml.ExperimentConfig(offline_directory=directory, **quiet)
    exp = comet_ml.start(project_name="media", online=False, experiment_config=cfg)
    exp.set_name("comet-media")
    for s in STEPS:
        exp.log_image(image(s), name="samples", step=s, image_minmax=(0, 255))
        exp.log_histogram_3d(hist_values(s), name="weights", step=s)
        exp.log_text(f"epoch {s}", step=s)  # a text sample has no name: key "text"
    exp.end()
    print(json.dumps({"source_id": exp.get_key()}))
""")


def build_comet(work: Path) -> MediaCorpus:
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, COMET_API_KEY="dummy", COMET_ERROR_TRACKING_ENABLE="false",
               HOME=str(work / "home"))
    for var in ("COMET_OFFLINE_DIRECTORY", "COMET_PROJECT_NAME", "COMET_WORKSPACE"):
        env.pop(var, None)
    _run(_COMET, [str(Path(__file__).parent), str(work / "archives")], env, work)
    return MediaCorpus("comet", str(work / "archives"), {}, {
        "samples": _images_expected(), "weights": _series("histogram"), "text": _series("text")})


# -- Neptune 1.x offline: an image FileSeries and a string series ------------------------

_NEPTUNE = _PRELUDE + textwrap.dedent("""
    import neptune
    from neptune.types import File
    run = neptune.init_run(mode="offline", name="neptune-media", capture_stdout=False,
        capture_stderr=False, capture_hardware_metrics=False, capture_traceback=False,
        git_ref=False, source_files=[])
    for s in STEPS:
        run["samples"].append(File.as_image(image(s)), step=s)
        run["status"].append(f"epoch {s}", step=s)
    run.stop()
    print(json.dumps({}))
""")


def build_neptune_offline(work: Path) -> MediaCorpus:
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, NEPTUNE_DATA_DIRECTORY=str(work / ".neptune"))
    for var in ("NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT"):
        env.pop(var, None)
    _run(_NEPTUNE, [str(Path(__file__).parent)], env, work)
    return MediaCorpus("neptune", str(work), {"project": "ws/media"},
                       {"samples": _images_expected(), "status": _series("text")})


# -- Neptune exporter Parquet: file_series and histogram_series ------------------------


def build_neptune_parquet(work: Path) -> MediaCorpus:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from bridge.adapters.neptune.importer import sanitize_path_part

    schema = _parquet_schema()
    project, run = "ws/media", "MED-1"
    data = work / "exports" / "data" / sanitize_path_part(project)
    files = work / "exports" / "files" / sanitize_path_part(project) / run
    data.mkdir(parents=True)
    files.mkdir(parents=True)

    def utc(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, timezone.utc)

    rows: list[dict[str, Any]] = [
        dict(attribute_path="sys/name", attribute_type="string", string_value="parquet-media")]
    for s in STEPS:
        buf = io.BytesIO()
        Image.fromarray(image(s)).save(buf, format="PNG")
        (files / f"samples_{s}.png").write_bytes(buf.getvalue())
        rows.append(dict(attribute_path="samples", attribute_type="file_series", step=s,
                         timestamp=utc(T0 + 1000 * s),
                         file_value={"path": f"{run}/samples_{s}.png"}))
        v = hist_values(s)
        rows.append(dict(attribute_path="weights", attribute_type="histogram_series", step=s,
                         timestamp=utc(T0 + 1000 * s),
                         histogram_value={"type": "COUNTING", "edges": [0.0, 5.0, 20.0],
                                          "values": [5.0, float(len(v) - 5)]}))
    full = []
    for r in rows:
        row = {name: None for name in schema.names}
        row.update(project_id=project, run_id=run, **r)
        full.append(row)
    pq.write_table(pa.Table.from_pylist(full, schema=schema), data / f"{run}_part_0.parquet")
    return MediaCorpus("neptune", str(work / "exports" / "data"), {}, {
        "samples": _images_expected(), "weights": _series("histogram")})


# -- TensorBoard: legacy image and histogram summaries ------------------------------------


def build_tensorboard(work: Path) -> MediaCorpus:
    import io

    import numpy as np
    from PIL import Image
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logdir = work / "tb" / "tb-media"
    w = EventFileWriter(str(logdir))
    for s in STEPS:
        buf = io.BytesIO()
        Image.fromarray(image(s)).save(buf, format="PNG")
        img = summary_pb2.Summary.Image(height=8, width=8, colorspace=3,
                                        encoded_image_string=buf.getvalue())
        v = np.array(hist_values(s))
        counts, edges = np.histogram(v, bins=4)
        histo = summary_pb2.HistogramProto(
            min=float(v.min()), max=float(v.max()), num=float(v.size), sum=float(v.sum()),
            sum_squares=float((v * v).sum()), bucket_limit=[float(e) for e in edges[1:]],
            bucket=[float(c) for c in counts])
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="samples", image=img),
                                             summary_pb2.Summary.Value(tag="weights", histo=histo)])
        w.add_event(event_pb2.Event(wall_time=(T0 + 1000 * s) / 1000, step=s, summary=summary))
    w.close()
    return MediaCorpus("tensorboard", str(work / "tb"), {"project": "media"}, {
        "samples": _images_expected(), "weights": _series("histogram")})


BUILDERS: dict[str, Callable[[Path], MediaCorpus]] = {
    "mlflow": build_mlflow,
    "wandb": build_wandb,
    "comet": build_comet,
    "neptune-offline": build_neptune_offline,
    "neptune-parquet": build_neptune_parquet,
    "tensorboard": build_tensorboard,
}
