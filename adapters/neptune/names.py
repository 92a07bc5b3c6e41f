"""Neptune's names and formats as bridge uses them, defined once.

The adapter writes these fields, the importer and the op-log readers read them back, and
``bridge verify`` finds the adapter's output through :func:`readback_source`. Keeping them
in one module means a rename on one side cannot silently break the other (see
tests/adapters/test_neptune_names.py). Nothing here imports the Neptune SDK.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "ARTIFACTS", "BRIDGE", "DATA_DIR_ENV", "DATA_DIR_NAME", "END_TIME", "ENVIRONMENT",
    "EVENTS", "EXPORTER_FILES_DIR", "HISTOGRAM_DATA", "HISTOGRAM_FILE", "LONG_TEXT_DATA",
    "LONG_TEXT_FILE", "MAX_SERIES_STRING", "MEDIA_DESCRIPTOR", "MEDIA_MARK", "long_text_field",
    "text_preview", "decode_image_description", "encode_image_description", "histogram_field",
    "image_field", "media_step_field", "parse_media_step_field", "FAILED_STATUSES", "FILES", "GROUP", "HEAD_FIELDS",
    "MANIFESTS", "MANIFEST_KEYS", "MAX_STEP_PLACES", "OFFLINE_DIR", "OP_LOG_GLOB",
    "PARAMETERS", "PROJECT", "RESERVED", "RUN_DIR_GLOB", "RUN_ID", "SOURCE_CODE",
    "SPOOL_SUBDIR", "START_TIME", "STATUS", "STATUSES", "STEP_MULTIPLIER_TAG", "SUMMARY",
    "SYS", "SYS_CREATION_TIME", "SYS_CUSTOM_RUN_ID", "SYS_DESCRIPTION", "SYS_FAILED",
    "SYS_FORKING_PARENT", "SYS_HOSTNAME", "SYS_ID", "SYS_MODIFICATION_TIME", "SYS_NAME",
    "SYS_TAGS", "TAGS", "decimal_places", "decode_event", "decode_manifest", "decode_step",
    "default_data_dir", "encode_event", "encode_manifest", "encode_step", "field",
    "is_failed", "ms_of", "readback_source", "relative", "step_multiplier", "tag_label",
    "time_value",
    "MODELS", "MODEL_FIELDS", "DATASETS", "DATASET_FIELDS",
]

# -- bridge's own fields: who wrote the run, and what the spool knew about it ---------------

BRIDGE = "bridge"
RUN_ID = "bridge/run_id"  # written in every session: how an offline session is found again
PROJECT = "bridge/project"
GROUP = "bridge/group"
START_TIME = "bridge/start_time"
END_TIME = "bridge/end_time"
STATUS = "bridge/status"
TAGS = "bridge/tags"  # TAGS/<key> = value (Neptune's sys/tags hold labels only)
MANIFESTS = "bridge/artifacts"  # MANIFESTS/<name> = the artifact's JSON manifest
HEAD_FIELDS = (RUN_ID, PROJECT, GROUP, START_TIME, END_TIME, STATUS)

# -- where each kind of event lands ------------------------------------------------------

PARAMETERS = "parameters"  # param key -> parameters/<key>, nested dicts as namespaces
SUMMARY = "summary"
FILES = "files"  # text and dict events share files/<key>
ARTIFACTS = "artifacts"  # artifacts/<name> (one file) or artifacts/<name>/<member>
EVENTS = "events"  # event key -> events/<key>, a string series of JSON
ENVIRONMENT = "environment"  # the system facts of a run
# MLflow 3 logged models (``model`` events): MODELS/<model name>/<field>, the model's files
# under MODELS/<model name>/files/<path>, params and tags under .../params/, .../tags/.
MODELS = "models"
MODEL_FIELDS = ("id", "type", "status", "experiment", "creation_time", "output_step")
# MLflow dataset inputs (``dataset`` events): DATASETS/<name>/<field>, tags under .../tags/;
# schema and profile are JSON text (a file, .json, when over Neptune's string limit).
DATASETS = "datasets"
DATASET_FIELDS = ("digest", "source_type", "source", "schema", "profile")

# -- media events (bridge.spool.media) -------------------------------------------------
#
# * image: item 0 of each event -> FileSeries ``<key>``, item i > 0 -> FileSeries
#   ``<key>_<i>`` (Neptune keeps one value per step and series), each value with the step,
#   the original timestamp, ``name`` = the caption (else the file name) and ``description``
#   = :func:`encode_image_description` (the item's facts, so an import regroups the items).
# * histogram: FileSeries ``<key>`` of a PNG rendered with Pillow (Neptune 1.x has no
#   histogram type), plus ``HISTOGRAM_DATA/<key>/step_<N>/HISTOGRAM_FILE``, the event as
#   JSON (edges, counts, step, timestamp), which the importer reads back.
# * text: StringSeries ``<key>`` (step, timestamp). The importer reads every StringSeries
#   as a text series (Neptune's own, e.g. captured stdout, too), except bridge's ``EVENTS``. Neptune truncates a StringSeries value at
#   MAX_SERIES_STRING characters: a longer text is logged as :func:`text_preview` and kept
#   whole in ``LONG_TEXT_DATA/<key>/step_<N>/LONG_TEXT_FILE``, which the importer prefers.
# * table, audio, video, html, object3d, curve, tensor, file: files per step,
#   ``<key>/step_<N>/<item name>`` for each blob (a table's media cells included) and
#   ``<key>/step_<N>/MEDIA_DESCRIPTOR``, the event as JSON (payload, step, timestamp).

HISTOGRAM_DATA = "histograms"
LONG_TEXT_DATA = "texts"
LONG_TEXT_FILE = "text.txt"
MAX_SERIES_STRING = 1000  # Neptune truncates longer StringSeries values
HISTOGRAM_FILE = "histogram.json"
MEDIA_DESCRIPTOR = "media.json"
MEDIA_MARK = "bridge_media"  # the key of a descriptor's or description's JSON object


def image_field(key: str, index: int) -> str:
    """The FileSeries of item ``index`` of an image event under ``key``."""
    return key if index == 0 else f"{key}_{index}"


def media_step_field(key: str, step: int, name: str) -> str:
    """The field of one file of a media event kept as files per step."""
    return f"{key}/step_{step}/{name}"


def histogram_field(key: str, step: int) -> str:
    """The field of a histogram event's JSON (edges and counts) at ``step``."""
    return media_step_field(f"{HISTOGRAM_DATA}/{key}", step, HISTOGRAM_FILE)


def long_text_field(key: str, step: int) -> str:
    """The field holding a text point too long for Neptune's StringSeries, whole."""
    return media_step_field(f"{LONG_TEXT_DATA}/{key}", step, LONG_TEXT_FILE)


def text_preview(text: str) -> str:
    """The StringSeries value of a text point: the text, or its start when too long."""
    return text if len(text) <= MAX_SERIES_STRING else text[:MAX_SERIES_STRING - 1] + "…"


def parse_media_step_field(path: str) -> tuple[str, int, str] | None:
    """``(key, step, name)`` of a field :func:`media_step_field` made, else None."""
    head, _, name = path.rpartition("/")
    key, sep, step = head.rpartition("/step_")
    if not sep or not key or not name or not step.isdigit() or "/" in step:
        return None
    return key, int(step), name


def encode_image_description(kind: str, key: str, index: int, count: int,
                             item: Mapping[str, Any]) -> str:
    """The ``description`` of a FileSeries value bridge logs: which event item it is."""
    facts = {k: v for k, v in item.items() if k not in ("sha256", "size")}
    return json.dumps({MEDIA_MARK: {"type": kind, "key": key, "item": index, "items": count,
                                    **facts}}, sort_keys=True)


def decode_image_description(text: Any) -> dict[str, Any] | None:
    """The facts :func:`encode_image_description` wrote, or None (a user's description)."""
    if not isinstance(text, str) or MEDIA_MARK not in text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    inner = value.get(MEDIA_MARK) if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else None


# -- Neptune's own fields ----------------------------------------------------------------

SYS = "sys"
SOURCE_CODE = "source_code"
RESERVED = (SYS, BRIDGE, SOURCE_CODE)  # namespaces a metric key must not write into
SYS_ID = "sys/id"
SYS_NAME = "sys/name"
SYS_TAGS = "sys/tags"
SYS_FAILED = "sys/failed"
SYS_HOSTNAME = "sys/hostname"
SYS_DESCRIPTION = "sys/description"
SYS_CUSTOM_RUN_ID = "sys/custom_run_id"
SYS_CREATION_TIME = "sys/creation_time"
SYS_MODIFICATION_TIME = "sys/modification_time"
SYS_FORKING_PARENT = "sys/forking/parent"

STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
FAILED_STATUSES = ("FAILED", "KILLED")  # -> sys/failed = True

# -- where the 1.x client keeps its files ----------------------------------------------

DATA_DIR_ENV = "NEPTUNE_DATA_DIRECTORY"  # the client's own variable; bridge only reads it
DATA_DIR_NAME = ".neptune"  # the client's default data directory
SPOOL_SUBDIR = "neptune"  # default data dir of the adapter: <spool>/neptune
OFFLINE_DIR = "offline"  # <data dir>/.neptune/offline/run__<uuid>__<pid>__<key>/
RUN_DIR_GLOB = "run__*"
OP_LOG_GLOB = "data-*.log"
EXPORTER_FILES_DIR = "files"  # neptune-exporter's default files root, beside its Parquet

# -- steps -------------------------------------------------------------------------------
#
# Neptune steps are decimals; bridge steps are integers. The adapter sends bridge steps as
# they are. An imported run whose steps all are integers keeps them; otherwise every step is
# multiplied by 10**k, the smallest k (at most MAX_STEP_PLACES) that makes them integers,
# and the run gets the tag STEP_MULTIPLIER_TAG = "10**k".

STEP_MULTIPLIER_TAG = "bridge.step_multiplier"
MAX_STEP_PLACES = 6


def field(*parts: str) -> str:
    """A Neptune field path from parts, keeping only non-empty segments (as the client does)."""
    return "/".join(p for part in parts for p in str(part).split("/") if p)


def relative(namespace: str, path: str) -> str | None:
    """``path`` below ``namespace`` (``relative("files", "files/a.txt") == "a.txt"``), or None."""
    prefix = namespace + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def encode_step(step: int) -> int:
    """The Neptune step of a bridge step: the same number."""
    return step


def decode_step(step: float | None, multiplier: int = 1) -> int | None:
    """The bridge step of a Neptune step (None or NaN: a point without a step)."""
    if step is None or (isinstance(step, float) and step != step):
        return None
    return int(round(step * multiplier))


def decimal_places(step: Any) -> int:
    """How many decimal places a step needs (``2.5`` -> 1, ``3.0`` -> 0), at most 6."""
    d = step if isinstance(step, Decimal) else Decimal(repr(float(step)))
    if not d.is_finite():
        return 0
    exponent = d.normalize().as_tuple().exponent
    return min(MAX_STEP_PLACES, max(0, -int(exponent)))


def step_multiplier(places: int) -> int:
    """The multiplier that makes steps of ``places`` decimal places integers."""
    return 10 ** min(MAX_STEP_PLACES, max(0, places))


def time_value(ms: int) -> _dt.datetime:
    """A bridge time (ms) as the datetime the adapter assigns."""
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc)


def ms_of(value: Any) -> int | None:
    """A Neptune datetime (a datetime, or the op log's epoch ms) as bridge ms."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return int(round(value.timestamp() * 1000))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return None


def is_failed(status: str) -> bool:
    """The value of ``sys/failed`` for a bridge status."""
    return status in FAILED_STATUSES


def tag_label(key: str, value: str) -> str:
    """The ``sys/tags`` label of a bridge tag: the key, or ``key:value``."""
    return key if value == "" else f"{key}:{value}"


def encode_event(payload: Any) -> str:
    """An event payload as one value of its ``events/<key>`` string series."""
    return json.dumps(payload)


def decode_event(text: Any) -> Any:
    """The payload of an ``events/<key>`` value; text that is not JSON stays text."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


MANIFEST_KEYS = ("type", "is_dir", "source", "files")


def encode_manifest(payload: Mapping[str, Any]) -> str:
    """The ``MANIFESTS/<name>`` text of an artifact event's payload."""
    return json.dumps({k: payload.get(k) for k in MANIFEST_KEYS}, sort_keys=True)


def decode_manifest(text: Any) -> dict[str, Any]:
    """An artifact manifest; {} when there is none or it is not JSON."""
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def default_data_dir(spool_dir: str | Path | None) -> Path:
    """The adapter's data dir when none is given: beside the spool, else the parent of the
    client's own data directory (``NEPTUNE_DATA_DIRECTORY``, read and never written)."""
    if spool_dir:
        return Path(spool_dir) / SPOOL_SUBDIR
    return Path(os.environ.get(DATA_DIR_ENV, DATA_DIR_NAME)).resolve().parent


def readback_source(spool_dir: Path, project: str, run_id: str,
                    options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Where the importer finds what the adapter wrote for a run, and its options.

    ``options`` are the backend's options; only offline mode leaves files to read back.
    ``project`` and ``run_id`` are not needed: the importer recognises the run by
    ``RUN_ID`` in every offline directory of the data dir.
    """
    return str(options.get("data_dir") or Path(spool_dir) / SPOOL_SUBDIR), {}


def nest(target: dict[str, Any], parts: list[str], value: Any) -> None:
    """Put ``value`` at the field path ``parts`` inside ``target`` (``parameters/a/b`` read
    back as param ``a`` = ``{"b": value}``: namespaces are nested dicts, as bridge logs them)."""
    node = target
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = node[p] = {}
        node = child
    node[parts[-1]] = value
