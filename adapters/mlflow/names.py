"""MLflow's names and formats for bridge, defined once.

The adapter writes runs with these tag names, file names and encodings; the importer (and so
``bridge verify``) reads them back with the same definitions, the compat shim tags parent
runs with them and ``bridge ui`` serves the embedded store they locate. A rename here
changes both directions at once, and ``tests/adapters/test_mlflow_names.py`` checks that
what is written reads back as it was, without the MLflow SDK.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "ARTIFACT_FOLDER", "BRIDGE_PARENT_TAG", "EMBEDDED_ARTIFACTS", "EMBEDDED_DB", "EVENTS_FILE",
    "METRICS_TABLE", "RUNS_TABLE",
    "GROUP_TAG", "IMAGES_FOLDER", "IMPORT_STATUS", "LOGGED_ARTIFACTS_TAG", "LOGGED_IMAGES_TAG",
    "MEDIA_FOLDER", "MEDIA_MARKER", "MLFLOW_PARENT_TAG", "NOTE_TAG", "PARENT_TAGS",
    "StepImage", "TABLES_FOLDER", "TABLE_IMAGES_FOLDER", "TABLE_MEDIA_FOLDER",
    "THUMBNAIL_SIZE", "image_key", "media_dir", "media_file", "media_uuid",
    "parse_media_descriptor", "parse_step_image", "step_image_file", "table_cell_file",
    "table_file",
    "MODEL_ID_TAG", "RUN_ID_TAG", "RUN_NAME_TAG", "RUN_STATUSES", "SUMMARY_PREFIX", "SYSTEM_FILE",
    "SYSTEM_PREFIX", "decode_summary", "embedded_artifacts", "embedded_db",
    "embedded_tracking_uri", "encode_summary", "import_status", "long_value_file",
    "readback_source", "run_filter", "sqlite_uri", "summary_key", "summary_tag",
    "system_file", "system_tag", "truncated_tag",
]  # fmt: skip

# -- tags -------------------------------------------------------------------------------
RUN_ID_TAG = "bridge.run_id"  # the bridge run an MLflow run holds: how a run is found again
MODEL_ID_TAG = "bridge.model_id"  # the spool's id of a logged model delivered to MLflow
MLFLOW_PARENT_TAG = "mlflow.parentRunId"  # MLflow's UI nests a run under this parent
BRIDGE_PARENT_TAG = "bridge.parent_run_id"
# Tags that name a parent run by its bridge id (imports, the mlflow compat shim).
PARENT_TAGS = (BRIDGE_PARENT_TAG, MLFLOW_PARENT_TAG)
GROUP_TAG = "bridge.group"
NOTE_TAG = "mlflow.note.content"  # MLflow's run description
RUN_NAME_TAG = "mlflow.runName"
SUMMARY_PREFIX = "summary."
SYSTEM_PREFIX = "bridge.system."

# -- files in a run's artifact folder -------------------------------------------------------
ARTIFACT_FOLDER = "bridge"  # bridge's bookkeeping files, apart from the user's artifacts
EVENTS_FILE = f"{ARTIFACT_FOLDER}/events.jsonl"  # ``event`` events, one JSON line each
SYSTEM_FILE = f"{ARTIFACT_FOLDER}/system.json"  # system facts of a run without a node name

# -- run status -------------------------------------------------------------------------
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")  # bridge's = MLflow's
# MLflow's status -> bridge's, for an import (bridge has no SCHEDULED).
IMPORT_STATUS: Mapping[str, str] = {
    "FINISHED": "FINISHED", "FAILED": "FAILED", "KILLED": "KILLED",
    "RUNNING": "RUNNING", "SCHEDULED": "RUNNING",
}  # fmt: skip

# -- the embedded store -----------------------------------------------------------------
EMBEDDED_DB = "mlflow.db"
METRICS_TABLE = "metrics"  # a database store's metric points (key, value, timestamp, step, is_nan)
RUNS_TABLE = "runs"  # a database store's runs (run_uuid, ...)
EMBEDDED_ARTIFACTS = "mlartifacts"


def import_status(status: Any) -> str:
    """Bridge's status for an MLflow run's status (an unknown one counts as FINISHED)."""
    return IMPORT_STATUS.get(str(status), "FINISHED")


def summary_tag(key: str) -> str:
    """The tag that holds summary value ``key``."""
    return SUMMARY_PREFIX + key


def summary_key(tag: str) -> str | None:
    """The summary key a tag holds, or None for any other tag (inverse of :func:`summary_tag`)."""
    if tag.startswith(SUMMARY_PREFIX) and len(tag) > len(SUMMARY_PREFIX):
        return tag[len(SUMMARY_PREFIX):]
    return None


def encode_summary(value: Any) -> str:
    """A summary value as a tag value: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def decode_summary(text: str) -> Any:
    """A summary tag's value back (inverse of :func:`encode_summary`): what is JSON, decoded."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def system_tag(fact: str) -> str:
    """The tag that repeats one scalar system fact (for MLflow's run table)."""
    return SYSTEM_PREFIX + fact


def system_file(node: str | None) -> str:
    """The artifact file that holds a node's system facts."""
    return f"{ARTIFACT_FOLDER}/system/{node}.json" if node else SYSTEM_FILE


def long_value_file(kind: str, key: str) -> str:
    """Where the full value of a param or tag MLflow truncates is kept (``kind``: param|tag)."""
    return f"{ARTIFACT_FOLDER}/{kind}s/{key}.txt"


def truncated_tag(kind: str, key: str) -> str:
    """The tag that says a param or tag was truncated, and where its full value is."""
    return f"bridge.{kind}_truncated.{key}"


def run_filter(run_id: str) -> str:
    """An MLflow search filter for the MLflow runs of one bridge run."""
    return f"tags.`{RUN_ID_TAG}` = '{run_id}'"


def sqlite_uri(db: Path) -> str:
    return f"sqlite:///{db}"


def embedded_db(spool_dir: Path) -> Path:
    """The embedded store's database file in a spool directory."""
    return Path(spool_dir) / EMBEDDED_DB


def embedded_artifacts(spool_dir: Path) -> Path:
    """The embedded store's artifact root in a spool directory."""
    return Path(spool_dir) / EMBEDDED_ARTIFACTS


def embedded_tracking_uri(spool_dir: Path) -> str:
    """The tracking URI of the embedded store: ``sqlite:///<spool>/mlflow.db``."""
    return sqlite_uri(embedded_db(Path(spool_dir).resolve()))


def readback_source(spool_dir: Path, project: str, run_id: str,
                    options: Mapping[str, Any]) -> tuple[str, dict]:
    """The importer location and options that read back what the adapter wrote for a run.

    ``options`` are the backend's options (``tracking_uri``, ``experiment``): the same
    store and experiment the adapter chose, filtered to the MLflow runs of ``run_id``.
    """
    location = options.get("tracking_uri") or embedded_tracking_uri(spool_dir)
    experiment = options.get("experiment") or project
    return str(location), {"experiments": [experiment], "filter": run_filter(run_id)}


# -- media (``bridge.spool.media`` events; see ``adapters/mlflow/media.py``) ---------------
# What ``mlflow.log_image(key=, step=, timestamp=)`` writes (MLflow 3.x): a PNG and a WebP
# thumbnail whose longer side is THUMBNAIL_SIZE, both named
# ``images/<key>+step+<N>+timestamp+<T>+<uuid>[+compressed].<ext>`` (``/`` in the key as ``~``),
# and the tag LOGGED_IMAGES_TAG = "True" that makes MLflow's UI show its image grid.
# Older MLflow wrote ``%`` as separator and ``#`` for ``/``; its UI still reads both.
LOGGED_IMAGES_TAG = "mlflow.loggedImages"
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # JSON list of {"path", "type": "table"}
IMAGES_FOLDER = "images"
TABLE_IMAGES_FOLDER = "table_images"  # log_table's image cells: <table stem>/<uuid>.png|.webp
TABLE_MEDIA_FOLDER = "table_media"  # bridge: a table's non-image media cells (no MLflow form)
THUMBNAIL_SIZE = 256
# Bridge's form for media MLflow has no native form for (and each image event's sidecar):
# ``media/<key>/step_<N>/<type>-<T>.json`` describes one event (MEDIA_MARKER set, its key,
# step, timestamp, type, inline data, items with their files, source descriptor) and
# ``media/<key>/step_<N>/<type>-<T>-<i><ext>`` holds item ``i``'s bytes.
MEDIA_FOLDER = "media"
MEDIA_MARKER = "bridge_media"
TABLES_FOLDER = "tables"  # a table at key K, step N: tables/<K>/step_<N>.json (log_table's form)

_IMAGE_KEY_OK = re.compile(r"[^A-Za-z0-9_\-./ ]")
_SEGMENT_OK = re.compile(r"[^A-Za-z0-9_\-.=@ ,]")
_STEP_IMAGE = re.compile(
    r"^(?P<key>.+?)(?P<sep>[+%#~])step(?P=sep)(?P<step>-?\d+)(?P=sep)timestamp(?P=sep)"
    r"(?P<ts>\d+)(?P=sep)(?P<uuid>[^+%#~/]+?)(?P<compressed>(?P=sep)compressed)?"
    r"\.(?P<ext>[A-Za-z0-9]+)$")
_MEDIA_DESCRIPTOR = re.compile(r"^(?P<dir>.+)/step_(?P<step>-?\d+)/(?P<type>[a-z0-9]+)-"
                               r"(?P<ts>\d+)\.json$")


@dataclass(frozen=True)
class StepImage:
    """One file of MLflow's step-image layout, parsed from its name."""

    key: str
    step: int
    timestamp: int
    uuid: str
    compressed: bool
    extension: str


def image_key(key: str) -> str:
    """A key as ``log_image`` accepts it in a file name: ``/`` as ``~``, and any character
    MLflow refuses in a key (or that would split the name, ``+``) as ``_``."""
    return _IMAGE_KEY_OK.sub("_", key).replace("/", "~") or "_"


def step_image_file(key: str, step: int, timestamp: int, uid: str, compressed: bool = False) -> str:
    """The artifact path ``log_image(key=, step=, timestamp=)`` gives an image (its thumbnail
    with ``compressed``)."""
    stem = f"{IMAGES_FOLDER}/{image_key(key)}+step+{int(step)}+timestamp+{int(timestamp)}+{uid}"
    return f"{stem}+compressed.webp" if compressed else f"{stem}.png"


def parse_step_image(path: str) -> StepImage | None:
    """A step image's key, step, timestamp and uuid from its artifact path, in every dialect
    MLflow has written (``+`` or ``%`` separators, ``~`` or ``#`` for ``/``); None for any other
    file (a file directly in ``images/`` only)."""
    prefix = IMAGES_FOLDER + "/"
    if not path.startswith(prefix) or "/" in path[len(prefix):]:
        return None
    m = _STEP_IMAGE.match(path[len(prefix):])
    if m is None:
        return None
    key = re.sub(r"[~#]", "/", m["key"])
    return StepImage(key, int(m["step"]), int(m["ts"]), m["uuid"], bool(m["compressed"]),
                     m["ext"].lower())


def media_uuid(*parts: Any) -> str:
    """A UUID that is the same for the same event and item (replays write the same name)."""
    return str(uuid.uuid5(_MEDIA_NS, "\x00".join(str(p) for p in parts)))


_MEDIA_NS = uuid.UUID("2b0c7f4e-9d1a-4c55-8e61-3f7a0d9b6c21")


def _path_segments(key: str) -> str:
    """A key as folder names: ``/`` keeps nesting; other characters a path must not hold as
    ``_``; empty, ``.`` and ``..`` segments as ``_``."""
    parts = []
    for seg in key.split("/"):
        seg = _SEGMENT_OK.sub("_", seg)
        parts.append("_" if seg in ("", ".", "..") else seg)
    return "/".join(parts)


def media_dir(key: str, step: int | None) -> str:
    """The folder of a key's media at one step (stepless: step 0)."""
    return f"{MEDIA_FOLDER}/{_path_segments(key)}/step_{int(step or 0)}"


def media_file(key: str, step: int | None, type: str, timestamp: int, index: int | None = None,
               ext: str = ".json") -> str:
    """An event's descriptor (``index`` None) or item ``index``'s file in bridge's layout."""
    stem = f"{media_dir(key, step)}/{type}-{int(timestamp)}"
    return f"{stem}{ext}" if index is None else f"{stem}-{index}{ext}"


def parse_media_descriptor(path: str) -> tuple[int, str, int] | None:
    """(step, type, timestamp) of a path that looks like a descriptor of bridge's layout;
    the file's own content (MEDIA_MARKER, key) is what counts."""
    if not path.startswith(MEDIA_FOLDER + "/"):
        return None
    m = _MEDIA_DESCRIPTOR.match(path)
    return (int(m["step"]), m["type"], int(m["ts"])) if m else None


def table_file(key: str, step: int | None) -> str:
    """Where a table event lands, in ``log_table``'s JSON form (``tables/<key>/step_<N>.json``)."""
    return f"{TABLES_FOLDER}/{_path_segments(key)}/step_{int(step or 0)}.json"


def table_cell_file(table: str, uid: str, image: bool, ext: str = ".png",
                    compressed: bool = False) -> str:
    """A media cell's file: ``table_images/<table stem>/<uuid>.png|.webp`` as ``log_table``
    names an image cell; other media under ``table_media/<table stem>/``."""
    stem = table.rsplit(".", 1)[0] if "." in table.rsplit("/", 1)[-1] else table
    if image:
        return f"{TABLE_IMAGES_FOLDER}/{stem}/{uid}{'.webp' if compressed else ext}"
    return f"{TABLE_MEDIA_FOLDER}/{stem}/{uid}{ext}"
