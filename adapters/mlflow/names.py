"""MLflow's names and formats for bridge, defined once.

The adapter writes runs with these tag names, file names and encodings; the importer (and so
``bridge verify``) reads them back with the same definitions, the compat shim tags parent
runs with them and ``bridge ui`` serves the embedded store they locate. A rename here
changes both directions at once, and ``tests/adapters/test_mlflow_names.py`` checks that
what is written reads back as it was, without the MLflow SDK.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "ARTIFACT_FOLDER", "BRIDGE_PARENT_TAG", "EMBEDDED_ARTIFACTS", "EMBEDDED_DB", "EVENTS_FILE",
    "GROUP_TAG", "IMPORT_STATUS", "MLFLOW_PARENT_TAG", "NOTE_TAG", "PARENT_TAGS",
    "RUN_ID_TAG", "RUN_NAME_TAG", "RUN_STATUSES", "SUMMARY_PREFIX", "SYSTEM_FILE",
    "SYSTEM_PREFIX", "decode_summary", "embedded_artifacts", "embedded_db",
    "embedded_tracking_uri", "encode_summary", "import_status", "long_value_file",
    "readback_source", "run_filter", "sqlite_uri", "summary_key", "summary_tag",
    "system_file", "system_tag", "truncated_tag",
]  # fmt: skip

# -- tags -------------------------------------------------------------------------------
RUN_ID_TAG = "bridge.run_id"  # the bridge run an MLflow run holds: how a run is found again
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
