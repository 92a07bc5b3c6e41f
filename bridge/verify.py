"""``bridge verify``: read a run back from a destination and compare it with the spool.

Reading a destination back is importing it: each backend's importer (MLflow through its API,
W&B, Neptune and Comet through their offline files) turns the remote copy into events, and
both sides are reduced to a :class:`Snapshot` and compared field by field. The result is a
:class:`FidelityReport`: for each field, how much was kept, and what was lost.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from bridge.spool.media import blob_items, resolve_files
from bridge.spool.reader import RunRecord, find_run, iter_events

__all__ = ["FidelityReport", "Snapshot", "compare", "destination_snapshot", "spool_snapshot",
           "verify_run"]


@dataclass
class Snapshot:
    """A run reduced to what can be compared across backends."""

    metrics: dict[str, list[tuple[int | None, int, float]]] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    summary: dict[str, str] = field(default_factory=dict)
    artifacts: set[str] = field(default_factory=set)  # sha256 of every artifact file
    # key -> media points: (step, type, sha256 of each file, inline data as canonical JSON)
    media: dict[str, list[tuple[int | None, str, tuple[str, ...], str]]] = field(
        default_factory=dict)
    name: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    status: str | None = None


@dataclass
class FieldCount:
    expected: int = 0
    kept: int = 0

    @property
    def lost(self) -> int:
        return self.expected - self.kept

    @property
    def percent(self) -> float:
        return 100.0 if self.expected == 0 else 100.0 * self.kept / self.expected


@dataclass
class FidelityReport:
    run_id: str
    backend: str
    found: bool
    fields: dict[str, FieldCount] = field(default_factory=dict)
    per_key: dict[str, dict[str, int]] = field(default_factory=dict)
    media_per_key: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.found and all(c.lost == 0 for name, c in self.fields.items()
                                  if name in ("points", "steps", "media"))

    def as_dict(self) -> dict:
        out = asdict(self)
        out["fields"] = {k: {"expected": v.expected, "kept": v.kept, "lost": v.lost,
                             "percent": round(v.percent, 3)} for k, v in self.fields.items()}
        out["complete"] = self.complete
        return out


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _add_event(snap: Snapshot, kind: str, key: str | None, step: int | None, ts: int,
               value: float | None, payload: Any, files: Iterable[str]) -> None:
    if kind == "metric" and key is not None:
        snap.metrics.setdefault(key, []).append((step, ts, value if value is not None else math.nan))
    elif kind == "param" and key is not None:
        _flat(key, payload, snap.params)
    elif kind == "tag" and key is not None:
        snap.tags[key] = payload if isinstance(payload, str) else json.dumps(payload)
    elif kind == "summary" and key is not None:
        _flat(key, payload, snap.summary)
    elif kind == "artifact":
        snap.artifacts.update(files)
    elif kind == "media" and key is not None and isinstance(payload, dict):
        shas = tuple(sorted(i["sha256"] for i in blob_items(payload)))
        snap.media.setdefault(key, []).append(
            (step, str(payload.get("type")), shas, _canonical_data(payload)))


def _canonical_data(payload: dict) -> str:
    """Inline media data as comparable JSON: histogram numbers to 6 significant digits (a
    vendor may store float32), a table's cells without its media (compared by sha256)."""
    data = payload.get("data")
    if payload.get("type") == "histogram" and isinstance(data, dict):
        data = {k: [float(f"{float(x):.6g}") for x in data.get(k) or []]
                for k in ("edges", "counts")}
    elif payload.get("type") == "table" and isinstance(data, dict):
        data = {"columns": data.get("columns"),
                "rows": [[None if isinstance(c, dict) and "media" in c else c for c in row]
                         for row in data.get("rows") or []]}
    return json.dumps(data, sort_keys=True, default=str)


def spool_snapshot(spool_dir: Path, rec: RunRecord) -> Snapshot:
    snap = Snapshot(name=rec.name, start_ms=rec.start_ms, end_ms=rec.end_ms, status=rec.status)
    for e in iter_events(rec.files, rec.run_id):
        files = [f["sha256"] for f in (e.payload or {}).get("files", [])] if e.kind == "artifact" else []
        _add_event(snap, e.kind, e.key, e.step, e.ts_ms, e.value, e.payload, files)
    return snap


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _importer_for(spool_dir: Path, rec: RunRecord, spec: dict):
    """The importer that reads back what the backend's adapter wrote: where and how is the
    vendor's own knowledge (``bridge.adapters.<vendor>.names.readback_source``)."""
    import importlib

    from bridge.importers import SOURCES, make_importer

    name = spec["name"]
    if name not in SOURCES:
        raise ValueError(f"bridge verify cannot read back backend {name!r}")
    names = importlib.import_module(f"bridge.adapters.{name}.names")
    if not hasattr(names, "readback_source"):  # a source only (TensorBoard), not a destination
        raise ValueError(f"bridge verify cannot read back backend {name!r}")
    options = {k: v for k, v in spec.items() if k not in ("name", "id")}
    location, importer_options = names.readback_source(Path(spool_dir), rec.project, rec.run_id,
                                                       options)
    return make_importer(name, str(location), **importer_options)


def destination_snapshot(spool_dir: Path, rec: RunRecord, spec: dict) -> Snapshot | None:
    """The run as the destination holds it, or None when the destination has no such run."""
    importer = _importer_for(spool_dir, rec, spec)
    matches = []
    for src in importer.runs():
        if src.run_id == rec.run_id or src.source_id == rec.run_id or spec["name"] == "mlflow":
            matches.append(src)
    if not matches:
        return None
    snap = Snapshot()
    for src in matches:
        snap.name = snap.name or src.name
        snap.start_ms = src.start_ms if snap.start_ms is None else min(snap.start_ms, src.start_ms)
        snap.end_ms = src.end_ms or snap.end_ms
        snap.status = src.status
        for ev in importer.events(src):
            shas = [_sha(local) for _, local in ev.files] if ev.kind == "artifact" else []
            payload = ev.payload
            if ev.kind == "media":
                stored = {ref: (_sha(c) if isinstance(c, Path) else hashlib.sha256(c).hexdigest(), 0)
                          for ref, c in ev.files}
                payload = resolve_files(payload, stored)
            _add_event(snap, ev.kind, ev.key, ev.step, ev.ts_ms, ev.value, payload, shas)
    return snap


def _norm(key: str) -> str:
    return key.replace("|", ".").replace("/", ".")


def _vkey(v: float) -> Any:
    return "nan" if isinstance(v, float) and math.isnan(v) else v


def compare(expected: Snapshot, got: Snapshot, run_id: str, backend: str) -> FidelityReport:
    """Field by field: how many of the spool's items the destination holds unchanged."""
    rep = FidelityReport(run_id, backend, True)
    points, steps, stamps = FieldCount(), FieldCount(), FieldCount()
    for key, pts in expected.metrics.items():
        have = got.metrics.get(key, [])
        values = Counter(_vkey(v) for _, _, v in have)
        with_step = Counter((s, _vkey(v)) for s, _, v in have)
        with_ts = Counter((s, t, _vkey(v)) for s, t, v in have)
        kept = kept_steps = kept_ts = 0
        for s, t, v in pts:
            if values[_vkey(v)] > 0:
                values[_vkey(v)] -= 1
                kept += 1
            if s is None or with_step[(s, _vkey(v))] > 0:
                if s is not None:
                    with_step[(s, _vkey(v))] -= 1
                kept_steps += 1
            if with_ts[(s, t, _vkey(v))] > 0:
                with_ts[(s, t, _vkey(v))] -= 1
                kept_ts += 1
        points.expected += len(pts)
        points.kept += kept
        steps.expected += len(pts)
        steps.kept += kept_steps
        stamps.expected += len(pts)
        stamps.kept += kept_ts
        rep.per_key[key] = {"expected": len(pts), "found": len(have), "kept": kept,
                            "steps_kept": kept_steps, "timestamps_kept": kept_ts}
    rep.fields["points"] = points
    rep.fields["steps"] = steps
    rep.fields["timestamps"] = stamps
    for name in ("params", "tags", "summary"):
        want: dict = getattr(expected, name)
        have: dict = getattr(got, name)
        # Nesting separators differ by backend: '.' (MLflow), '|' (Comet), '/' (Neptune).
        normalized = {_norm(k): v for k, v in have.items()}
        rep.fields[name] = FieldCount(len(want), sum(
            1 for k, v in want.items() if normalized.get(_norm(k)) == v or have.get(k) == v))
    rep.fields["artifact_files"] = FieldCount(len(expected.artifacts),
                                              len(expected.artifacts & got.artifacts))
    _compare_media(expected, got, rep)
    rep.fields["start_time"] = FieldCount(1, int(expected.start_ms == got.start_ms))
    rep.fields["name"] = FieldCount(1, int(expected.name == got.name))
    return rep


def _compare_media(expected: Snapshot, got: Snapshot, rep: FidelityReport) -> None:
    """Media per key and step: the event is there (``media``), each file's bytes are
    identical by sha256 (``media_files``), inline data (histograms, text, tables, curves)
    is equal (``media_data``)."""
    events, files, data = FieldCount(), FieldCount(), FieldCount()
    have_by_key = {_norm(k): v for k, v in got.media.items()}
    for key, points in expected.media.items():
        have = have_by_key.get(_norm(key), [])
        at_step: dict[Any, list] = {}
        for p in have:
            at_step.setdefault(p[0], []).append(p)
        kept = kept_files = kept_data = n_files = 0
        for step, mtype, shas, canon in points:
            n_files += len(shas)
            # A stepless event matches at any step: a destination numbers them (W&B) as it
            # numbers stepless metric points.
            there = have if step is None else at_step.get(step, [])
            if there:
                kept += 1
                pool = Counter(s for p in there for s in p[2])
                for sha in shas:
                    if pool[sha] > 0:
                        pool[sha] -= 1
                        kept_files += 1
                if canon == "null" or any(p[3] == canon for p in there):
                    kept_data += 1
        events.expected += len(points)
        events.kept += kept
        files.expected += n_files
        files.kept += kept_files
        data.expected += len(points)
        data.kept += kept_data
        rep.media_per_key[key] = {"expected": len(points), "found": len(have),
                                       "kept": kept, "files": n_files,
                                       "files_kept": kept_files, "data_kept": kept_data}
    rep.fields["media"] = events
    rep.fields["media_files"] = files
    rep.fields["media_data"] = data


def verify_run(spool_dir: Path, run_ref: str, backend: str) -> FidelityReport:
    """Compare one run in the spool with its copy in ``backend`` (a name or an ``id``)."""
    rec = find_run(spool_dir, run_ref)
    if rec is None:
        raise ValueError(f"no run {run_ref} in {spool_dir}")
    specs = [b for b in rec.backends if b["name"] == backend or b.get("id") == backend]
    spec = specs[0] if specs else {"name": backend}
    got = destination_snapshot(spool_dir, rec, spec)
    if got is None:
        return FidelityReport(rec.run_id, backend, False, notes=["run not found in destination"])
    return compare(spool_snapshot(spool_dir, rec), got, rec.run_id, backend)

