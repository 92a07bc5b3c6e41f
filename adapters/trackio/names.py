"""trackio's names and formats, defined once for the adapter, the store process and the importer.

trackio (Hugging Face's local-first tracker) keeps one SQLite file per project,
``<trackio dir>/<canonical project>.db``, with the tables named below, and media files under
``<trackio dir>/media/<canonical project>/<run name>/<step>/``; the trackio directory is
``$TRACKIO_DIR`` or ``$HF_HOME/trackio``. What bridge writes into that store (its config
keys, its log ids) and what it must recognise in one (trackio's reserved config keys, media
``_type`` names, reserved metric keys) are named here only. Nothing here imports trackio.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "ALERTS", "ALERT_LEVEL", "ARTIFACTS", "ARTIFACTS_DIR", "ARTIFACT_MARK",
    "ARTIFACT_VERSIONS", "LINK_OUTPUT", "RUN_ARTIFACT_LINKS", "artifact_blob", "artifact_name",
    "logical_path_problem", "BRIDGE_CONFIG_PREFIX", "CFG_CREATED", "CFG_END", "CFG_GROUP",
    "CFG_NOTES", "CFG_STATUS", "CFG_SUMMARY", "CFG_SYSTEM", "CFG_TAGS", "CFG_USERNAME",
    "CONFIGS", "DB_EXT", "DIR_ENV", "EXTRA", "FINAL_STATUSES", "HF_HOME_ENV", "LOG_ID_PREFIX",
    "MEDIA_DIR", "MEDIA_FILE_TYPES", "MEDIA_MARK", "METRICS", "NONFINITE", "NO_STEP_DIR",
    "OFFLINE_ENV", "RESERVED_CONFIG", "RESERVED_KEYS", "SCRUBBED_ENV", "SYSTEM_METRICS",
    "SYSTEM_PREFIX", "T_AUDIO", "T_HISTOGRAM", "T_HTML", "T_IMAGE", "T_MARKDOWN", "T_OBJECT3D",
    "T_TABLE", "T_VIDEO", "VENDOR", "canonical_project", "default_dir", "iso_from_ms",
    "log_id", "ms_from_iso", "parse_log_id", "project_db", "readback_source",
    "stored_key", "user_key",
]

VENDOR = "trackio"
EXTRA = "trackio"  # pip install 'tracking-bridge[trackio]'

# --- where trackio keeps things ---------------------------------------------------------------

DIR_ENV = "TRACKIO_DIR"
HF_HOME_ENV = "HF_HOME"
DB_EXT = ".db"
MEDIA_DIR = "media"  # <trackio dir>/media/<canonical project>/<run name>/<step>/<file>
NO_STEP_DIR = "nostep"  # the media directory of a stepless event (trackio reads file_path only)

# Tables and the columns bridge reads or writes (``trackio/sqlite_storage.py``'s schema).
METRICS = "metrics"  # id, run_id, timestamp (ISO), run_name, step, metrics (JSON), log_id
SYSTEM_METRICS = "system_metrics"  # id, run_id, timestamp, run_name, metrics (JSON), log_id
CONFIGS = "configs"  # id, run_id UNIQUE, run_name, config (JSON), created_at
ALERTS = "alerts"  # id, run_id, timestamp, run_name, title, text, level, step, alert_id
# Artifacts (project-wide, versioned by content): artifacts(id, name, type),
# artifact_versions(id, artifact_id, version, manifest JSON [{path, digest, size}], metadata),
# run_artifact_links(run_id, run_name, artifact_version_id, direction, created_at); the bytes
# in <trackio dir>/artifacts/<canonical project>/blobs/sha256/<digest[:2]>/<digest>.
ARTIFACTS = "artifacts"
ARTIFACT_VERSIONS = "artifact_versions"
RUN_ARTIFACT_LINKS = "run_artifact_links"
ARTIFACTS_DIR = "artifacts"
LINK_OUTPUT = "output"  # a version the run logged; "input": one it used
ARTIFACT_MARK = "bridge"  # version metadata: {"name", "type", "ts_ms", "step", "event"}
_ARTIFACT_NAME = re.compile(r"[^A-Za-z0-9._-]")

# trackio's own config keys (``Run.__init__``): the dashboard shows _Group and _Username.
CFG_USERNAME = "_Username"
CFG_CREATED = "_Created"  # ISO time the run was created: bridge writes the run's start
CFG_GROUP = "_Group"
RESERVED_CONFIG = frozenset({CFG_USERNAME, CFG_CREATED, CFG_GROUP})

# What trackio has no place for rides in the config under this prefix (shown by the
# dashboard's run page like any config value, read back by the importer).
BRIDGE_CONFIG_PREFIX = "bridge/"
CFG_TAGS = "bridge/tags"  # {key: value}
CFG_SUMMARY = "bridge/summary"  # {key: JSON value}
CFG_NOTES = "bridge/notes"  # str
CFG_SYSTEM = "bridge/system"  # the run's platform facts (Kind.SYSTEM payload)
CFG_STATUS = "bridge/status"  # the closing status
CFG_END = "bridge/end_time"  # ISO end time
FINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")

# Metric keys trackio's ``Run.log`` renames to ``__<key>`` (``utils.RESERVED_KEYS``): they
# would collide with the ``step`` and ``timestamp`` its readers merge into every row.
RESERVED_KEYS = frozenset({"project", "run", "timestamp", "step", "time", "metrics"})
SYSTEM_PREFIX = "system/"  # bridge's stepless system series live in trackio's system table
ALERT_LEVEL = "info"  # the level of an alert bridge writes for an ``event`` event

# JSON strings trackio stores for non-finite floats (``utils.serialize_values``).
NONFINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}

# --- media: the ``_type`` of a logged value ---------------------------------------------------

T_IMAGE = "trackio.image"
T_VIDEO = "trackio.video"
T_AUDIO = "trackio.audio"
T_HTML = "trackio.html"
T_OBJECT3D = "trackio.object3d"
T_TABLE = "trackio.table"  # {"_value": [row dict, ...]}; image cells are trackio.image dicts
T_HISTOGRAM = "trackio.histogram"  # {"bins": edges, "values": counts}
T_MARKDOWN = "trackio.markdown"  # {"_value": text}
# bridge media type <-> trackio type of a file-backed value ({"file_path", "caption"})
MEDIA_FILE_TYPES = {"image": T_IMAGE, "video": T_VIDEO, "audio": T_AUDIO, "html": T_HTML,
                    "object3d": T_OBJECT3D}
# bridge's marker in a media value it wrote: what trackio's form does not say (the event's
# type, item facts, a multi-item event's parts, a table's column order). trackio ignores it.
MEDIA_MARK = "bridge"

# --- log ids: what makes a replayed batch write nothing twice ---------------------------------

# trackio's metrics and system_metrics tables have a unique ``log_id`` and its writes are
# INSERT OR IGNORE; alerts have a unique ``alert_id``. bridge's ids name the spool event.
LOG_ID_PREFIX = "bridge|"
_STEPLESS = "n"


def log_id(file_id: str, seq: int, stepless: bool = False) -> str:
    """The log id of one spool event; ``stepless`` marks a point bridge logged without a step
    (trackio numbers it), so the importer gives it back without one."""
    return f"{LOG_ID_PREFIX}{file_id}|{seq}|{_STEPLESS if stepless else 's'}"


def parse_log_id(value: Any) -> tuple[str, int, bool] | None:
    """``(file_id, seq, stepless)`` of a log id bridge wrote, else None."""
    if not isinstance(value, str) or not value.startswith(LOG_ID_PREFIX):
        return None
    try:
        file_id, seq, flag = value[len(LOG_ID_PREFIX):].rsplit("|", 2)
        return file_id, int(seq), flag == _STEPLESS
    except ValueError:
        return None


def stored_key(key: str) -> str:
    """The key trackio stores for a metric key (``Run.log``'s renaming)."""
    return f"__{key}" if key in RESERVED_KEYS or key.startswith("__") else key


def user_key(key: str) -> str:
    """Inverse of :func:`stored_key`."""
    if key.startswith("__"):
        rest = key[2:]
        if rest in RESERVED_KEYS or rest.startswith("__"):
            return rest
    return key


# --- time ----------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso_from_ms(ms: int) -> str:
    """trackio's timestamp form (``datetime.now(timezone.utc).isoformat()``), exact to the ms."""
    return (_EPOCH + timedelta(milliseconds=int(ms))).isoformat(timespec="microseconds")


_MS = timedelta(milliseconds=1)


def ms_from_iso(value: Any) -> int | None:
    """Milliseconds since the epoch of a trackio ISO timestamp (floor), None if unreadable."""
    try:  # one call a metrics row: the common case first
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        if not isinstance(value, str) or "Z" not in value:
            return None
        try:  # a "Z" suffix, which fromisoformat reads only from Python 3.11 on
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - _EPOCH) // _MS


class IsoMs:
    """:func:`ms_from_iso` for a run's timestamps in order, most in the same second as the one
    before: trackio's own form (``2026-11-30T12:01:31.123456+00:00``) is read from its digits
    once its second is known, the same milliseconds (floor) without a ``datetime`` a row."""

    __slots__ = ("_head", "_base")

    def __init__(self) -> None:
        self._head: str | None = None  # "YYYY-MM-DDTHH:MM:SS." of the second last read
        self._base = 0  # its milliseconds

    def __call__(self, value: Any) -> int | None:
        if value.__class__ is str and value[:20] == self._head and value[26:] == "+00:00" \
                and value.isascii() and value[20:26].isdigit():
            return self._base + int(value[20:23])  # the head matched: 32 characters
        return self._read(value)

    def _read(self, value: Any) -> int | None:
        """A timestamp of another second, or of another form."""
        if value.__class__ is str and len(value) == 32 and value[19] == "." \
                and value[26:] == "+00:00" and value.isascii() and value[20:26].isdigit():
            base = ms_from_iso(value[:19] + "+00:00")
            if base is None:
                return None
            self._head, self._base = value[:20], base
            return base + int(value[20:23])
        return ms_from_iso(value)


# --- directories and processes ------------------------------------------------------------------

def canonical_project(project: str) -> str:
    """trackio's on-disk name of a project (``utils.canonical_project_name``)."""
    safe = "".join(c for c in project if c.isalnum() or c in ("-", "_")).rstrip()
    return safe or "default"


def default_dir(environ: Mapping[str, str] | None = None) -> Path:
    """trackio's own resolution of its directory: ``$TRACKIO_DIR``, else ``$HF_HOME/trackio``
    (HF_HOME as huggingface_hub resolves it)."""
    env = os.environ if environ is None else environ
    if env.get(DIR_ENV):
        return Path(env[DIR_ENV]).expanduser()
    if env.get(HF_HOME_ENV):
        return Path(env[HF_HOME_ENV]).expanduser() / "trackio"
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "huggingface" / "trackio"


def project_db(root: Path, project: str) -> Path:
    return Path(root) / f"{canonical_project(project)}{DB_EXT}"


def artifact_blob(root: Path, project_file_stem: str, digest: str) -> Path:
    """Where trackio keeps an artifact file's bytes (``cas.blob_path``)."""
    return (Path(root) / ARTIFACTS_DIR / project_file_stem / "blobs" / "sha256" / digest[:2]
            / digest)


def artifact_name(name: str) -> str:
    """A bridge artifact name as trackio accepts one (``^[A-Za-z0-9._-]+$``)."""
    return _ARTIFACT_NAME.sub("_", name) or "artifact"


def logical_path_problem(paths: list[str]) -> str | None:
    """Why trackio would refuse these artifact paths (``cas.validate_logical_path``,
    ``assert_manifest_paths_compatible``), or None."""
    seen = set()
    for p in paths:
        if not p or "\\" in p or "\x00" in p or p.startswith("/") or re.match(r"^[A-Za-z]:", p) \
                or any(part in ("", ".", "..") for part in p.split("/")):
            return f"artifact path {p!r} is not a relative path trackio accepts"
        if p in seen:
            return f"artifact path {p!r} appears twice"
        seen.add(p)
    for p in seen:
        parts = p.split("/")
        if any("/".join(parts[:i]) in seen for i in range(1, len(parts))):
            return f"artifact path {p!r} is both a file and a directory"
    return None


# The store process runs trackio with these unset: each one makes trackio download from or
# upload to the Hugging Face Hub (a dataset, a bucket, a Space) or act as a Space.
SCRUBBED_ENV = ("TRACKIO_BUCKET_ID", "TRACKIO_DATASET_ID", "SPACE_REPO_NAME", "SPACE_ID",
                "SYSTEM", "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_WRITE_TOKEN",
                "TRACKIO_STORAGE_MODE", "HF_TOKEN")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "TRACKIO_STORAGE_MODE": "sqlite"}


def readback_source(spool_dir: Path, project: str, run_id: str,
                    options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Where the trackio importer finds what the adapter configured by ``options`` wrote
    (``bridge verify``): the trackio directory, limited to the run's project."""
    root = Path(options["dir"]).expanduser() if options.get("dir") else default_dir()
    return str(root), {"projects": [options.get("project") or project]}
