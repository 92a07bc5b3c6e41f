"""TensorBoard's names and formats, defined once for the importer and the destination.

The event file names, the plugin names a summary's metadata carries, the hparams plugin's
summary tags, and the provenance tags bridge puts on an imported run; the destination's
layout (run directories, event file names, tags of text summaries, refusals): the
destination takes them from here, so what it writes is what the importer reads. Nothing
here imports ``tensorboard``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "EVENT_FILE_PREFIX", "EVENT_MARK", "HPARAMS_END", "HPARAMS_EXPERIMENT", "HPARAMS_START",
    "LEGACY_AUDIO", "LEGACY_HISTO", "LEGACY_IMAGE", "LOGDIR_TAG", "NOT_SUMMARIES",
    "PLUGIN_AUDIO", "PLUGIN_CUSTOM_SCALARS", "PLUGIN_HISTOGRAMS", "PLUGIN_HPARAMS",
    "PLUGIN_IMAGES", "PLUGIN_MESH", "PLUGIN_PR_CURVES", "PLUGIN_PROJECTOR", "PLUGIN_SCALARS",
    "PLUGIN_TEXT", "PR_CURVE_ROWS", "PROJECTOR_CONFIG", "EMBEDDINGS_PREFIX",
    "EMBEDDING_TABLE_VALUES", "SKIPPED_TAG", "TENSOR_INLINE_VALUES", "TEXT_SUMMARY_SUFFIX",
    "VENDOR",
    # the destination
    "ARTIFACTS_DIR", "BATCH_FILE_DIGITS", "CLOSE_FILE_KEY", "DEFAULT_LOGDIR", "FILE_VERSION",
    "REFUSED", "RUN_MARKER", "STATUS_OF", "SUMMARY_PREFIX", "TEXT_TAG", "batch_file_name",
    "integer_params", "make_run_marker", "project_dir_name", "read_run_marker",
    "readback_source", "run_dir_name", "tag_of_text",
]

VENDOR = "tensorboard"  # ``source.vendor`` of the media events imported from event files

# --- event files --------------------------------------------------------------------------
EVENT_FILE_PREFIX = "events.out.tfevents."  # + <wall time>.<host>[.<pid>...][suffix]
EVENT_MARK = "tfevents"  # TensorBoard's own test for an event file name

# --- plugins (``SummaryMetadata.plugin_data.plugin_name``) -----------------------------------
PLUGIN_SCALARS = "scalars"
PLUGIN_TEXT = "text"
PLUGIN_HPARAMS = "hparams"
PLUGIN_IMAGES = "images"  # string tensor [width, height, encoded image, ...]
PLUGIN_HISTOGRAMS = "histograms"  # float tensor [k, 3]: left edge, right edge, count
PLUGIN_AUDIO = "audio"  # string tensor [k, 2]: encoded clip, label (markdown)
PLUGIN_PR_CURVES = "pr_curves"  # float tensor [6, thresholds]: PR_CURVE_ROWS
PLUGIN_MESH = "mesh"  # one tensor per part: <tag>_VERTEX, <tag>_FACE, <tag>_COLOR
PLUGIN_CUSTOM_SCALARS = "custom_scalars"  # a layout, not data

# The rows of a PR curve tensor, in order (``tensorboard.plugins.pr_curve``).
PR_CURVE_ROWS = ("true_positives", "false_positives", "true_negatives", "false_negatives",
                 "precision", "recall")

# torch's ``add_text(tag, ...)`` writes its summary under ``<tag>/text_summary``.
TEXT_SUMMARY_SUFFIX = "/text_summary"

# --- the embedding projector: files beside the event files, not summaries -------------------
PLUGIN_PROJECTOR = "projector"
PROJECTOR_CONFIG = "projector_config.pbtxt"  # a text ProjectorConfig naming each embedding's
# tensors.tsv, metadata.tsv and sprite.png (paths relative to the run directory); torch's
# add_embedding names an embedding "<tag>:<step, 5 digits>"
EMBEDDINGS_PREFIX = "embeddings/"  # bridge's key for an embedding: embeddings/<tag>
# An embedding of up to this many values becomes a table (metadata, dim_0..., image);
# a larger one keeps its files as they are (a ``file`` event).
EMBEDDING_TABLE_VALUES = 250_000

# --- legacy (TF1 / torch) summary values: ``Summary.Value.WhichOneof("value")`` -----------
LEGACY_IMAGE = "image"  # Summary.Image: width, height, colorspace, encoded_image_string
LEGACY_HISTO = "histo"  # HistogramProto: min, max, num, sum, sum_squares, bucket_limit, bucket
LEGACY_AUDIO = "audio"  # Summary.Audio: sample_rate, num_channels, length_frames, encoded...

# Event records that are not summaries, by ``Event.WhichOneof("what")``: counted as skipped
# under these names (``file_version`` and ``source_metadata`` describe the file itself).
NOT_SUMMARIES = {
    "graph_def": "graphs", "meta_graph_def": "meta_graphs",
    "tagged_run_metadata": "run_metadata", "log_message": "log_messages",
    "session_log": "session_logs",
}

# A tensor summary of an unknown plugin up to this many values is kept inline as a
# ``tensor`` media event; a larger one becomes a ``file`` event holding an .npy file.
TENSOR_INLINE_VALUES = 4096

# --- the hparams plugin's summary tags ----------------------------------------------------
HPARAMS_EXPERIMENT = "_hparams_/experiment"
HPARAMS_START = "_hparams_/session_start_info"  # a session's hyperparameter values
HPARAMS_END = "_hparams_/session_end_info"

# --- provenance tags on a run imported from TensorBoard ------------------------------------
LOGDIR_TAG = "tensorboard.logdir"  # the run's directory
SKIPPED_TAG = "tensorboard.skipped"  # "<plugin>:<count>,..." of the summaries not imported


# --- the destination (``backends=["tensorboard"]``) ----------------------------------------
DEFAULT_LOGDIR = "tensorboard"  # under the spool directory, when no ``logdir`` is set
FILE_VERSION = "brain.Event:2"  # the first record of every event file
# Event files of a run: ``events.out.tfevents.<run start, s>.bridge.<batch number>``, one per
# export (a replayed batch keeps its number and replaces its file); the hparams session end
# sorts after every batch file. TensorBoard reads a directory's files in name order.
BATCH_FILE_DIGITS = 9
CLOSE_FILE_KEY = "end"
RUN_MARKER = "bridge-run.json"  # beside the event files: the bridge run the directory holds
ARTIFACTS_DIR = "artifacts"  # <run dir>/artifacts/<artifact name>/<path>
SUMMARY_PREFIX = "summary/"  # run summary values: scalars (numbers) or text, summary/<key>
# Spool kinds written as text summaries: the tag is the prefix + the event's key (notes and
# the platform facts have one tag each).
TEXT_TAG = {"tag": "tags/", "text": "text/", "dict": "dict/", "event": "events/",
            "note": "notes", "system": "system_info"}
# bridge's run status -> the hparams plugin's ``api_pb2.Status`` name (it has no "killed":
# a killed run did not complete, a failure; the run marker keeps bridge's own status)
STATUS_OF = {"FINISHED": "STATUS_SUCCESS", "FAILED": "STATUS_FAILURE",
             "KILLED": "STATUS_FAILURE", "RUNNING": "STATUS_RUNNING"}
# Why an event is refused (a dead letter): TensorBoard has no place for it.
REFUSED = {
    "model": "TensorBoard has no model registry",
    "dataset": "TensorBoard has no dataset inputs",
    "media": "TensorBoard's plugins cannot hold {type} media",
    "audio": "TensorBoard's audio plugin plays WAV only, not {mime}",
    "video": "TensorBoard holds a video only as an animated GIF image, not {mime}",
    "blob": "media file {sha256} is not in the blob store",
    "kind": "TensorBoard has no place for {kind} events",
    "path": "artifact path {path!r} leaves the run directory",
}


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


def run_dir_name(name: str | None, run_id: str) -> str:
    """``<run name>_<run id[:8]>`` (``<run id>`` when unnamed): unique, and readable in
    TensorBoard's run selector; the project is the directory above it."""
    return f"{_safe_name(name)}_{run_id[:8]}" if name else run_id


def project_dir_name(project: str) -> str:
    return _safe_name(project)


def batch_file_name(start_ms: int, number: int | str) -> str:
    """The event file of batch ``number`` (or :data:`CLOSE_FILE_KEY`): same prefix for the
    whole run, so the name order is the delivery order."""
    key = f"{number:0{BATCH_FILE_DIGITS}d}" if isinstance(number, int) else number
    return f"{EVENT_FILE_PREFIX}{int(start_ms) // 1000:010d}.bridge.{key}"


def make_run_marker(run_id: str, project: str, name: str | None, group: str | None,
                    start_ms: int, status: str, end_ms: int | None,
                    integer_params: list[str]) -> dict[str, Any]:
    """What :data:`RUN_MARKER` holds: the bridge run, its status once closed, and the params
    that are integers (the HParams plugin keeps every number as a double)."""
    return {"run_id": run_id, "project": project, "name": name, "group": group,
            "start_ms": start_ms, "status": status, "end_ms": end_ms,
            "integer_params": sorted(integer_params)}


def integer_params(marker: Mapping[str, Any] | None) -> frozenset[str]:
    """The params a marked run logged as integers: their doubles read back as ints."""
    keys = (marker or {}).get("integer_params")
    if not isinstance(keys, list):
        return frozenset()
    return frozenset(k for k in keys if isinstance(k, str))


def tag_of_text(tag: str) -> str | None:
    """The bridge tag a text summary of a marked run holds (``tags/<key>``), or None."""
    prefix = TEXT_TAG["tag"]
    return tag[len(prefix):] if tag.startswith(prefix) and len(tag) > len(prefix) else None


def read_run_marker(directory: Path) -> dict[str, Any] | None:
    """The bridge run a run directory holds (:data:`RUN_MARKER`), or None for a directory
    bridge did not write (or an unreadable marker)."""
    try:
        marker = json.loads((Path(directory) / RUN_MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("run_id"), str):
        return None
    return marker


def readback_source(spool_dir: Path, project: str, run_id: str,
                    options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Where the TensorBoard importer finds what the adapter configured by ``options``
    wrote (``bridge verify``): the log dir, whose run directories are each marked with
    their bridge run id (:data:`RUN_MARKER`). ``run_id`` is not needed."""
    logdir = Path(options.get("logdir") or Path(spool_dir) / DEFAULT_LOGDIR).expanduser()
    return str(logdir), {"project": project}
