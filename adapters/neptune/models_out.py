"""MLflow 3 logged models (``model`` events) and dataset inputs (``dataset`` events), as the
MLflow tracking-store plugin recorded them, to Neptune 1.x fields of the run.

Neptune 1.x has no model entity inside a run (its model registry is a separate object type
that offline mode cannot create), so a logged model is a namespace of the run:
``models/<model name>/`` holds ``id`` (MLflow's model id), ``type``, ``status``,
``experiment``, ``creation_time``, ``output_step``, ``params/<key>`` and ``tags/<key>``
(strings, as MLflow keeps them) and the model's files, uploaded byte for byte under
``files/<path>``. A second model of the run with the same name goes to
``models/<name>-<model id>``. A dataset is ``datasets/<name>/`` with ``name``, ``digest``,
``source_type``, ``source``, ``schema`` and ``profile`` (MLflow's JSON text; a ``.json``
file when longer than Neptune's string limit) and its input tags under ``tags/<key>``; the
same name with another digest goes to ``datasets/<name>-<digest>``. Model metrics are the
run's own points (already in its series).

Replays add nothing: a value already in the field and a file already uploaded from the
same blob are recognised (the adapter's field fingerprints, read back from earlier
offline operation logs), as for artifacts.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from bridge.adapters.neptune import names as N
from bridge.adapters.neptune.names import field as _path
from bridge.adapters.neptune.paths import collisions, empty_segments

__all__ = ["deliver", "model_namespace", "dataset_namespace"]

_MAX_STRING = 16384  # Neptune truncates longer String fields
_SEGMENT = re.compile(r"/+")


def _segment(name: str) -> str:
    """A name as one Neptune path segment ("/" would nest it)."""
    return _SEGMENT.sub("-", name).strip("-") or "unnamed"


def model_namespace(state: dict, model_id: str, name: str) -> str:
    """``models/<name>`` for the run's first model of that name, else ``<name>-<id>``;
    kept in ``state`` so every later change of the model finds it."""
    spaces = state.setdefault("neptune_models", {})
    if model_id not in spaces:
        ns = _path(N.MODELS, _segment(name))
        if ns in spaces.values():
            ns = _path(N.MODELS, f"{_segment(name)}-{model_id}")
        spaces[model_id] = ns
    return spaces[model_id]


def dataset_namespace(state: dict, name: str, digest: str) -> str:
    """``datasets/<name>`` for the first digest of that name, else ``<name>-<digest>``."""
    spaces = state.setdefault("neptune_datasets", {})
    key = f"{name}\x00{digest}"
    if key not in spaces:
        ns = _path(N.DATASETS, _segment(name))
        if ns in spaces.values():
            ns = _path(N.DATASETS, f"{_segment(name)}-{_segment(digest)}")
        spaces[key] = ns
    return spaces[key]


def deliver(adapter: Any, session: Any, run: Any, ev: Any) -> str | None:
    """One ``model`` or ``dataset`` event; a reason (a dead letter) when Neptune cannot
    hold it. A path another key already owns raises the adapter's ``PathRefused`` (from
    its ``_check``), which the adapter turns into the reason."""
    if ev.kind == "dataset":
        return _dataset(adapter, session, run, ev.payload or {})
    return _model(adapter, session, run, ev)


def _strings(adapter: Any, session: Any, owner: str, prefix: str,
             values: Mapping[str, Any]) -> str | None:
    if not values:
        return None
    for k in values:
        problem = empty_segments(str(k), f"key of {owner}")
        if problem:
            return problem
    return adapter._assign_tree(session, owner, prefix,
                                {str(k): "" if v is None else str(v) for k, v in values.items()})


def _atom(adapter: Any, session: Any, owner: str, path: str, value: Any) -> str | None:
    if value is None:
        return None
    adapter._check(session, owner, [path])
    session.paths.claim(owner, [path])
    return adapter._assign(session, path, value)


def _model(adapter: Any, session: Any, run: Any, ev: Any) -> str | None:
    p: Mapping[str, Any] = ev.payload or {}
    op, model_id = p.get("op"), ev.key or ""
    known = run.state.setdefault("neptune_models", {})
    if op != "create" and model_id not in known:
        return f"logged model {model_id}: its 'create' event was not delivered to Neptune"
    ns = model_namespace(run.state, model_id, str(p.get("name") or model_id)) \
        if op == "create" else known[model_id]
    owner = f"model {model_id!r}"
    reasons: list[str | None] = []
    if op == "create":
        reasons.append(_atom(adapter, session, owner, _path(ns, "id"), model_id))
        reasons.append(_atom(adapter, session, owner, _path(ns, "type"), p.get("model_type")))
        if _path(ns, "status") not in session.fields:  # a replay keeps the later status
            reasons.append(_atom(adapter, session, owner, _path(ns, "status"),
                                 p.get("status")))
        reasons.append(_atom(adapter, session, owner, _path(ns, "experiment"),
                             p.get("experiment")))
        if p.get("creation_ms"):
            path = _path(ns, "creation_time")
            adapter._check(session, owner, [path])
            session.paths.claim(owner, [path])
            if path not in session.fields:  # written by an earlier session: a replay
                session.handle[path] = N.time_value(int(p["creation_ms"]))
                session.fields[path] = ("Datetime", int(p["creation_ms"]))
        reasons.append(_strings(adapter, session, owner, _path(ns, "params"),
                                p.get("params") or {}))
        reasons.append(_strings(adapter, session, owner, _path(ns, "tags"), p.get("tags") or {}))
    elif op == "params":
        reasons.append(_strings(adapter, session, owner, _path(ns, "params"),
                                p.get("params") or {}))
    elif op == "tags":
        reasons.append(_strings(adapter, session, owner, _path(ns, "tags"), p.get("tags") or {}))
    elif op == "delete_tag":
        path = _path(ns, "tags", str(p.get("key") or ""))
        if session.handle.exists(path):
            del session.handle[path]
        session.fields.pop(path, None)
    elif op == "status":
        reasons.append(_atom(adapter, session, owner, _path(ns, "status"), p.get("status")))
    elif op == "output":
        reasons.append(_atom(adapter, session, owner, _path(ns, "output_step"),
                             int(p.get("step") or 0)))
    elif op == "files":
        reasons.append(_files(adapter, session, run, owner, ns, p))
    elif op != "metrics":  # model metrics: the run's own series already hold them
        return f"unknown logged-model change {op!r}"
    return "; ".join(r for r in reasons if r) or None


def _files(adapter: Any, session: Any, run: Any, owner: str, ns: str,
           p: Mapping[str, Any]) -> str | None:
    base = [s for s in str(p.get("path") or "").split("/") if s]
    files = []
    for f in p.get("files") or []:
        rel = "/".join(base + [str(f.get("path") or "")])
        problem = empty_segments(rel, "model file path")
        if problem or ".." in rel.split("/"):
            return problem or f"model file path {rel!r} leaves the model"
        blob = run.blob_path(f["sha256"])
        if not blob.is_file():
            return f"model file {rel!r} (sha256 {f['sha256']}) is missing from the spool"
        files.append((_path(ns, "files", rel), rel, blob))
    leaves = [path for path, _, _ in files]
    problem = collisions(leaves)
    if problem:
        return f"{owner}: {problem}"
    adapter._check(session, owner, leaves)
    session.paths.claim(owner, leaves)
    for path, rel, blob in files:
        fp = ("file", str(blob))
        if session.fields.get(path) == fp:
            continue  # uploaded from this blob before (a replay)
        suffix = rel.rsplit("/", 1)[-1].rpartition(".")
        ext = suffix[2] if suffix[1] else None
        session.handle[path].upload(adapter._File.from_path(str(blob), extension=ext))
        session.fields[path] = fp
    return None


def _dataset(adapter: Any, session: Any, run: Any, d: Mapping[str, Any]) -> str | None:
    name, digest = str(d.get("name") or ""), str(d.get("digest") or "")
    if not name or not digest:
        return "dataset without a name or digest"
    ns = dataset_namespace(run.state, name, digest)
    owner = f"dataset {name!r} ({digest})"
    reasons: list[str | None] = [_atom(adapter, session, owner, _path(ns, "name"), name)]
    for key in N.DATASET_FIELDS:
        value = d.get(key)
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > _MAX_STRING:  # Neptune would truncate it: the whole text as a file
            path = _path(ns, key)
            adapter._check(session, owner, [path])
            session.paths.claim(owner, [path])
            reasons.append(adapter._upload_content(session, path, text, "json"))
        else:
            reasons.append(_atom(adapter, session, owner, _path(ns, key), text))
    reasons.append(_strings(adapter, session, owner, _path(ns, "tags"), d.get("tags") or {}))
    return "; ".join(r for r in reasons if r) or None

