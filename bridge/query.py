"""Local queries over the spool as pandas DataFrames, shaped like omega-ml's ``exp.data()``.

Runs are numbered per project in start order (1, 2, …) besides their ids. pandas is imported
only when a query runs, so ``import bridge`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from bridge.config import load
from bridge.errors import ConfigError
from bridge.spool.media import describe
from bridge.spool.reader import RunRecord, list_runs, select_events

__all__ = ["DATA_COLUMNS", "data", "runs", "select_runs"]

DATA_COLUMNS = ["experiment", "run", "event", "dt", "node", "step", "key", "value"]


def _dir(dir: Any) -> Path:
    return Path(dir).expanduser() if dir is not None else load().dir


def select_runs(records: list[RunRecord], project: str | None, run: Any) -> list[RunRecord]:
    """Pick runs by 'last', 'all', a number, a tuple/list of numbers or ids, or an id."""
    if project is not None:
        records = [r for r in records if r.project == project]
    if run == "all" or run is None:
        return records
    if run == "last":
        return records[-1:] if records else []
    if isinstance(run, bool):
        raise ConfigError(f"run must be 'last', 'all', a number or a run id, got {run!r}")
    if isinstance(run, int):
        return [r for r in records if r.number == run]
    if isinstance(run, str):
        return [r for r in records if r.run_id == run or r.run_id.startswith(run) and len(run) >= 6
                or r.name == run]
    if isinstance(run, (tuple, list, set, range)):
        wanted = set(run)
        return [r for r in records if r.number in wanted or r.run_id in wanted]
    raise ConfigError(f"run must be 'last', 'all', a number, a tuple or a run id, got {run!r}")


def _as_list(value: Any) -> list | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, set)):
        return list(value)
    return [value]


def _rows(records: list[RunRecord], event: list | None, key: list | None, step: list | None,
          node: list | None) -> Iterable[tuple]:
    for rec in records:
        if event is None or "start" in event:
            yield (rec.project, rec.number, "start", rec.start_ms, "", None, None, None, rec.run_id)
        by_file = {}
        for f in rec.files:
            by_file[f.path] = f
        for path, f in by_file.items():
            if node is not None and f.node not in node:
                continue
            for ev in select_events(f, rec.run_id, event, key, step):
                if ev.kind == "metric":
                    value = ev.value
                elif ev.kind == "media":
                    value = describe(ev.payload)
                else:
                    value = ev.payload
                yield (rec.project, rec.number, ev.kind, ev.ts_ms, ev.node, ev.step, ev.key,
                       value, rec.run_id)
        if rec.end_ms is not None and (event is None or "stop" in event):
            yield (rec.project, rec.number, "stop", rec.end_ms, "", None, None, rec.status,
                   rec.run_id)


def data(project: str | None = None, run: Any = "last", event: Any = None, key: Any = None,
         step: Any = None, node: Any = None, dir: Any = None, run_id: bool = False):
    """Events as a DataFrame with columns experiment, run, event, dt, node, step, key, value.

    Media rows (event ``media``) hold a readable description of their items as value
    (``image 224x224 image/png``, ``histogram 64 bins``, a text point's text).
    ``run``: 'last' (default), 'all', a run number, a tuple of numbers, or a run id.
    ``event``/``key``/``step``/``node`` filter (a value or a list). ``run_id=True`` adds a
    ``run_id`` column.
    """
    import pandas as pd

    records = select_runs(list_runs(_dir(dir)), project, run)
    rows = list(_rows(records, _as_list(event), _as_list(key), _as_list(step), _as_list(node)))
    df = pd.DataFrame(rows, columns=DATA_COLUMNS[:3] + ["ts_ms"] + DATA_COLUMNS[4:] + ["run_id"])
    df["dt"] = pd.to_datetime(df["ts_ms"], unit="ms", utc=True)
    df["step"] = df["step"].astype("Int64")
    df = df.sort_values(["run", "ts_ms"], kind="stable").reset_index(drop=True)
    cols = DATA_COLUMNS + (["run_id"] if run_id else [])
    return df[cols]


def runs(project: str | None = None, dir: Any = None):
    """Runs as a DataFrame: project, run number, id, name, status, times, nodes, counters."""
    import pandas as pd

    records = list_runs(_dir(dir))
    if project is not None:
        records = [r for r in records if r.project == project]
    rows = []
    for r in records:
        rows.append({
            "project": r.project, "run": r.number, "run_id": r.run_id, "name": r.name,
            "status": r.status,
            "start": pd.to_datetime(r.start_ms, unit="ms", utc=True),
            "end": pd.to_datetime(r.end_ms, unit="ms", utc=True) if r.end_ms else pd.NaT,
            "nodes": ",".join(sorted({f.node for f in r.files})),
            "files": len(r.files), "group": r.group, "warnings": r.warnings,
            "dropped": r.dropped,
            "backends": ",".join(b["name"] for b in r.backends),
        })
    columns = ["project", "run", "run_id", "name", "status", "start", "end", "nodes", "files",
               "group", "warnings", "dropped", "backends"]
    return pd.DataFrame(rows, columns=columns)
