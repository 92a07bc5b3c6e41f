"""W&B's names and formats, defined once for both directions.

The adapter writes them, the importer and the ``.wandb`` log reader read them back,
``bridge verify`` finds what the adapter wrote with :func:`readback_source`, and the compat
shim tags runs with them. A rename here changes both sides together, so a run written
by bridge stays readable by bridge; ``tests/adapters/test_wandb_names.py`` checks the
round trip without the W&B SDK.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "DATASET_FILE",
    "REFERENCE_DIR",
    "REFERENCE_SCHEMES",
    "MAX_HISTOGRAM_BINS",
    "MAX_METRIC_KEY",
    "MAX_TABLE_ROWS",
    "MEDIA_DIR",
    "MEDIA_FILES_DIR",
    "MEDIA_STAGING",
    "MEDIA_TYPES",
    "TABLE_ARTIFACT_TYPE",
    "CLIENT_ARTIFACT_SCHEME",
    "API_STATES",
    "ARTIFACT_NAME_MAX",
    "COMPAT_ID_TAG",
    "COMPAT_JOB_TYPE_TAG",
    "DEFAULT_DIR_NAME",
    "DISCARDED_PREFIX",
    "EVENTS_DIR",
    "EXIT_CODES",
    "HISTORY_SKIP_KEYS",
    "INTERNAL_FILES",
    "INTERNAL_KEY",
    "KILLED_EXIT_CODES",
    "LONG_TAGS_CONFIG",
    "MAX_TAG_LENGTH",
    "METADATA_FILE",
    "MODES",
    "MODE_ENV",
    "OFFLINE_HOME",
    "OFFLINE_HOME_DIRS",
    "RESERVED_KEYS",
    "RUNTIME_KEY",
    "RUN_ID_MAX",
    "STEP_KEY",
    "SYSTEM_FILE",
    "TAG_SEPARATOR",
    "TIMESTAMP_KEY",
    "WANDB_SUBDIR",
    "check_artifact_name",
    "check_tag",
    "default_dir",
    "discarded_name",
    "events_file",
    "exit_code_of",
    "history_row",
    "is_events_file",
    "log_file_name",
    "manifest_md5",
    "media_file",
    "parse_media_file",
    "parse_label",
    "readback_source",
    "remote_run_id",
    "row_step",
    "row_ts_ms",
    "session_key",
    "status_of_exit",
    "tag_label",
    "wandb_project",
]

# -- history rows ----------------------------------------------------------------------

# bridge's step metric: every row carries it (``define_metric("*", step_metric=STEP_KEY)``),
# so out-of-order steps are kept; W&B's own ``_step`` only counts rows.
STEP_KEY = "bridge/step"
TIMESTAMP_KEY = "_timestamp"  # seconds since the epoch, a float
RUNTIME_KEY = "_runtime"  # seconds since the run started
INTERNAL_KEY = "_wandb"  # wandb's own bookkeeping in config, history and summary
# Keys W&B writes into history and summary itself.
RESERVED_KEYS = frozenset({"_step", RUNTIME_KEY, TIMESTAMP_KEY, INTERNAL_KEY})
# Keys of a history row (or summary) that are not a user's series.
HISTORY_SKIP_KEYS = RESERVED_KEYS | {STEP_KEY}


def history_row(step: int, ts_ms: int) -> dict[str, Any]:
    """The start of a history row the adapter logs: bridge's step and the point's time."""
    return {STEP_KEY: step, TIMESTAMP_KEY: ts_ms / 1000.0}


def row_step(row: Mapping[str, Any]) -> Any:
    """The step of a history row: bridge's step if present, else W&B's ``_step``."""
    return row.get(STEP_KEY) if STEP_KEY in row else row.get("_step")


def row_ts_ms(row: Mapping[str, Any]) -> int | None:
    """The time of a history row in ms, or None when it has none."""
    ts = row.get(TIMESTAMP_KEY)
    if not isinstance(ts, (int, float)):
        return None
    return int(round(float(ts) * 1000))


# -- media ---------------------------------------------------------------------------

MAX_HISTOGRAM_BINS = 512  # wandb.Histogram refuses more bins (the adapter re-bins)
MAX_TABLE_ROWS = 200_000  # rows W&B keeps of a logged table (it truncates the rest)
MEDIA_STAGING = ".media-staging"  # under the adapter's dir: blobs named for W&B, per session
MEDIA_DIR = "media/"  # W&B writes media files under ``files/media/<kind>/``
TABLE_ARTIFACT_TYPE = "run_table"  # the artifact W&B logs with each table, images included
# A table row's ``artifact_path``: ``wandb-client-artifact://<client id>/<entry name>``.
CLIENT_ARTIFACT_SCHEME = "wandb-client-artifact://"
# W&B history ``_type`` -> bridge media type (``images/separated`` and the other list
# forms hold several items of one type).
MEDIA_TYPES: Mapping[str, str] = {
    "image-file": "image", "images/separated": "image", "images": "image",
    "histogram": "histogram",
    "table-file": "table", "incremental-table-file": "table", "table": "table",
    "audio-file": "audio", "audio": "audio",
    "video-file": "video", "videos": "video",
    "html-file": "html", "html": "html",
    "object3D-file": "object3d", "object3D": "object3d",
}


# -- status <-> exit code --------------------------------------------------------------

EXIT_CODES: Mapping[str, int] = {"FINISHED": 0, "FAILED": 1, "KILLED": 137}
KILLED_EXIT_CODES = frozenset({137, -9})  # SIGKILL, as a shell and as Python report it
# A run's ``state`` in W&B's public API -> bridge status.
API_STATES: Mapping[str, str] = {
    "finished": "FINISHED", "failed": "FAILED", "crashed": "KILLED", "killed": "KILLED",
    "preempted": "KILLED", "running": "RUNNING", "pending": "RUNNING",
    "preempting": "RUNNING",
}


def exit_code_of(status: str) -> int:
    """The exit code the adapter finishes a W&B run with; an unknown status fails."""
    return EXIT_CODES.get(status, 1)


def status_of_exit(exit_code: int | None) -> str:
    """Bridge status of a W&B exit code. No exit record (``None``): the process never
    called ``finish()`` — crashed, killed or still writing — imported as KILLED."""
    if exit_code is None or exit_code in KILLED_EXIT_CODES:
        return "KILLED"
    return "FINISHED" if exit_code == 0 else "FAILED"


# -- tags ------------------------------------------------------------------------------

MAX_TAG_LENGTH = 64  # characters in a W&B label
MAX_METRIC_KEY = 250  # characters in a metric key bridge sends to W&B
TAG_SEPARATOR = ":"  # a valued bridge tag is the label ``key:value``
# Config key holding the tags too long for a W&B label: {key: value, or True if plain}.
LONG_TAGS_CONFIG = "bridge.tags"
# Tags the compat shim (``bridge.compat.wandb``) records W&B arguments under.
COMPAT_ID_TAG = "wandb.id"
COMPAT_JOB_TYPE_TAG = "wandb.job_type"


def tag_label(key: str, value: Any) -> str:
    """The W&B label of a bridge tag: the key alone for a plain tag, else ``key:value``."""
    if value in (None, "", key, True):
        return key
    return f"{key}{TAG_SEPARATOR}{value}"


def parse_label(label: str, bridge_written: bool) -> tuple[str, str]:
    """(key, value) of a W&B label; only a run bridge wrote has ``key:value`` labels."""
    if bridge_written and TAG_SEPARATOR in label:
        key, _, value = label.partition(TAG_SEPARATOR)
        return key, value
    return label, ""


def check_tag(tag: str) -> str | None:
    """Why W&B would refuse this tag, or None."""
    if not tag or not tag.strip():
        return "W&B tags must not be empty"
    if len(tag) > MAX_TAG_LENGTH:
        return f"W&B tags are at most {MAX_TAG_LENGTH} characters (got {len(tag)})"
    return None


# -- run ids, projects, artifacts --------------------------------------------------------

RUN_ID_MAX = 64
_RUN_ID_FORBIDDEN = frozenset(":;,#?/'")
ARTIFACT_NAME_MAX = 128
_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def remote_run_id(run_id: str) -> str:
    """The W&B run id of a bridge run: the same id when W&B accepts it, else a stable uuid5."""
    if run_id and len(run_id) <= RUN_ID_MAX and not (_RUN_ID_FORBIDDEN & set(run_id)):
        return run_id
    return uuid.uuid5(uuid.NAMESPACE_URL, f"bridge:{run_id}").hex


def wandb_project(project: str) -> str:
    """W&B project names allow no '/' (a Neptune ``workspace/project``): use '-' instead."""
    return project.replace("/", "-") if project else project


def check_artifact_name(name: str) -> str | None:
    """Why W&B would refuse this artifact name, or None."""
    if not name or len(name) > ARTIFACT_NAME_MAX:
        return f"W&B artifact names are 1-{ARTIFACT_NAME_MAX} characters (got {len(name or '')})"
    if not _ARTIFACT_NAME.match(name):
        return "W&B artifact names may only contain letters, digits, '-', '_' and '.'"
    return None


def manifest_md5(digest: Any) -> tuple[str, bytes] | None:
    """A W&B artifact manifest digest (base64 MD5 of the file) as ("md5", raw bytes), when
    it is one: what lets an importer read W&B's staged copy outside the import root."""
    try:
        raw = base64.b64decode(str(digest), validate=True)
    except (binascii.Error, ValueError):
        return None
    return ("md5", raw) if len(raw) == 16 else None


# -- files in a run --------------------------------------------------------------------

SYSTEM_FILE = "bridge/system.json"  # bridge's system facts
EVENTS_DIR = "bridge/events/"  # bridge's discrete events, one JSON line each
METADATA_FILE = "wandb-metadata.json"  # W&B's own system facts
# Files W&B writes into every run's ``files/`` itself.
INTERNAL_FILES = frozenset({"wandb-summary.json", "config.yaml", METADATA_FILE,
                            "requirements.txt", "conda-environment.yaml"})


def events_file(file_id: str, seq: int) -> str:
    """The run file holding a batch's events, named after its first event."""
    return f"{EVENTS_DIR}{file_id}-{seq}.jsonl"


# Media W&B has no history type for (``file``, ``tensor``) are run files, one per item:
# ``bridge/media/<type>/<step>/<ts_ms>/<key>/<n>-<item name>``; a tensor's one file is its
# inline data as JSON.
MEDIA_FILES_DIR = "bridge/media/"
_MEDIA_FILE_TYPES = ("file", "tensor")


def media_file(kind: str, key: str, step: int, ts_ms: int, n: int, name: str) -> str:
    """The run file of item ``n`` of a ``file``/``tensor`` media event."""
    base = (name or "item").replace("\\", "/").rsplit("/", 1)[-1] or "item"
    return f"{MEDIA_FILES_DIR}{kind}/{step}/{ts_ms}/{key}/{n}-{base}"


def parse_media_file(rel: str) -> tuple[str, str, int, int, int, str] | None:
    """(type, key, step, ts_ms, n, name) of a :func:`media_file` path, or None."""
    if not rel.startswith(MEDIA_FILES_DIR):
        return None
    parts = rel[len(MEDIA_FILES_DIR):].split("/")
    if len(parts) < 5 or parts[0] not in _MEDIA_FILE_TYPES:
        return None
    n, sep, name = parts[-1].partition("-")
    if not (parts[1].isdigit() and parts[2].isdigit() and n.isdigit() and sep and name):
        return None
    return parts[0], "/".join(parts[3:-1]), int(parts[1]), int(parts[2]), int(n), name


def is_events_file(rel: str) -> bool:
    return rel.startswith(EVENTS_DIR) and rel.endswith(".jsonl")


# -- directories -----------------------------------------------------------------------

MODES = ("online", "offline")
MODE_ENV = "WANDB_MODE"  # read by the compat shim, as wandb.init reads it
DEFAULT_DIR_NAME = "wandb-out"  # the adapter's ``dir`` under the spool by default
WANDB_SUBDIR = "wandb"  # W&B's session dirs live in ``<dir>/wandb/``
DISCARDED_PREFIX = "discarded"  # a half-written session dir ``wandb sync`` must skip
# Offline, wandb's own directories default to ``<dir>/.wandb-home/<sub>``.
OFFLINE_HOME = ".wandb-home"
OFFLINE_HOME_DIRS: Mapping[str, str] = {
    "WANDB_CONFIG_DIR": "config", "WANDB_CACHE_DIR": "cache",
    "WANDB_DATA_DIR": "data", "WANDB_ARTIFACT_DIR": "artifacts",
}
_SESSION = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-(.+?)(?:-(\d+))?$")


def default_dir(spool_dir: str | Path | None) -> Path:
    """The adapter's ``dir`` when none is configured."""
    return Path(spool_dir) / DEFAULT_DIR_NAME if spool_dir else Path.cwd()


def discarded_name(session_dir: str, n: int = 0) -> str:
    """The name a half-written session dir is renamed to (``n`` > 0 when taken)."""
    return f"{DISCARDED_PREFIX}{n or ''}-{session_dir}"


def log_file_name(run_id: str) -> str:
    """W&B's transaction log of a session, inside its session dir."""
    return f"run-{run_id}.wandb"


def session_key(dir_name: str) -> tuple[str, str, int] | None:
    """``(timestamp, run id, n)`` of a W&B session dir name
    (``[offline-]run-<YYYYmmdd_HHMMSS>-<id>[-<n>]``), or None if it is not one."""
    m = _SESSION.match(dir_name)
    return (m.group(1), m.group(2), int(m.group(3) or 0)) if m else None


def readback_source(spool_dir: Path, project: str, run_id: str,
                    options: Mapping[str, Any]) -> tuple[str, dict]:
    """Importer location and options that read back what the adapter wrote with
    ``options`` (the backend's table): its offline ``dir``. ``project`` and ``run_id`` are
    not needed: the importer lists every run in the dir, keyed by the W&B run id."""
    return str(options.get("dir") or Path(spool_dir) / DEFAULT_DIR_NAME), {}

# MLflow dataset inputs as W&B artifacts (adapters/wandb/models_out.py)
DATASET_FILE = "dataset.json"  # the dataset's description inside its W&B artifact
REFERENCE_DIR = "source"  # the reference to the dataset's URI: source/<name>
# URI schemes W&B's storage handlers take as references without reading them.
REFERENCE_SCHEMES = ("s3", "gs", "http", "https")
