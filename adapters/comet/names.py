"""Comet's names and formats, defined once for the adapter, the importer and the archive reader.

What bridge writes into a Comet experiment (the ledger archive member, bridge's own
others, the asset metadata keys) and what it must recognise in one (Comet's own
others, its auto-logged params and metrics, the archive's members and message types) are
named here only, so the export and import sides cannot drift apart: renaming a name on one
side alone fails ``tests/adapters/test_comet_names.py``. Nothing here imports ``comet_ml``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = [
    "DATASET_OTHER_PREFIX", "META_MODEL_ID", "MODEL_OTHER_PREFIX",
    "API_KEY_ENV", "ARCHIVE_SUFFIX", "AUTO_METRICS", "AUTO_PARAMS", "BRIDGE_OTHERS",
    "COMET_OTHERS", "DEFAULT_OFFLINE_DIR", "EPOCH_METRIC", "EXPERIMENT_JSON", "FINAL_STATUSES",
    "IMPORT_ENV", "INCOMPLETE_SUFFIX", "KIND_OTHER", "LEDGER_ARCHIVE_ID", "LEDGER_ARCHIVE_SEQ",
    "LEDGER_EVENTS", "LEDGER_FORMAT", "LEDGER_FORMAT_FIELD", "LEDGER_KEY", "LEDGER_NAME",
    "LEDGER_RUN_ID", "MAX_KEY", "MAX_OTHER", "MESSAGES_JSON", "META_ARTIFACT",
    "META_ARTIFACT_TYPE", "META_EVENT", "META_EVENT_TS", "META_KIND", "META_OTHER_KEY",
    "META_SHA256", "META_SOURCE", "MSG_METRIC", "MSG_OTHER", "MSG_PARAM", "MSG_SYSTEM",
    "MSG_UPLOAD", "OFFLINE_DIR_ENV", "OTHER_GROUP", "OTHER_NAME", "OTHER_NESTED", "OTHER_NOTES",
    "OTHER_RUN_ID", "OTHER_STATUS", "PROCESS_DURATION", "QUIET_CONFIG", "SYS_OTHER_PREFIX",
    "UPLOAD_ASSET", "UPLOAD_MODEL", "UPLOAD_TEXT", "experiment_key_for", "ledger_uids",
    "make_ledger", "readback_source",
    # media
    "HTML_MARK", "HTML_MARK_END", "HTML_SERIES", "MAX_META_DATA", "MAX_TABLE_BYTES",
    "MEDIA_CELL", "MEDIA_DATA", "MEDIA_EVENT", "MEDIA_ITEM", "MEDIA_KEY", "MEDIA_PART",
    "MEDIA_PARTS", "MEDIA_SOURCE", "MEDIA_STEP", "MEDIA_TS", "MEDIA_TYPE", "META_CAPTION",
    "META_MEDIA", "MSG_HTML", "MSG_HTML_OVERRIDE", "TABLE_SUFFIXES", "TEXT_SERIES",
    "UPLOAD_AUDIO", "UPLOAD_CONFUSION", "UPLOAD_CURVE", "UPLOAD_DATAFRAME", "UPLOAD_HISTOGRAM",
    "UPLOAD_IMAGE", "UPLOAD_IMAGE_REST", "UPLOAD_VIDEO", "VENDOR", "VIDEO_FORMATS",
]

# --- the ledger: the archive member naming the spool events an archive holds ---------------

LEDGER_NAME = "bridge-ledger.json"  # ignored by ``comet upload``
LEDGER_FORMAT = 1
LEDGER_FORMAT_FIELD = "format"
LEDGER_RUN_ID = "run_id"  # the bridge run id (the import's source id)
LEDGER_KEY = "experiment_key"
LEDGER_ARCHIVE_SEQ = "archive_seq"  # write order of a run's archives
LEDGER_ARCHIVE_ID = "archive_id"  # tells this batch's archive from an older one
LEDGER_EVENTS = "events"  # file_id -> [[first_seq, last_seq], ...]


def _ranges(seqs: Iterable[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def make_ledger(run_id: str, key: str, archive_seq: int, archive_id: str,
                uids: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """The ledger of one archive holding the spool events ``uids`` (``(file_id, seq)``)."""
    by_file: dict[str, list[int]] = {}
    for file_id, s in uids:
        by_file.setdefault(file_id, []).append(s)
    return {
        LEDGER_FORMAT_FIELD: LEDGER_FORMAT,
        LEDGER_RUN_ID: run_id,
        LEDGER_KEY: key,
        LEDGER_ARCHIVE_SEQ: archive_seq,
        LEDGER_ARCHIVE_ID: archive_id,
        LEDGER_EVENTS: {f: _ranges(s) for f, s in sorted(by_file.items())},
    }


def ledger_uids(ledger: Mapping[str, Any]) -> set[tuple[str, int]]:
    """The event uids ``(file_id, seq)`` a ledger says its archive holds."""
    return {
        (file_id, s)
        for file_id, ranges in ledger.get(LEDGER_EVENTS, {}).items()
        for lo, hi in ranges
        for s in range(lo, hi + 1)
    }


# --- "others": bridge's own, and the ones comet_ml adds by itself ---------------------------

OTHER_RUN_ID = "bridge_run_id"  # only when the run id is not a valid Comet key
OTHER_GROUP = "group"
OTHER_NOTES = "notes"
OTHER_STATUS = "bridge_status"  # the run's closing status
BRIDGE_OTHERS = frozenset({OTHER_RUN_ID, OTHER_GROUP, OTHER_NOTES, OTHER_STATUS})
OTHER_NAME = "Name"  # comet_ml's copy of the experiment name
OTHER_NESTED = "hasNestedParams"  # comet_ml: "a|b|c" params came from a nested dict
COMET_OTHERS = frozenset({"offline_experiment", OTHER_NAME, OTHER_NESTED})
SYS_OTHER_PREFIX = "sys."  # comet_ml's bookkeeping (sys.already_imported_modules, ...)
PROCESS_DURATION = "process duration"  # the metric comet_ml logs at end()
AUTO_METRICS = frozenset({PROCESS_DURATION})
AUTO_PARAMS = frozenset({"curr_step", "curr_epoch"})  # comet_ml's, when items carry a step
FINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")  # what OTHER_STATUS may hold

# --- asset metadata bridge writes, so the importer can tell what an asset was ----------------

META_EVENT = "bridge_event"  # a text sample holding a bridge event (its key)
META_EVENT_TS = "ts_ms"
META_KIND = "bridge_kind"
KIND_OTHER = "other"  # an "other" too long for Comet, kept as an asset
META_OTHER_KEY = "key"
META_ARTIFACT = "bridge_artifact"  # a file of a bridge artifact (the artifact's name)
META_ARTIFACT_TYPE = "artifact_type"
META_SHA256 = "sha256"
META_SOURCE = "source"

# --- the offline archive: ``<key>-<random>.zip`` ---------------------------------------------

EXPERIMENT_JSON = "experiment.json"
MESSAGES_JSON = "messages.json"
ARCHIVE_SUFFIX = ".zip"
INCOMPLETE_SUFFIX = ".incomplete"  # an unfinished archive set aside, never uploaded
MSG_METRIC = "metric_msg"
MSG_PARAM = "parameter_msg"
MSG_OTHER = "log_other"
MSG_SYSTEM = "system_info"
MSG_UPLOAD = "file_upload"
UPLOAD_TEXT = "text-sample"
UPLOAD_ASSET = "asset"
UPLOAD_MODEL = "model-element"

# --- media: what bridge's media events become in an experiment (see ``media``, ``media_in``) --

VENDOR = "comet"  # ``source.vendor`` of media a Comet import brought in

# Comet's own upload types and messages for media (``file_upload``'s ``upload_type``).
UPLOAD_IMAGE = "visualization"  # log_image, log_figure (named by ``figName``, no ``fileName``)
UPLOAD_IMAGE_REST = "image"  # the same images, as the REST asset list names them
UPLOAD_HISTOGRAM = "histogram3d"
UPLOAD_AUDIO = "audio"
UPLOAD_VIDEO = "video"
UPLOAD_CURVE = "curve"
UPLOAD_CONFUSION = "confusion-matrix"
UPLOAD_DATAFRAME = "dataframe"  # log_table of a pandas DataFrame
MSG_HTML = "html"  # log_html: one message, no step, no time
MSG_HTML_OVERRIDE = "htmlOverride"  # log_html(clear=True)
VIDEO_FORMATS = ("mp4", "mov", "wmv", "gif")  # what log_video takes; others go as assets
TABLE_SUFFIXES = (".csv", ".tsv")  # log_table of rows: an ``asset`` upload with this suffix
TEXT_SERIES = "text"  # the key of Comet's text samples (log_text names none)
HTML_SERIES = "html"  # the key of Comet's html messages (log_html names none)

# bridge's marker on every upload of a media event: {META_MEDIA: {MEDIA_KEY: ..., ...}}
META_MEDIA = "bridge_media"
MEDIA_KEY = "key"  # the series key
MEDIA_TYPE = "type"  # bridge's media type
MEDIA_EVENT = "event"  # the spool event ("file_id:seq"): an event's uploads share it
MEDIA_TS = "ts_ms"  # the original time (Comet's server stamps uploads itself)
MEDIA_STEP = "step"  # the original step (None too: Comet needs one for 3-D histograms)
MEDIA_PART = "part"  # this upload's number among the event's ...
MEDIA_PARTS = "parts"  # ... uploads and html messages
MEDIA_ITEM = "item"  # the item this upload holds (bridge's item: name, mime, caption, ...)
MEDIA_CELL = "cell"  # [row, column] of a table's media cell
MEDIA_DATA = "data"  # the event's inline data, exact, when under MAX_META_DATA characters
MEDIA_SOURCE = "source"  # the source vendor's descriptor, under the same limit
META_CAPTION = "caption"  # an item's caption, where Comet users see metadata
# log_html has no metadata: bridge's marker rides at the head of the page as a comment.
HTML_MARK = "<!--bridge_media "
HTML_MARK_END = "-->\n"
MAX_META_DATA = 8000  # inline data copied into upload metadata up to this size
MAX_TABLE_BYTES = 1 << 20  # a Comet CSV/TSV asset up to this size imports as a table

# --- keys, limits, defaults ------------------------------------------------------------------

MAX_KEY = 100  # comet_ml's MAXIMAL_KEY_LENGTH: longer names are truncated by the SDK
MAX_OTHER = 1000  # comet_ml's MAXIMAL_VALUE_LENGTH for "other" values
EPOCH_METRIC = "epoch"  # the metric whose value at a step is that step's epoch
DEFAULT_OFFLINE_DIR = "comet"  # under the spool directory, when no offline_directory is set
OFFLINE_DIR_ENV = "COMET_OFFLINE_DIRECTORY"
API_KEY_ENV = "COMET_API_KEY"
_KEY_RE = re.compile(r"^[A-Za-z0-9]{32,50}$")


def experiment_key_for(run_id: str) -> str:
    """The Comet key of a run: the run id when Comet accepts it, else a stable digest."""
    if _KEY_RE.match(run_id):
        return run_id
    return hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:40]


# What comet_ml would add on its own; a synced experiment holds what the user logged.
# Passed per experiment (``comet_ml.ExperimentConfig``): nothing process-wide.
QUIET_CONFIG: Mapping[str, Any] = dict(
    log_code=False,
    log_graph=False,
    parse_args=False,
    display_summary_level=0,
    log_git_metadata=False,
    log_git_patch=False,
    log_env_details=False,
    log_env_gpu=False,
    log_env_host=False,
    log_env_cpu=False,
    log_env_network=False,
    log_env_disk=False,
    auto_output_logging=False,
    auto_param_logging=False,
    auto_metric_logging=False,
    auto_log_co2=False,
    auto_histogram_tensorboard_logging=False,
    auto_histogram_weight_logging=False,
    auto_histogram_gradient_logging=False,
    auto_histogram_activation_logging=False,
)
# Read by comet_ml only while ``import comet_ml`` runs, and only from the environment (or its
# config files): see ``sdk.load_comet_ml`` for the scope they are set in. A user's own wins.
IMPORT_ENV: Mapping[str, str] = {
    "COMET_ERROR_TRACKING_ENABLE": "false",  # no Sentry reports from the sync process
    "COMET_DISABLE_AUTO_LOGGING": "1",  # no import hooks on ML frameworks
    "COMET_LOGGING_CONSOLE": "WARNING",  # no "comet upload ..." line per archive
}


def readback_source(spool_dir: Path, project: str, run_id: str,
                    options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Where the Comet importer finds what the adapter configured by ``options`` wrote, and
    its options (``bridge verify``): the offline archives. ``project`` and ``run_id`` are not
    needed: the importer lists every archive and each names its run in its ledger."""
    directory = options.get("offline_directory") or Path(spool_dir) / DEFAULT_OFFLINE_DIR
    return str(directory), {}

# MLflow logged models and dataset inputs (adapters/comet/models_out.py)
MODEL_OTHER_PREFIX = "mlflow_model."  # other: mlflow_model.<comet model name> = JSON
DATASET_OTHER_PREFIX = "mlflow_dataset."  # other: mlflow_dataset.<name> = JSON
META_MODEL_ID = "mlflow_model_id"  # a model file's metadata: the spool's model id
