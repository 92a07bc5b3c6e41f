"""ClearML's offline-session format, defined once.

``Task.set_offline(True)`` before ``Task.init`` makes the SDK write one folder per task,
``<cache dir>/offline/<task id>/`` (the cache dir is ``CLEARML_CACHE_DIR``, else
``sdk.storage.cache.default_base_dir``, else ``<tmp>/clearml_cache``), and, when the process
ends, ``<task id>.zip`` of that folder. The folder holds:

* ``task.json``: the task object as the server API would hold it (``id``, ``name``,
  ``project_name``, ``tags``, ``hyperparams``, ``configuration``, ``execution.artifacts``,
  ``script``...) plus ``offline_folder`` (the absolute folder it was written in);
* ``metrics.jsonl``: one JSON list of events per line, each with ``timestamp`` (ms), ``type``,
  ``task``, ``iter``, ``metric`` (the title), ``variant`` (the series) and the type's value;
* ``log.jsonl``: the console, the same shape with ``type`` ``log``, ``level`` and ``msg``;
* ``data/``: uploaded files (debug samples under ``<project>/<task name>.<id>/metrics/``,
  artifacts under ``.../artifacts/<name>/``), named in events by ``key`` and in artifacts by
  an absolute ``uri`` below ``<offline_folder>/data/``.
"""

from __future__ import annotations

__all__ = [
    "ARTIFACTS", "ARTIFACT_KEY", "ARTIFACT_TIMESTAMP", "ARTIFACT_TYPE", "ARTIFACT_URI",
    "COMMENT", "COMPLETED", "CONFIGURATION", "CONFIG_PREFIX", "CONFIG_TYPE_DICT",
    "CONSOLE_KEY", "CREATED", "DATA_DIR", "ERROR_LEVEL", "EVENT_FIELDS", "EV_IMAGE",
    "EV_LOG", "EV_PLOT", "EV_SCALAR", "EV_VECTOR", "EXECUTION", "F_ITER", "F_KEY", "F_LEVEL",
    "F_METRIC", "F_MSG", "F_PLOT", "F_TIMESTAMP", "F_TYPE", "F_URL", "F_VALUE", "F_VALUES",
    "F_VARIANT",
    "HYPERPARAMS", "ID", "KNOWN_EXECUTION", "KNOWN_FIELDS", "LAST_UPDATE", "LOG_FILE",
    "METRICS_FILE", "NAME", "OFFLINE_FOLDER", "OUTPUT_MODELS", "PARENT", "PARAM_SEP",
    "PROJECT", "REQUIREMENTS_KEY", "SCRIPT", "SCRIPT_CODE_KEY", "SCRIPT_FACTS", "STARTED",
    "STATUS", "STATUSES", "SUMMARY_ITER", "SDK_LOG_LINE", "SUMMARY_TITLE", "TAGS", "TASK_FILE",
    "TASK_TYPE", "TASK_TYPE_TAG", "TRACEBACK_START", "ZIP_SUFFIX", "metric_key", "param_key",
]

# -- the session's files ------------------------------------------------------------------
TASK_FILE = "task.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.jsonl"
DATA_DIR = "data"
ZIP_SUFFIX = ".zip"

# -- task.json ----------------------------------------------------------------------------
ID = "id"
NAME = "name"
PROJECT = "project_name"
TAGS = "tags"
COMMENT = "comment"
TASK_TYPE = "type"
PARENT = "parent"
STATUS = "status"  # written only when a server-side task was exported; offline never
CREATED = "created"
STARTED = "started"
COMPLETED = "completed"
LAST_UPDATE = "last_update"
HYPERPARAMS = "hyperparams"  # {section: {name: {"section", "name", "value": str, "type"}}}
CONFIGURATION = "configuration"  # {name: {"name", "type", "value": str, "description"}}
EXECUTION = "execution"
ARTIFACTS = "artifacts"  # in execution: [{"key", "type", "uri", "timestamp" (s), ...}]
SCRIPT = "script"
OFFLINE_FOLDER = "offline_folder"
OUTPUT_MODELS = "offline_output_models"

ARTIFACT_KEY = "key"
ARTIFACT_URI = "uri"
ARTIFACT_TYPE = "type"
ARTIFACT_TIMESTAMP = "timestamp"

CONFIG_TYPE_DICT = "dictionary"  # connect_configuration(dict): the value is HOCON text

# Fields read (or empty by nature); any other non-empty field is a counted warning.
KNOWN_FIELDS = frozenset({
    ID, NAME, PROJECT, TAGS, COMMENT, TASK_TYPE, PARENT, STATUS, CREATED, STARTED, COMPLETED,
    LAST_UPDATE, HYPERPARAMS, CONFIGURATION, EXECUTION, SCRIPT, OFFLINE_FOLDER, OUTPUT_MODELS,
    "output", "system_tags", "project", "user", "company", "status_changed", "status_reason",
    "status_message", "active_duration", "last_iteration", "last_change",
})
KNOWN_EXECUTION = frozenset({ARTIFACTS, "docker_cmd", "model", "model_desc", "model_labels",
                             "parameters", "queue", "framework"})
# script fields kept as system facts; "requirements" and "diff" become text events.
SCRIPT_FACTS = ("binary", "entry_point", "repository", "branch", "version_num", "tag",
                "working_dir")

# ClearML task statuses -> bridge's.
STATUSES = {
    "created": "RUNNING", "queued": "RUNNING", "in_progress": "RUNNING",
    "stopped": "KILLED", "failed": "FAILED",
    "completed": "FINISHED", "closed": "FINISHED", "published": "FINISHED",
    "publishing": "FINISHED",
}

# -- metrics.jsonl / log.jsonl events ------------------------------------------------------
EV_SCALAR = "training_stats_scalar"  # Logger.report_scalar: F_VALUE
EV_VECTOR = "training_stats_vector"  # F_VALUES
EV_IMAGE = "training_debug_image"  # report_image / report_media: F_KEY (under data/), F_URL
EV_PLOT = "plot"  # report_histogram/table/scatter/...: F_PLOT, Plotly JSON
EV_LOG = "log"  # console: F_LEVEL, F_MSG

F_TIMESTAMP = "timestamp"  # ms since the epoch, per event
F_TYPE = "type"
F_ITER = "iter"
F_METRIC = "metric"  # the title
F_VARIANT = "variant"  # the series
F_VALUE = "value"
F_VALUES = "values"
F_KEY = "key"
F_URL = "url"
F_PLOT = "plot_str"
F_LEVEL = "level"
F_MSG = "msg"
ERROR_LEVEL = "error"  # stderr lines, an uncaught exception's traceback among them
TRACEBACK_START = "Traceback (most recent call last):"
# The SDK's own logging (its background threads: "No repository found, …") lands in the
# console as info lines, possibly between the lines of the process's final traceback.
SDK_LOG_LINE = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} - clearml[.\s]"
EVENT_FIELDS = (F_TIMESTAMP, F_TYPE, F_ITER, F_METRIC, F_VARIANT)

# Logger.report_single_value(name, value) is report_scalar("Summary", name, value, -2**31).
SUMMARY_TITLE = "Summary"
SUMMARY_ITER = -(2 ** 31)

# -- bridge's names for what it imports ----------------------------------------------------
PARAM_SEP = "/"  # ClearML's own separator: "General/lr", "Args/batch_size"
CONFIG_PREFIX = "Configuration"  # connect_configuration(name=...) -> "Configuration/<name>/..."
CONSOLE_KEY = "console.log"  # the console (log.jsonl) as one text event
REQUIREMENTS_KEY = "requirements.txt"  # script.requirements.pip
SCRIPT_CODE_KEY = "script.diff"  # script.diff: the uncommitted diff, or the script itself
TASK_TYPE_TAG = "clearml.task_type"


def metric_key(title: str, series: str) -> str:
    """A scalar's bridge key: ``title/series``, as the ClearML UI shows its graphs."""
    return f"{title}{PARAM_SEP}{series}"


def param_key(*parts: str) -> str:
    return PARAM_SEP.join(parts)
