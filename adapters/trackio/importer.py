"""Reading trackio projects (``bridge import trackio PATH``, and ``bridge verify``).

PATH is a trackio directory (``$TRACKIO_DIR``, ``~/.cache/huggingface/trackio``) or one
project's ``.db`` file. The project files are read directly with SQLite, read-only, in
trackio's schema (``names``): trackio's own readers are bound to the directory the process
started with, and reading must not run its Hub loading. Every run of every project becomes a
bridge run: config as params, every metrics row's values with their step and timestamp,
system metrics as stepless ``system/*`` series, alerts as events, media with their files,
the artifact versions a run logged with their files.
"""

from __future__ import annotations

import json
import json.scanner
import logging
import sqlite3
from contextlib import closing
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

from bridge.adapters.importing import (POINTS_BATCH, ImportError_, ImportEvent, MediaFile,
                                       MetricPoints, RowGatherer, SourceRun, artifact_event,
                                       expand, media_event, resolve_source, take_points)
from bridge.adapters.trackio import names as N
from bridge.adapters.trackio.media import item_facts
from bridge.spool.events import Kind
from bridge.spool.media import media_payload
from bridge.spool.schema import read_only_uri

__all__ = ["TrackioImporter"]

_log = logging.getLogger("bridge.importers.trackio")
_OPTIONS = frozenset({"project", "projects", "experiments"})
_BRIDGE_CONFIG = frozenset({N.CFG_TAGS, N.CFG_SUMMARY, N.CFG_NOTES, N.CFG_SYSTEM, N.CFG_STATUS,
                            N.CFG_END})


def _json(value: Any) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None


_SCAN = json.scanner.make_scanner(json.JSONDecoder())


def _row_json(value: Any) -> Any:
    """:func:`_json` of a metrics row without ``json.loads``'s per-call wrappers (a row per
    step): UTF-8 text or bytes holding one JSON object, else :func:`_json` decides."""
    text = value
    if value.__class__ is bytes and len(value) >= 2 and value[0] == 0x7B and value[1]:
        try:  # what json.loads does with bytes that start so: UTF-8
            text = value.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return _json(value)
    if text.__class__ is str and text[:1] == "{":
        try:
            found, end = _SCAN(text, 0)
            if end == len(text):
                return found
        except Exception:  # noqa: BLE001 - _json decides
            pass
    return _json(value)


try:  # trackio's own JSON library (trackio depends on it): its rows are read with it
    from orjson import loads as _orjson_loads
except ImportError:  # a trackio directory read without trackio installed
    _orjson_loads = None


def _numbers_row(value: Any) -> Any:
    """A metrics row for the stream's fast path, which takes a row only if every value is a
    plain number, as ``float()`` of it: orjson's reading where it is installed (2-3x
    ``json``'s; the same floats: an integer past 64 bits is a float there and an int in
    ``json``, ``float()`` of either is the same), else :func:`_row_json`'s. None where orjson
    refuses the row (NaN tokens): :meth:`TrackioImporter._row` then reads it."""
    if _orjson_loads is None:
        return _row_json(value)
    try:
        return _orjson_loads(value)
    except Exception:  # noqa: BLE001 - _row decides
        return None


_PLAIN = frozenset({float, int})  # a metrics value the rows take as it is
_BATCH_ROWS = 256  # metrics rows read, and looked at, at a time


def _plain_keys(names: tuple[str, ...]) -> bool:
    """No key of trackio's own renaming (``__``): each is the key it was logged as."""
    return not any(k[:2] == "__" for k in names)


def _uniform(batch: list[tuple], ms_of: N.IsoMs
             ) -> tuple[tuple[str, ...], list[Any], list[int], list[Any]] | None:
    """A batch of metrics rows ``(step, timestamp, metrics, bridge log id)`` as rows of
    points: the keys, the steps and times (one a row) and the values, row after row; None
    unless every row holds plain numbers only, under the same keys in the same order, at its
    step (no log id of bridge's). The looks are made in C (``map``, ``count``), not a row at a
    time; the timestamps are read a row at a time."""
    steps, stamps, texts, ours = zip(*batch)
    if ours.count(None) != len(ours):
        return None
    try:
        rows = list(map(_orjson_loads or _row_json, texts))
        names = tuple(rows[0])
        if list(map(tuple, rows)).count(names) != len(rows):
            return None
        values = list(chain.from_iterable(map(dict.values, rows)))
    except Exception:  # noqa: BLE001 - a row orjson refuses, or not a dict: a row at a time
        return None
    if not _PLAIN.issuperset(map(type, values)):
        return None
    times = list(map(ms_of, stamps))
    if None in times:
        times = [t or 0 for t in times]
    return names, list(steps), times, values


def _in_order(columns: str, table: str, col: str) -> str:
    """A run's rows of ``table`` in the order they were logged. ``WHERE col = ? ORDER BY id``
    finds them through trackio's ``(run_id, …)`` index and then sorts them, whole rows, in a
    temporary table before the first comes out; the run's ids looked up first let SQLite
    walk the table in id order with no sort."""
    return (f"SELECT {columns} FROM {table} WHERE id IN "
            f"(SELECT id FROM {table} WHERE {col} = ?) ORDER BY id")


def _scanned(columns: str, table: str, col: str) -> str:
    """:func:`_in_order` for a run that holds most of ``table``'s rows: the whole table
    walked in id order, the run's rows kept, cheaper than looking each row up by its id."""
    return f"SELECT {columns} FROM {table} NOT INDEXED WHERE {col} = ? ORDER BY id"


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


class TrackioImporter:
    """trackio projects as bridge runs; see the module docstring."""

    name: ClassVar[str] = "trackio"

    def __init__(self, location: str | Path | None, **opts: Any) -> None:
        unknown = set(opts) - _OPTIONS
        if unknown:
            raise ImportError_(f"trackio: unknown option(s) {', '.join(sorted(unknown))}")
        self.project: str | None = opts.get("project")
        wanted = list(opts.get("projects") or []) + list(opts.get("experiments") or [])
        self.wanted = {N.canonical_project(p) for p in wanted} or None
        self.warnings: list[str] = []
        path = Path(location).expanduser() if location else N.default_dir()
        if not path.exists():
            raise ImportError_(f"trackio: {path} does not exist")
        if path.is_file():
            self.root, self.dbs = path.parent, [path]
        else:
            self.root = path
            self.dbs = sorted(p for p in path.glob(f"*{N.DB_EXT}")
                              if not p.name.startswith("registry-"))

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        _log.warning("%s", message)

    @staticmethod
    def _connect(db: Path) -> sqlite3.Connection:
        return sqlite3.connect(read_only_uri(db), uri=True, timeout=30)

    # -- listing ---------------------------------------------------------------------------------

    def runs(self) -> Iterator[SourceRun]:
        for db in self.dbs:
            if self.wanted is not None and db.stem not in self.wanted:
                continue
            try:
                db = resolve_source(db, [self.root])
                with closing(self._connect(db)) as conn:
                    found = self._runs_of(conn, db)
            except (sqlite3.Error, ImportError_) as exc:
                self._warn(f"{db.name} skipped: {exc}")
                continue
            yield from found

    def _runs_of(self, conn: sqlite3.Connection, db: Path) -> list[SourceRun]:
        seen: dict[str, dict[str, Any]] = {}
        for table in (N.METRICS, N.SYSTEM_METRICS, N.ALERTS):
            cols = _columns(conn, table)
            if not cols:
                continue
            col = "run_id" if "run_id" in cols else "run_name"
            groups = conn.execute(
                f"SELECT {col}, run_name, MIN(timestamp), MAX(timestamp), COUNT(*) FROM {table} "
                f"GROUP BY {col}, run_name").fetchall()
            total = sum(g[4] for g in groups)
            for rid, name, first, last, count in groups:
                r = seen.setdefault(rid, {"col": col, "name": name, "first": first, "last": last,
                                          "config": {}, "most": False})
                if table == N.METRICS:  # the run holds most of the metrics rows
                    r["most"] = r.get("most") or 2 * count >= total
                r["first"] = min((t for t in (r["first"], first) if t), default=None)
                r["last"] = max((t for t in (r["last"], last) if t), default=None)
        cols = _columns(conn, N.CONFIGS)
        if cols:
            col = "run_id" if "run_id" in cols else "run_name"
            for rid, name, config in conn.execute(
                    f"SELECT {col}, run_name, config FROM {N.CONFIGS}"):
                r = seen.setdefault(rid, {"col": col, "name": name, "first": None, "last": None,
                                          "most": False})
                cfg = _json(config)
                r["config"] = cfg if isinstance(cfg, dict) else {}
        out = []
        for rid, r in seen.items():
            cfg = r.get("config") or {}
            start = N.ms_from_iso(cfg.get(N.CFG_CREATED)) or N.ms_from_iso(r["first"]) or 0
            end = N.ms_from_iso(cfg.get(N.CFG_END)) or N.ms_from_iso(r["last"])
            status = cfg.get(N.CFG_STATUS)
            tags = {"trackio.project": db.stem}
            if cfg.get(N.CFG_USERNAME):
                tags["trackio.username"] = str(cfg[N.CFG_USERNAME])
            out.append(SourceRun(
                "trackio", str(rid), self.project or db.stem,
                name=None if r["name"] == rid else r["name"],  # bridge names a nameless run by id
                notes=cfg.get(N.CFG_NOTES) if isinstance(cfg.get(N.CFG_NOTES), str) else None,
                group=cfg.get(N.CFG_GROUP) if isinstance(cfg.get(N.CFG_GROUP), str) else None,
                start_ms=start, end_ms=end,
                status=status if status in N.FINAL_STATUSES else "FINISHED",
                handle=(db, r["col"], rid, cfg, r["most"]), extra_tags=tags))
        out.sort(key=lambda s: (s.start_ms, s.source_id))
        return out

    # -- events ----------------------------------------------------------------------------------

    def events(self, run: SourceRun) -> Iterator[ImportEvent]:
        return expand(self.stream(run))

    def stream(self, run: SourceRun) -> Iterator[Any]:
        """The run's events, its metric points gathered as :class:`MetricRows` (a trackio
        row of plain numbers) or :class:`MetricPoints` (the sink writes them without a call a
        point)."""
        db, col, rid, cfg, most = run.handle
        yield from self._config(cfg, run.start_ms)
        flat: list[Any] = []  # points since the last event, handed over as a copy
        with closing(self._connect(db)) as conn:
            if _columns(conn, N.METRICS):
                yield from self._metrics(run, conn, col, rid, most, flat)
            if _columns(conn, N.SYSTEM_METRICS):
                for ts, metrics in conn.execute(
                        _in_order("timestamp, metrics", N.SYSTEM_METRICS, col), (rid,)):
                    values = _json(metrics)
                    ms = N.ms_from_iso(ts) or 0
                    for key, value in (values.items() if isinstance(values, dict) else ()):
                        num = self._number(value)
                        if num is not None:
                            flat.extend((N.SYSTEM_PREFIX + key, None, ms, num))
                    if len(flat) >= POINTS_BATCH:
                        yield take_points(flat)
            if flat:
                yield take_points(flat)
            yield from self._artifacts(run, conn, db, col, rid)
            if _columns(conn, N.ALERTS):
                for title, text, level, step, ts, alert_id in conn.execute(
                        f"SELECT title, text, level, step, timestamp, alert_id FROM {N.ALERTS} "
                        f"WHERE {col} = ? ORDER BY id", (rid,)):
                    if N.parse_log_id(alert_id) is not None:
                        payload = _json(text)
                    else:
                        payload = {"text": text, "level": level}
                    yield ImportEvent(Kind.EVENT.value, title, N.ms_from_iso(ts) or 0,
                                      step=step, payload=payload)

    def _metrics(self, run: SourceRun, conn: sqlite3.Connection, col: str, rid: Any,
                 most: bool, flat: list[Any]) -> Iterator[Any]:
        """The run's metrics rows. The bulk of a run, rows of plain numbers under the same
        plain keys, as rows of points (:class:`RowGatherer`), a batch of rows at a time with
        no Python work a row but its timestamp (:func:`_uniform`); a batch that is not all
        such rows, a row at a time; anything else before the points after it."""
        lid = "log_id" if "log_id" in _columns(conn, N.METRICS) else "NULL"
        # Only bridge's own log ids matter (a row without a step, see _row): trackio's are
        # read as NULL, so that a batch of them needs no look at each.
        ours = f"CASE WHEN substr({lid}, 1, {len(N.LOG_ID_PREFIX)}) = ? THEN {lid} END"
        select = _scanned if most else _in_order
        cur = conn.execute(select(f"step, timestamp, metrics, {ours}", N.METRICS, col),
                           (N.LOG_ID_PREFIX, rid))
        rows, ms_of = RowGatherer(), N.IsoMs()
        while batch := cur.fetchmany(_BATCH_ROWS):
            found = _uniform(batch, ms_of)
            if found is not None:
                names, steps, times, values = found
                if names != rows.names:
                    if not _plain_keys(names):
                        found = None
                    else:
                        yield from rows.switch(names)
            if found is not None:
                rows.steps += steps
                rows.ts_ms += times
                rows.values += values
                if len(rows.values) >= rows.BATCH:
                    yield from rows.take()
                continue
            for step, ts, metrics, log_id in batch:
                yield from self._metrics_row(run, rows, ms_of, step, ts, metrics, log_id, flat)
        yield from rows.take()

    def _metrics_row(self, run: SourceRun, rows: RowGatherer, ms_of: N.IsoMs, step: Any,
                     ts: Any, metrics: Any, log_id: Any, flat: list[Any]) -> Iterator[Any]:
        """One metrics row: its points, or what it holds besides, after the points before."""
        ours = N.parse_log_id(log_id) if log_id is not None else None
        if ours is None or not ours[2]:  # a row at its step (see _row)
            row = _numbers_row(metrics)
            if row.__class__ is dict and _PLAIN.issuperset(map(type, row.values())):
                names = tuple(row)
                if names == rows.names or _plain_keys(names):
                    if names != rows.names:
                        yield from rows.switch(names)
                    rows.steps.append(step)
                    rows.ts_ms.append(ms_of(ts) or 0)
                    rows.values += row.values()
                    if len(rows.values) >= rows.BATCH:
                        yield from rows.take()
                    return
        yield from rows.take()  # the points before this row go first
        for ev in self._row(run, step, ts, metrics, log_id, flat):
            if flat:
                yield take_points(flat)
            yield ev
        if flat:
            yield take_points(flat)

    def _artifacts(self, run: SourceRun, conn: sqlite3.Connection, db: Path, col: str,
                   rid: Any) -> Iterator[ImportEvent]:
        """The artifact versions the run logged (its ``output`` links), files from trackio's
        content-addressed store; versions it used (``input``) as events."""
        if not (_columns(conn, N.RUN_ARTIFACT_LINKS) and _columns(conn, N.ARTIFACT_VERSIONS)):
            return
        link_col = col if col in _columns(conn, N.RUN_ARTIFACT_LINKS) else "run_name"
        store = self.root / N.ARTIFACTS_DIR
        for name, atype, version, manifest, metadata, created, direction in conn.execute(
                f"SELECT a.name, a.type, v.version, v.manifest, v.metadata, l.created_at, "
                f"l.direction FROM {N.RUN_ARTIFACT_LINKS} l "
                f"JOIN {N.ARTIFACT_VERSIONS} v ON v.id = l.artifact_version_id "
                f"JOIN {N.ARTIFACTS} a ON a.id = v.artifact_id WHERE l.{link_col} = ? "
                "ORDER BY l.id", (rid,)):
            meta = _json(metadata)
            mark = meta.get(N.ARTIFACT_MARK) if isinstance(meta, dict) else None
            mark = mark if isinstance(mark, dict) else {}
            ms = mark.get("ts_ms") if isinstance(mark.get("ts_ms"), int) else (
                N.ms_from_iso(created) or run.start_ms)
            if direction != N.LINK_OUTPUT:
                yield ImportEvent(Kind.EVENT.value, "trackio.use_artifact", ms,
                                  payload={"name": name, "type": atype, "version": version})
                continue
            files = []
            for entry in _json(manifest) or []:
                if not isinstance(entry, dict) or "ref" in entry:
                    self._warn(f"{run.name}: artifact {name} v{version}: reference "
                               f"{entry.get('path') if isinstance(entry, dict) else entry!r} "
                               "skipped (bridge imports files only)")
                    continue
                try:
                    local = resolve_source(
                        N.artifact_blob(self.root, db.stem, str(entry["digest"])), [store])
                    files.append((str(entry["path"]), local))
                except (ImportError_, KeyError) as exc:
                    self._warn(f"{run.name}: artifact {name} v{version} file skipped: {exc}")
            if files:
                yield artifact_event(str(mark.get("name") or name), files, ms,
                                     artifact_type=str(mark.get("type") or atype),
                                     step=mark.get("step") if isinstance(mark.get("step"), int)
                                     else None)

    def _config(self, cfg: Mapping[str, Any], ts: int) -> Iterator[ImportEvent]:
        for key, value in cfg.items():
            if key in N.RESERVED_CONFIG or key in _BRIDGE_CONFIG:
                continue
            yield ImportEvent(Kind.PARAM.value, key, ts, payload=value)
        for key, value in (cfg.get(N.CFG_TAGS) or {}).items():
            yield ImportEvent(Kind.TAG.value, key, ts, payload=str(value))
        for key, value in (cfg.get(N.CFG_SUMMARY) or {}).items():
            yield ImportEvent(Kind.SUMMARY.value, key, ts, payload=value)
        if cfg.get(N.CFG_SYSTEM) is not None:
            yield ImportEvent(Kind.SYSTEM.value, "system", ts, payload=cfg[N.CFG_SYSTEM])

    @staticmethod
    def _number(value: Any) -> float | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and value in N.NONFINITE:
            return N.NONFINITE[value]
        return None

    def _row(self, run: SourceRun, step: int, ts: str, metrics: Any, log_id: Any,
             flat: list[Any]) -> Iterator[ImportEvent]:
        """The row's metric points appended to ``flat`` (see :class:`MetricPoints`), its other
        values yielded as events."""
        values = _row_json(metrics)
        if not isinstance(values, dict):
            self._warn(f"{run.name}: unreadable metrics row at step {step} skipped")
            return
        ours = N.parse_log_id(log_id) if log_id is not None else None
        at = None if ours is not None and ours[2] else step
        ms = N.ms_from_iso(ts) or 0
        parts: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
        point = flat.extend
        for stored, value in values.items():
            cls = value.__class__
            if (cls is float or cls is int) and not stored.startswith("__"):
                # A plain number under a plain key (the bulk of a run): _number and
                # user_key would return float(value) and the key itself.
                point((stored, at, ms, float(value)))
                continue
            key = N.user_key(stored)
            num = self._number(value)
            if num is not None:
                point((key, at, ms, num))
            elif isinstance(value, str):
                yield media_event(key, at, ms, "text", data={"text": value})
            elif isinstance(value, dict) and isinstance(value.get("_type"), str):
                mark = value.get(N.MEDIA_MARK)
                if isinstance(mark, Mapping) and "part" in mark and "key" in mark:
                    parts.setdefault(str(mark["key"]), []).append((int(mark["part"]), value))
                    continue
                ev = self._media(run, key, at, ms, [value])
                if ev is not None:
                    yield ev
            else:
                yield ImportEvent(Kind.EVENT.value, key, ms, step=at, payload={"value": value})
        for key, found in parts.items():
            ev = self._media(run, key, at, ms, [v for _, v in sorted(found, key=lambda p: p[0])])
            if ev is not None:
                yield ev

    def _file(self, run: SourceRun, value: Mapping[str, Any]) -> tuple[str, MediaFile] | None:
        rel = str(value.get("file_path") or "")
        media_root = self.root / N.MEDIA_DIR
        try:
            path = resolve_source(media_root / rel, [media_root])
        except ImportError_ as exc:
            self._warn(f"{run.name}: media file {rel!r} skipped: {exc}")
            return None
        mtype, facts = item_facts(value)
        mime, name = facts.pop("mime"), facts.pop("name")
        return mtype, MediaFile(path, mime, name, facts)

    def _media(self, run: SourceRun, key: str, step: int | None, ms: int,
               values: list[Mapping[str, Any]]) -> ImportEvent | None:
        first = values[0]
        ttype = first.get("_type")
        source = {"vendor": N.VENDOR, "type": ttype}
        if ttype == N.T_HISTOGRAM:
            return media_event(key, step, ms, "histogram", source=source,
                               data={"edges": list(first.get("bins") or []),
                                     "counts": list(first.get("values") or [])})
        if ttype == N.T_MARKDOWN:
            return media_event(key, step, ms, "text", data={"text": str(first.get("_value", ""))},
                               source=source)
        if ttype == N.T_TABLE:
            return self._table(run, key, step, ms, first, source)
        if "file_path" in first:
            files = [f for f in (self._file(run, v) for v in values) if f is not None]
            if not files:
                return None
            return media_event(key, step, ms, files[0][0], [f for _, f in files], source=source)
        self._warn(f"{run.name}: value {key!r} of type {ttype!r} at step {step} is not media "
                   "bridge reads; kept as an event")
        return ImportEvent(Kind.EVENT.value, key, ms, step=step, payload={"value": dict(first)})

    def _table(self, run: SourceRun, key: str, step: int | None, ms: int,
               value: Mapping[str, Any], source: dict[str, Any]) -> ImportEvent:
        rows = [r for r in value.get("_value") or [] if isinstance(r, dict)]
        mark = value.get(N.MEDIA_MARK) if isinstance(value.get(N.MEDIA_MARK), Mapping) else {}
        columns = list(mark.get("columns") or [])
        for r in rows:
            columns.extend(c for c in r if c not in columns)
        cells: dict[str, MediaFile] = {}
        out_rows = []
        for i, r in enumerate(rows):
            out = []
            for c in columns:
                cell = r.get(c)
                media = cell if isinstance(cell, list) else [cell]
                if media and all(isinstance(m, dict) and "file_path" in m for m in media):
                    items, mtype = [], "image"
                    for m in media:
                        got = self._file(run, m)
                        if got is None:
                            continue
                        mtype, f = got
                        ref = f"cell{i}_{columns.index(c)}_{len(items)}"
                        cells[ref] = f
                        items.append({"file": ref, "mime": f.mime, "name": f.name, **f.facts})
                    cell = {"media": media_payload(mtype, items)}
                out.append(cell)
            out_rows.append(out)
        return media_event(key, step, ms, "table", data={"columns": columns, "rows": out_rows},
                           source=source, cells=cells)
