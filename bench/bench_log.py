"""Hot-path and ingestion benchmark of bridge's spool, side by side with its alternatives.

Run ``python -m bench.bench_log [--quick] [--no-wandb] [--json out.json]``. It measures, in
one process so that the figures are comparable:

1. the caller's time of ``run.log({k keys}, step=i)`` for k = 2, 10, 100, next to a
   list-append floor, a per-call SQLite commit and (when importable) ``wandb.log`` offline.
   Contenders alternate in rounds (A, B, C, D, A, B, …, with the starting one rotated) so
   that the noise of a shared machine falls on all of them alike. Each turn times single
   calls with ``perf_counter_ns`` (raw, and corrected by the timer's own measured cost) and
   batches of 100 calls (total / 100, no timer overhead worth speaking of).
2. sustained ingestion: N calls in a tight loop then ``flush()`` (time until everything is
   committed), next to an ``executemany`` of the same rows into the same schema in one
   transaction, alternated and repeated.
3. ``import bridge`` time over bare Python, in fresh interpreters, and which heavy modules
   it pulls in.

It prints a text report and a markdown section for BENCHMARKS.md. It is a benchmark, not a
test: nothing here asserts, the targets are printed as met or missed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import random
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import bridge
from bridge.spool.schema import connect, create_schema

__all__ = ["main"]

_pc = time.perf_counter_ns
_INSERT = ("INSERT INTO events (run_id, kind, key, step, ts_ms, value, payload) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
_HEAVY = ("pandas", "mlflow", "wandb", "neptune", "comet_ml", "pyarrow", "numpy")
_FORBIDDEN = ("pandas", "mlflow", "wandb", "neptune", "comet_ml")
_BATCH = 100
_POOL = 128  # distinct payload dicts, cycled, so that memory stays flat

# The targets.
TARGET_MEDIAN_NS = 2_000
TARGET_VS_WANDB = 40.0
TARGET_INGEST_RATIO = 0.6
TARGET_IMPORT_MS = 40.0


# -- helpers -------------------------------------------------------------------------------


def _p(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    i = max(0, min(len(sorted_values) - 1, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def _keys(k: int) -> list[str]:
    base = ["loss", "acc"]
    return base[:k] + [f"metric_{j}" for j in range(max(0, k - 2))]


def _pool(k: int, seed: int) -> list[dict[str, float]]:
    rnd = random.Random(seed)
    keys = _keys(k)
    return [{key: rnd.random() for key in keys} for _ in range(_POOL)]


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return 0


def _children_idle(deadline_s: float = 3.0) -> None:
    """Wait (bounded) until child processes stop using CPU: wandb-core digests its backlog
    after ``wandb.log`` returned, and must not steal the next contender's core."""
    try:
        import psutil
    except ImportError:
        return
    me = psutil.Process()
    end = time.monotonic() + deadline_s

    def cpu() -> float:
        total = 0.0
        for c in me.children(recursive=True):
            try:
                t = c.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    last = cpu()
    while time.monotonic() < end:
        time.sleep(0.02)
        now = cpu()
        if now - last < 0.002:
            return
        last = now


# -- contenders of the hot path ------------------------------------------------------------


@dataclass
class Contender:
    """One way of recording a row of metrics, behind the same call signature."""

    name: str
    log: Callable[..., Any]
    settle: Callable[[], None] = lambda: None  # untimed, after each turn
    step: int = 0


def _floor(run_id: str) -> tuple[Contender, Callable[[], None]]:
    """What bridge's ``log`` must do at the least: stamp the time and append the same tuple
    its writer queue receives. No validation, no thread."""
    buf: list = []
    append = buf.append
    now = time.time_ns

    def log(data: dict, step: int | None = None) -> None:
        append((0, run_id, step, now() // 1_000_000, list(data.items())))

    return Contender("list-append floor", log, settle=buf.clear), buf.clear


def _sqlite_per_call(path: Path, run_id: str) -> tuple[Contender, Callable[[], None]]:
    """The naive design: one row per key and a commit per call (WAL, synchronous=NORMAL)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    create_schema(conn, {"file_id": "bench"})
    execute, executemany = conn.execute, conn.executemany
    now = time.time_ns

    def log(data: dict, step: int | None = None) -> None:
        ts = now() // 1_000_000
        execute("BEGIN")
        executemany(_INSERT, [(run_id, "metric", k, step, ts, v, None) for k, v in data.items()])
        execute("COMMIT")

    return Contender("sqlite commit/call", log), conn.close


def _bridge(spool: Path) -> tuple[Contender, Callable[[], None], Any]:
    run = bridge.init(project="bench", name="hot-path", dir=spool, sync="offline")
    t = getattr(run, "_system_thread", None)
    if t is not None:
        t.join(10)
    run.flush()
    return Contender("bridge run.log", run.log, settle=run.flush), run.finish, run


def _wandb(tmp: Path) -> tuple[Contender, Callable[[], None]] | None:
    """``wandb.log`` offline, isolated in a temporary directory, no key, no network."""
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY"):
        os.environ.pop(var, None)
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp),
                      WANDB_CONFIG_DIR=str(tmp), WANDB_CACHE_DIR=str(tmp),
                      WANDB_DATA_DIR=str(tmp), WANDB_DISABLE_CODE="true")
    try:
        import wandb
    except Exception:
        return None
    run = wandb.init(project="bench", dir=str(tmp), mode="offline")
    return Contender("wandb.log offline", run.log, settle=_children_idle), run.finish


# -- timing --------------------------------------------------------------------------------


def _timer_overhead(n: int) -> list[int]:
    out: list[int] = []
    append, pc = out.append, _pc
    for _ in range(n):
        t0 = pc()
        t1 = pc()
        append(t1 - t0)
    return out


def _per_call(c: Contender, pool: list[dict], n: int) -> list[int]:
    out: list[int] = []
    append, pc, log = out.append, _pc, c.log
    step = c.step
    mask = _POOL - 1
    for j in range(n):
        d = pool[j & mask]
        s = step + j
        t0 = pc()
        log(d, step=s)
        t1 = pc()
        append(t1 - t0)
    c.step = step + n
    return out


def _batched(c: Contender, pool: list[dict], n_batches: int) -> list[float]:
    out: list[float] = []
    append, pc, log = out.append, _pc, c.log
    batch = pool[:_BATCH]
    step = c.step
    for _ in range(n_batches):
        s = step
        t0 = pc()
        for d in batch:
            log(d, step=s)
            s += 1
        t1 = pc()
        append((t1 - t0) / _BATCH)
        step = s
    c.step = step
    return out


def _calibrate(c: Contender, pool: list[dict], seconds: float) -> float:
    """Warm the contender up and return its cost per call in ns."""
    n, t0 = 0, _pc()
    while True:
        _per_call(c, pool, 20)
        n += 20
        el = _pc() - t0
        if el > seconds * 1e9 and n >= 60:
            break
    c.settle()
    return el / n


@dataclass
class Samples:
    per_call: list[int] = field(default_factory=list)
    batched: list[float] = field(default_factory=list)


def hot_path(tmp: Path, widths: list[int], rounds: int, turn_s: float,
             with_wandb: bool) -> dict:
    """Alternate the contenders for each width; return their statistics."""
    run_id = "0" * 32
    floor, close_floor = _floor(run_id)
    sq, close_sq = _sqlite_per_call(tmp / "percall.db", run_id)
    br, finish_br, br_run = _bridge(tmp / "spool")
    contenders = [floor, br, sq]
    closers: list[Callable[[], None]] = [close_floor, close_sq, finish_br]
    wb = _wandb(tmp / "wandb") if with_wandb else None
    if wb is not None:
        contenders.append(wb[0])
        closers.append(wb[1])
    result: dict = {"contenders": [c.name for c in contenders], "widths": {}}
    overhead: list[int] = []
    for k in widths:
        pool = _pool(k, seed=k)
        cost = {c.name: _calibrate(c, pool, 0.05) for c in contenders}
        n_call = {c.name: int(min(200_000, max(100, turn_s * 1e9 / cost[c.name])))
                  for c in contenders}
        n_batch = {name: max(2, n // _BATCH) for name, n in n_call.items()}
        samples = {c.name: Samples() for c in contenders}
        for r in range(rounds):
            order = contenders[r % len(contenders):] + contenders[: r % len(contenders)]
            overhead += _timer_overhead(20_000)
            for c in order:
                gc.collect()
                s = samples[c.name]
                s.per_call += _per_call(c, pool, n_call[c.name])
                s.batched += _batched(c, pool, n_batch[c.name])
                c.settle()
        result["widths"][k] = samples
    result["overhead"] = overhead
    result["queue_dropped"] = br_run._writer.dropped
    for close in closers:
        try:
            close()
        except Exception as exc:  # a contender failing to close must not hide the figures
            print(f"warning: closing a contender failed: {exc}", file=sys.stderr)
    return result


def summarize_hot(raw: dict) -> dict:
    ov = sorted(raw["overhead"])
    ov_med = statistics.median(ov)
    out: dict = {"timer_overhead_ns": {"median": ov_med, "p99": _p(ov, 0.99)},
                 "contenders": raw["contenders"], "widths": {}}
    for k, by_name in raw["widths"].items():
        rows = {}
        for name, s in by_name.items():
            pc = sorted(s.per_call)
            b = sorted(s.batched)
            rows[name] = {
                "calls": len(pc) + len(b) * _BATCH,
                "raw_median_ns": statistics.median(pc),
                "raw_p99_ns": _p(pc, 0.99),
                "median_ns": max(0.0, statistics.median(pc) - ov_med),
                "p99_ns": max(0.0, _p(pc, 0.99) - ov_med),
                "max_ns": pc[-1],
                "batch100_median_ns": statistics.median(b),
                "batch100_p99_ns": _p(b, 0.99),
            }
        out["widths"][k] = rows
    return out


# -- sustained ingestion ---------------------------------------------------------------------


def _ingest_bridge(spool: Path, pool: list[dict], n_calls: int) -> dict:
    run = bridge.init(project="bench", name="ingest", dir=spool, sync="offline")
    t = getattr(run, "_system_thread", None)
    if t is not None:
        t.join(10)
    run.flush()
    writer = run._writer
    queue = writer._queue
    log = run.log
    mask = _POOL - 1
    chunk = 4096
    peak_q, rss0 = 0, _rss()
    peak_rss = rss0
    longest = 0
    gc.collect()
    t0 = _pc()
    i = 0
    while i < n_calls:
        end = min(n_calls, i + chunk)
        tc = _pc()
        for j in range(i, end):
            log(pool[j & mask], step=j)
        tc = _pc() - tc
        if tc > longest:
            longest = tc
        i = end
        q = len(queue)
        if q > peak_q:
            peak_q = q
        if (i // chunk) % 8 == 0:
            peak_rss = max(peak_rss, _rss())
    t_caller = _pc()
    run.flush()
    t1 = _pc()
    peak_rss = max(peak_rss, _rss())
    path = writer.path
    run.finish()
    writer.close()
    with sqlite3.connect(str(path)) as c:
        n_rows = c.execute("SELECT COUNT(*) FROM events WHERE kind='metric'").fetchone()[0]
    return {"seconds": (t1 - t0) / 1e9, "caller_seconds": (t_caller - t0) / 1e9,
            "rows": n_rows, "peak_queue_calls": peak_q, "max_queue": writer.max_queue,
            "longest_chunk_ms": longest / 1e6, "chunk_calls": chunk,
            "peak_rss_delta_mb": (peak_rss - rss0) / 2**20, "dropped": writer.dropped}


def _ingest_ceiling(path: Path, pool: list[dict], n_calls: int) -> dict:
    run_id = "1" * 32
    ts = time.time_ns() // 1_000_000
    mask = _POOL - 1
    rows = [(run_id, "metric", k, j, ts, v, None)
            for j in range(n_calls) for k, v in pool[j & mask].items()]
    conn = connect(path, wal=True, synchronous="NORMAL")
    create_schema(conn, {"file_id": "ceiling"})
    gc.collect()
    t0 = _pc()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(_INSERT, rows)
    conn.execute("COMMIT")
    t1 = _pc()
    n_rows = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    conn.close()
    return {"seconds": (t1 - t0) / 1e9, "rows": n_rows}


def ingestion(tmp: Path, points: int, widths: list[int], reps: int) -> dict:
    out: dict = {}
    for k in widths:
        pool = _pool(k, seed=100 + k)
        n_calls = points // k
        b_runs, c_runs = [], []
        for r in range(reps):
            pair = [("bridge", _ingest_bridge), ("ceiling", _ingest_ceiling)]
            if r % 2:
                pair.reverse()
            for name, fn in pair:
                target = tmp / f"ingest-{k}-{r}-{name}"
                if name == "ceiling":
                    target.mkdir()
                    target = target / "ceiling.db"
                res = fn(target, pool, n_calls)
                (b_runs if name == "bridge" else c_runs).append(res)
        bs = statistics.median(r["seconds"] for r in b_runs)
        cs = statistics.median(r["seconds"] for r in c_runs)
        pts = n_calls * k
        out[k] = {
            "calls": n_calls, "points": pts, "reps": reps,
            "bridge_pts_per_s": pts / bs, "ceiling_pts_per_s": pts / cs,
            "ratio": cs / bs,
            "bridge_caller_share": statistics.median(r["caller_seconds"] / r["seconds"]
                                                     for r in b_runs),
            "bridge_runs": b_runs, "ceiling_runs": c_runs,
            "rows_ok": all(r["rows"] == pts for r in b_runs + c_runs),
        }
    return out


# -- import time ---------------------------------------------------------------------------


def _time_cmd(args: list[str], env: dict[str, str]) -> float:
    t0 = _pc()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env)
    return (_pc() - t0) / 1e6


def _added(bare_args: list[str], imp_args: list[str], env: dict[str, str],
           repeats: int) -> dict:
    """Median wall time of fresh interpreters, the two commands alternated."""
    bare: list[float] = []
    imp: list[float] = []
    _time_cmd(bare_args, env)
    _time_cmd(imp_args, env)  # warm the page cache and, when allowed, the bytecode cache
    for r in range(repeats):
        pair = [(bare_args, bare), (imp_args, imp)]
        if r % 2:
            pair.reverse()
        for args, acc in pair:
            acc.append(_time_cmd(args, env))
    mb, mi = statistics.median(bare), statistics.median(imp)
    return {"bare_ms": mb, "import_ms": mi, "added_ms": mi - mb}


def import_time(tmp: Path, repeats: int) -> dict:
    """``import bridge`` over bare Python, with bytecode cached (what an installed package
    gets) and, when this environment forbids writing bytecode, also without."""
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")  # never writes into the repository
    repo = str(Path(bridge.__file__).resolve().parent.parent)
    out: dict = {"repeats": repeats}
    out["cached"] = _added(["-c", "pass"], ["-c", "import bridge"], cached, repeats)
    out["no_site"] = _added(["-S", "-c", "pass"],
                            ["-S", "-c", f"import sys; sys.path.insert(0, {repo!r}); "
                                         "import bridge"], cached, repeats)
    out["env_no_pyc"] = None
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        out["env_no_pyc"] = _added(["-c", "pass"], ["-c", "import bridge"], dict(os.environ),
                                   repeats)
    probe = ("import bridge, sys, json; print(json.dumps(sorted(m for m in %r "
             "if m in sys.modules)))" % (_HEAVY,))
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, env=cached,
                                       capture_output=True, text=True).stdout)
    prof = subprocess.run([sys.executable, "-X", "importtime", "-c", "import bridge"],
                          capture_output=True, text=True, check=True, env=cached).stderr
    mods = []
    for line in prof.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            mods.append((int(parts[1]), parts[2].strip()))
    top = [(us / 1000, name) for us, name in sorted(mods, reverse=True)[:10]]
    out.update(loaded_heavy=loaded, forbidden_loaded=[m for m in loaded if m in _FORBIDDEN],
               top_cumulative_ms=top)
    return out


# -- report --------------------------------------------------------------------------------


def _us(ns: float) -> str:
    return f"{ns / 1000:.2f}" if ns < 100_000 else f"{ns / 1000:.0f}"


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def render(meta: dict, hot: dict, ing: dict, imp: dict) -> str:
    """The markdown section (also readable as plain text)."""
    L: list[str] = []
    L.append("## Hot path and ingestion (`bench/bench_log.py`)")
    L.append("")
    L.append(f"Command: `{meta['command']}`  ")
    L.append(f"Date: {meta['date']} · commit {meta['commit']} · Python {meta['python']} · "
             f"SQLite {meta['sqlite']} · wandb {meta['wandb'] or 'not installed/skipped'}  ")
    L.append(f"Machine: {meta['platform']}, nproc {meta['nproc']} (affinity "
             f"{meta['affinity']}); load average before {meta['load_before']}, "
             f"after {meta['load_after']}; wall time {meta['wall_s']:.0f} s")
    L.append("")
    ov = hot["timer_overhead_ns"]
    L.append("### 1. Caller time per `log({k keys}, step=i)`")
    L.append("")
    L.append(f"Contenders alternate in rounds ({meta['rounds']} rounds, ~{meta['turn_s']} s "
             "per turn and per mode). *median / p99* are single calls timed with "
             f"`perf_counter_ns`, minus the timer's own median cost ({ov['median']:.0f} ns; "
             "raw values in the JSON); *batch* is the median over batches of 100 calls of "
             "(batch time / 100). Times in µs. GC stays enabled; `gc.collect()` runs between "
             "turns, and bridge is flushed / wandb-core left to go idle between turns, "
             "untimed.")
    L.append("")
    names = hot["contenders"]
    L.append("| keys | contender | median | p99 | batch | raw median | raw p99 | max "
             "| × bridge (median) |")
    L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for k, rows in hot["widths"].items():
        br = rows["bridge run.log"]
        for name in names:
            r = rows[name]
            ratio = (r["median_ns"] / br["median_ns"]) if br["median_ns"] else float("nan")
            L.append(f"| {k} | {name} | {_us(r['median_ns'])} | {_us(r['p99_ns'])} | "
                     f"{_us(r['batch100_median_ns'])} | {_us(r['raw_median_ns'])} | "
                     f"{_us(r['raw_p99_ns'])} | {_us(r['max_ns'])} | {ratio:.2f}× |")
    L.append("")
    two = hot["widths"].get(2)
    if two:
        br = two["bridge run.log"]
        L.append(f"- Target bridge median ≤ 2 µs (2 keys): {br['median_ns'] / 1000:.2f} µs "
                 f"(batch {br['batch100_median_ns'] / 1000:.2f} µs) — "
                 f"**{_mark(max(br['median_ns'], br['batch100_median_ns']) <= TARGET_MEDIAN_NS)}**")
        wb = two.get("wandb.log offline")
        if wb:
            x = wb["median_ns"] / br["median_ns"]
            xb = wb["batch100_median_ns"] / br["batch100_median_ns"]
            L.append(f"- Target ≥ 40× cheaper than `wandb.log` offline: {x:.0f}× by median, "
                     f"{xb:.0f}× by batch — **{_mark(min(x, xb) >= TARGET_VS_WANDB)}**")
        else:
            L.append("- `wandb.log` offline: not measured (wandb not importable or skipped)")
        sq = two["sqlite commit/call"]
        fl = two["list-append floor"]
        L.append(f"- A commit per call costs {sq['median_ns'] / br['median_ns']:.0f}× bridge's "
                 f"enqueue; bridge costs {br['median_ns'] / fl['median_ns']:.1f}× the "
                 "list-append floor.")
    L.append("")
    L.append("### 2. Sustained ingestion (tight loop of N calls, then `flush()`)")
    L.append("")
    L.append("bridge: from the first `log` to the return of `flush()` (everything committed), "
             "fresh spool each repetition. Ceiling: the same rows, pre-built, in one "
             "`executemany` inside `BEGIN IMMEDIATE … COMMIT` on the same schema and pragmas "
             "(WAL, synchronous=NORMAL). Medians over alternated repetitions.")
    L.append("")
    L.append("| keys/call | calls | points | bridge pts/s | executemany pts/s | ratio | "
             "caller share | peak queue (calls) | longest 4096 calls | peak RSS Δ | rows ok |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for k, r in ing.items():
        pq = max(x["peak_queue_calls"] for x in r["bridge_runs"])
        rss = max(x["peak_rss_delta_mb"] for x in r["bridge_runs"])
        lc = max(x["longest_chunk_ms"] for x in r["bridge_runs"])
        L.append(f"| {k} | {r['calls']:,} | {r['points']:,} | {r['bridge_pts_per_s']:,.0f} | "
                 f"{r['ceiling_pts_per_s']:,.0f} | {r['ratio']:.2f}× | "
                 f"{r['bridge_caller_share']:.0%} | {pq:,} / {r['bridge_runs'][0]['max_queue']:,}"
                 f" | {lc:.0f} ms | {rss:.0f} MB | {'yes' if r['rows_ok'] else 'NO'} |")
    L.append("")
    for k, r in ing.items():
        L.append(f"- Target ratio ≥ 0.6× ({k} keys/call): {r['ratio']:.2f}× — "
                 f"**{_mark(r['ratio'] >= TARGET_INGEST_RATIO)}**")
    L.append("- *caller share*: the part of bridge's time spent before the loop ended (the "
             "rest is `flush()` waiting for the writer). *longest 4096 calls*: the slowest "
             "stretch of 4096 consecutive `log` calls (a queue that reaches its bound makes "
             "the caller commit it, which shows here).")
    L.append("")
    L.append("### 3. `import bridge`")
    L.append("")
    c = imp["cached"]
    L.append(f"Fresh interpreters, {imp['repeats']} alternated repetitions, medians, bytecode "
             "cached (as in an installed package; `PYTHONPYCACHEPREFIX` in a temporary "
             f"directory): `python -c pass` {c['bare_ms']:.1f} ms, `python -c \"import "
             f"bridge\"` {c['import_ms']:.1f} ms: **+{c['added_ms']:.1f} ms** — target ≤ 40 ms "
             f"**{_mark(c['added_ms'] <= TARGET_IMPORT_MS)}**.")
    L.append("")
    ns = imp["no_site"]
    L.append(f"- Without `site` (`python -S`, repository on `sys.path`; the editable install's "
             f"import hook loads `pathlib` & co. at every start-up, which hides their cost): "
             f"{ns['bare_ms']:.1f} ms → {ns['import_ms']:.1f} ms, +{ns['added_ms']:.1f} ms.")
    if imp["env_no_pyc"]:
        e = imp["env_no_pyc"]
        L.append(f"- As this environment runs (`PYTHONDONTWRITEBYTECODE=1`, bridge compiled "
                 f"from source at every start): {e['bare_ms']:.1f} ms → {e['import_ms']:.1f} ms,"
                 f" +{e['added_ms']:.1f} ms.")
    L.append("")
    heavy = ", ".join(imp["loaded_heavy"]) or "none"
    L.append(f"Heavy modules in `sys.modules` after `import bridge`: {heavy} — "
             f"pandas/mlflow/wandb/neptune/comet_ml absent: "
             f"**{_mark(not imp['forbidden_loaded'])}**.")
    L.append("")
    L.append("Largest cumulative imports (`-X importtime`, one run): " + ", ".join(
        f"`{name}` {ms:.1f} ms" for ms, name in imp["top_cumulative_ms"][:8]) + ".")
    L.append("")
    return "\n".join(L)


def _meta(args: argparse.Namespace) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).resolve().parent, timeout=5
                                ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    try:
        from importlib.metadata import version

        wandb_version = version("wandb") if not args.no_wandb else None
    except Exception:
        wandb_version = None
    return {
        "command": "python -m bench.bench_log " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit, "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version, "wandb": wandb_version,
        "platform": f"{platform.system()} {platform.machine()}",
        "nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
        "load_before": _load(),
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Samples):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_log", description=__doc__.split(
        "\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, ~20 s in all")
    ap.add_argument("--no-wandb", action="store_true", help="skip wandb.log offline")
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        rounds, turn_s, points, reps, imp_reps = 2, 0.05, 100_000, 2, 5
    else:
        rounds, turn_s, points, reps, imp_reps = 8, 0.2, 400_000, 3, 15
    meta = _meta(args)
    meta.update(rounds=rounds, turn_s=turn_s)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-log-") as d:
        tmp = Path(d)
        print("1/3 hot path …", file=sys.stderr, flush=True)
        hot = summarize_hot(hot_path(tmp, [2, 10, 100], rounds, turn_s, not args.no_wandb))
        meta["load_mid"] = _load()
        print("2/3 ingestion …", file=sys.stderr, flush=True)
        ing = ingestion(tmp, points, [2, 10], reps)
        print("3/3 import time …", file=sys.stderr, flush=True)
        imp = import_time(tmp, imp_reps)
    meta["load_after"] = _load()
    meta["wall_s"] = time.monotonic() - t0
    text = render(meta, hot, ing, imp)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(_jsonable(
            {"meta": meta, "hot_path": hot, "ingestion": ing, "import": imp}), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
