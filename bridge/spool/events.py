"""The event model: the one definition of what a spool event is.

Everything that writes or reads events — the spool writer, the reader, the writer of
imported runs, the agent, the adapters, the importers, the queries — uses this module's
:class:`Kind`, :class:`Event`, payload shapes and codecs, so a change here is a change
everywhere and nothing disagrees silently.

A row of the ``events`` table is ``(seq, run_id, kind, key, step, ts_ms, value, payload)``:
``value`` holds a finite metric value; ``payload`` holds JSON for every other kind and,
for a metric, the marker of a non-finite value (SQLite turns NaN into NULL).
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = [
    "apply_model_change",
    "EVENT_COLUMNS",
    "INSERT_EVENT",
    "SELECT_EVENTS",
    "Event",
    "Kind",
    "artifact_payload",
    "decode_float",
    "decode_row",
    "encode_float",
    "encode_payload",
    "dataset_payload",
    "metric_row",
    "model_payload",
]


class Kind(str, enum.Enum):
    """Event kinds, as stored in ``events.kind`` (compare and store as plain strings)."""

    METRIC = "metric"  # key, step, ts_ms, value (float; NaN/±inf kept)
    PARAM = "param"  # key, payload: any JSON value (nested config stays nested)
    TAG = "tag"  # key, payload: str
    SUMMARY = "summary"  # key, payload: any JSON value
    ARTIFACT = "artifact"  # key: name, payload: artifact_payload()
    TEXT = "text"  # key: file name, payload: str
    DICT = "dict"  # key: file name, payload: JSON value
    EVENT = "event"  # key: event name, payload: JSON value (omega-ml's log_event)
    SYSTEM = "system"  # key: "system", payload: dict of platform facts
    NOTE = "note"  # key: "notes", payload: str (the run description, may change)
    MEDIA = "media"  # key: series, step, ts_ms, payload: bridge.spool.media.media_payload()
    # MLflow 3 logged models (the MLflow tracking-store plugin, adapters/mlflow/plugin/):
    # key: the model id ("m-<32 hex>"), payload: model_payload(); recorded on the model's
    # source run, one event per change (create, params, tags, status, files, metrics, output).
    MODEL = "model"
    # Datasets used by a run (MLflow's log_inputs): key: dataset name, payload:
    # dataset_payload() (name, digest, source, schema, profile, input tags such as context).
    DATASET = "dataset"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Event:
    """One spool event, decoded: what the reader yields, the agent batches and adapters get.

    ``(file_id, seq)`` is the event's global identity. ``payload`` is decoded JSON (None for
    metrics). For artifacts it is :func:`artifact_payload`'s dict, whose files' bytes are in
    the blob store by sha256.
    """

    file_id: str
    seq: int
    run_id: str
    kind: str
    key: str | None
    step: int | None
    ts_ms: int
    value: float | None = None
    payload: Any = None
    node: str = ""

    @property
    def uid(self) -> tuple[str, int]:
        return (self.file_id, self.seq)


# -- SQL: the columns and the statements every reader and writer of events uses ------------

EVENT_COLUMNS = ("run_id", "kind", "key", "step", "ts_ms", "value", "payload")
INSERT_EVENT = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})")
SELECT_EVENTS = "SELECT seq, run_id, kind, key, step, ts_ms, value, payload FROM events"


# -- codecs ---------------------------------------------------------------------------------

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_float(value: float) -> tuple[float | None, str | None]:
    """SQLite turns NaN into NULL: a non-finite value goes to the payload column as a marker."""
    if math.isfinite(value):
        return value, None
    if math.isnan(value):
        return None, "NaN"
    return None, "Infinity" if value > 0 else "-Infinity"


def decode_float(value: float | None, payload: str | None) -> float | None:
    """Inverse of :func:`encode_float`."""
    if value is not None:
        return value
    if payload is None:
        return None
    return _NONFINITE.get(payload)


def encode_payload(value: Any) -> str:
    """JSON for the payload column (text kept as text, not \\u escapes)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def metric_row(run_id: str, key: str, step: int | None, ts_ms: int, value: float) -> tuple:
    """A metric as an ``EVENT_COLUMNS`` row."""
    v, marker = encode_float(value)
    return (run_id, Kind.METRIC.value, key, step, ts_ms, v, marker)


def decode_row(row: tuple, file_id: str, node: str) -> Event:
    """A ``SELECT_EVENTS`` row of file ``file_id`` as an :class:`Event`."""
    seq, run_id, kind, key, step, ts_ms, value, payload = row
    if kind == Kind.METRIC:
        return Event(file_id, seq, run_id, kind, key, step, ts_ms,
                     decode_float(value, payload), None, node)
    decoded = json.loads(payload) if payload is not None else None
    return Event(file_id, seq, run_id, kind, key, step, ts_ms, value, decoded, node)


# -- payload shapes -------------------------------------------------------------------------


def artifact_payload(name: str, files: Iterable[Mapping[str, Any]], *, type: str = "file",
                     is_dir: bool | None = None, source: str | None = None,
                     **extra: Any) -> dict[str, Any]:
    """An artifact event's payload: ``files`` are ``{"path", "sha256", "size"}`` (bytes in
    the blob store); ``extra`` carries optional fields such as ``format``."""
    entries = [{"path": f["path"], "sha256": f["sha256"], "size": f["size"]} for f in files]
    return {"name": name, "type": type,
            "is_dir": len(entries) > 1 if is_dir is None else bool(is_dir),
            "source": source, "files": entries, **extra}


MODEL_OPS = ("create", "params", "tags", "delete_tag", "status", "files", "metrics", "output")


def model_payload(op: str, **fields: Any) -> dict[str, Any]:
    """A ``model`` event's payload: ``op`` names the change, the other fields carry it.

    ``create``: name, experiment (the project), model_type, params, tags, status,
    creation_ms; ``params``/``tags``: dicts of strings; ``delete_tag``: key; ``status``:
    "READY"/"FAILED"/...; ``files``: path (folder inside the model, None for its root) and
    files as in :func:`artifact_payload`; ``metrics``: list of {key, value, ts_ms, step};
    ``output``: step (the run logged the model as an output at that step).
    """
    if op not in MODEL_OPS:
        raise ValueError(f"unknown model op {op!r}; known: {', '.join(MODEL_OPS)}")
    return {"op": op, **fields}


def apply_model_change(model: dict[str, Any], payload: Mapping[str, Any]) -> bool:
    """Fold one ``params``/``tags``/``delete_tag``/``status`` change into ``model`` (a dict with
    ``params``, ``tags`` and ``status``, as a ``create`` payload holds them), the way every
    destination that keeps a model's state reads the changes. False for another op."""
    op = payload.get("op")
    if op == "params":
        model["params"].update(payload.get("params") or {})
    elif op == "tags":
        model["tags"].update(payload.get("tags") or {})
    elif op == "delete_tag":
        model["tags"].pop(payload.get("key"), None)
    elif op == "status":
        model["status"] = payload.get("status")
    else:
        return False
    return True


def dataset_payload(name: str, digest: str, source_type: str, source: str,
                    schema: str | None = None, profile: str | None = None,
                    tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A ``dataset`` event's payload (MLflow's Dataset and its input tags)."""
    return {"name": name, "digest": digest, "source_type": source_type, "source": source,
            "schema": schema, "profile": profile, "tags": dict(tags or {})}
