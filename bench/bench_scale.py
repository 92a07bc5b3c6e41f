"""Scale benchmark: a 10M-event backlog, ``bridge status`` latency on it, and the memory of a
``bridge sync`` that drains it.

Run ``python -m bench.bench_scale [--quick] [--events N ...] [--json out.json]``.

The backlog is written straight into a spool file with bridge's own schema
(``bridge.spool.schema.create_schema``): one finished run of N/2 steps × 2 keys, rows
inserted with ``executemany`` in large transactions — recording 10M points through
``run.log`` would take minutes and measure the writer, which ``bench_log`` already does.

For each backlog size:

- ``bridge status``: ``python -m bridge.cli.main status --dir D --json`` wall time (fresh
  process, median of a few) and :func:`bridge.agent.status.spool_status` in-process, before
  the sync (no cursors) and after it (every event covered by a cursor).
- ``bridge sync``: a :class:`~bridge.agent.sync.Syncer` pass in a child process to a sink
  that counts and drops (an adapter that keeps 10M events in a list would measure the list);
  RSS of the child sampled every 0.5 s with psutil, plus the kernel's peak (``ru_maxrss``).
  Bounded memory shows as the same peak whatever the backlog.

The MLflow backend's peak RSS comes from ``bench_sync_mlflow`` (part 3); here the floor a
process pays for ``import mlflow`` alone is measured beside bare Python and
``import bridge`` + the agent, to explain it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Sequence

from bridge.adapters.base import ExportResult, Limits

from bench.common import RssSampler, fmt_rate, header, mark, meta

__all__ = ["NullAdapter", "generate_backlog", "main"]

TARGET_STATUS_S = 1.0
TARGET_RSS_MB = 150.0
RUN_ID = "5ca1e" + "0" * 27
FILE_ID = "20260101T000000-bench-1-5ca1e000"
_TX_ROWS = 500_000  # rows per transaction while generating
_INSERT = ("INSERT INTO events (seq, run_id, kind, key, step, ts_ms, value, payload) "
           "VALUES (?, ?, 'metric', ?, ?, ?, ?, NULL)")


# -- the backlog ---------------------------------------------------------------------------


def generate_backlog(spool: Path, events: int, backend: str = "null") -> dict:
    """Write one finished run of ``events`` metric points (2 keys) as a writer file would."""
    from bridge.spool.schema import connect, create_schema

    files = spool / "spool"
    files.mkdir(parents=True, exist_ok=True)
    path = files / f"{FILE_ID}.db"
    conn = connect(path, wal=True, synchronous="OFF")
    create_schema(conn, {"file_id": FILE_ID, "node": "bench", "host": "bench",
                         "pid": "1", "created_ms": "0", "journal": "wal"})
    t0 = time.monotonic()
    start_ms = 1_767_225_600_000
    steps = events // 2
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO runs (run_id, project, name, backends, start_ms, end_ms, status) "
        "VALUES (?, 'bench', 'scale', ?, ?, ?, 'FINISHED')",
        (RUN_ID, json.dumps([{"name": backend}]), start_ms, start_ms + steps))
    conn.execute("COMMIT")

    def rows(lo: int, hi: int):
        for i in range(lo, hi):
            ts = start_ms + i
            x = 1.0 / (i + 1)
            yield (2 * i + 1, RUN_ID, "loss", i, ts, x)
            yield (2 * i + 2, RUN_ID, "acc", i, ts, 1.0 - x)

    per_tx = _TX_ROWS // 2
    for lo in range(0, steps, per_tx):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, rows(lo, min(steps, lo + per_tx)))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"events": steps * 2, "seconds": time.monotonic() - t0,
            "file_mb": path.stat().st_size / 2**20}


# -- bridge status -------------------------------------------------------------------------


def _status_cli(spool: Path, reps: int) -> dict:
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "bridge.cli.main", "status", "--dir",
                            str(spool), "--json"], capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t0)
        out = json.loads(p.stdout)
    pair = out["runs"][0]["backends"][0] if out and out["runs"] else {}
    return {"seconds": times, "median_s": statistics.median(times),
            "events": out["runs"][0]["events"] if out and out["runs"] else None,
            "delivered": pair.get("delivered"), "pending": pair.get("pending")}


def _status_inproc(spool: Path, reps: int) -> dict:
    from bridge.agent.status import spool_status

    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        spool_status(spool)
        times.append(time.perf_counter() - t0)
    return {"seconds": times, "median_s": statistics.median(times)}


def _bare_cli(reps: int) -> float:
    """The CLI's start-up alone (``bridge status --help``): the part no counting can remove."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bridge.cli.main", "status", "--help"],
                       capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- bridge sync into a sink ---------------------------------------------------------------


class NullAdapter:
    """Counts what it is given and keeps nothing: the sync's own memory, not a store's."""

    name: ClassVar[str] = "null"
    limits: ClassVar[Limits] = Limits(max_events=1000)
    received: ClassVar[int] = 0

    def __init__(self, **options: Any) -> None:
        self.options = options

    def open_run(self, run: Any) -> str:
        return f"null-{run.run_id}"

    def export(self, run: Any, batch: Sequence[Any]) -> Any:
        NullAdapter.received += len(batch)
        return ExportResult.success()

    def close_run(self, run: Any, status: str, end_time_ms: int) -> None:
        return None

    def shutdown(self) -> None:
        return None


def _sync_child(spool: str) -> None:
    """In a child process: one full sync pass to :class:`NullAdapter`; prints JSON."""
    import bridge.agent.sync as sync_mod

    real = sync_mod.load_adapter
    sync_mod.load_adapter = lambda name: NullAdapter if name == "null" else real(name)
    t0 = time.monotonic()
    syncer = sync_mod.Syncer(Path(spool))
    summary = syncer.run_once()
    syncer.shutdown()
    seconds = time.monotonic() - t0
    r = summary.results[0] if summary.results else None
    print(json.dumps({"seconds": seconds, "received": NullAdapter.received,
                      "delivered": r.delivered if r else 0, "pending": r.pending if r else -1,
                      "error": r.error if r else "no result", "complete": summary.complete,
                      "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      / 1024}))


def _sync(spool: Path) -> dict:
    code = "import sys; from bench.bench_scale import _sync_child; _sync_child(sys.argv[1])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(spool)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parent.parent)
    sampler = RssSampler(proc.pid, every_s=0.5).start()
    out, _ = proc.communicate()
    sampler.stop()
    res = json.loads(out.strip().splitlines()[-1])
    res["rss_samples"] = [(round(t, 2), round(r / 2**20, 1)) for t, r in sampler.samples]
    res["peak_sampled_mb"] = sampler.peak_mb
    res["exit"] = proc.returncode
    return res


def _quartiles(samples: list[tuple[float, float]]) -> list[float]:
    if not samples:
        return []
    n = len(samples)
    return [samples[min(n - 1, max(0, int(q * n) - 1))][1] for q in (0.25, 0.5, 0.75, 1.0)]


# -- import floors -------------------------------------------------------------------------


def _peak_of(code: str) -> float:
    """Peak RSS (MB, kernel's ru_maxrss) of a fresh interpreter running ``code``."""
    probe = ("import resource, sys; exec(sys.argv[1]); "
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    p = subprocess.run([sys.executable, "-c", probe, code], capture_output=True, text=True,
                       check=True)
    return int(p.stdout.strip().splitlines()[-1]) / 1024


def import_floors() -> dict:
    return {
        "bare python": _peak_of("pass"),
        "import bridge + agent": _peak_of("import bridge, bridge.agent.sync, bridge.cli.main"),
        "import mlflow": _peak_of("import mlflow"),
        "import mlflow + MlflowClient": _peak_of(
            "import mlflow, tempfile; from mlflow.tracking import MlflowClient; "
            "MlflowClient('sqlite:///' + tempfile.mkdtemp() + '/m.db')"),
    }


# -- the benchmark -------------------------------------------------------------------------


def one_size(tmp: Path, events: int, reps: int) -> dict:
    spool = tmp / f"backlog-{events}"
    print(f"  {events:,}: generating", file=sys.stderr, flush=True)
    gen = generate_backlog(spool, events)
    print(f"  {events:,}: status (no cursors)", file=sys.stderr, flush=True)
    before = {"cli": _status_cli(spool, reps), "inproc": _status_inproc(spool, reps)}
    print(f"  {events:,}: sync", file=sys.stderr, flush=True)
    sync = _sync(spool)
    print(f"  {events:,}: status (all delivered)", file=sys.stderr, flush=True)
    after = {"cli": _status_cli(spool, reps), "inproc": _status_inproc(spool, reps)}
    return {"events": events, "generate": gen, "status_before": before, "sync": sync,
            "status_after": after}


def render(m: dict, sizes: list[dict], cli_start: float, floors: dict | None) -> str:
    L = header("Scale: a 10M-event backlog (`bench/bench_scale.py`)", m)
    L += [
        "The backlog is one finished run of 2 keys × N/2 steps, written straight into a spool "
        "file with bridge's schema (`executemany`, 500k rows per transaction, then a WAL "
        "checkpoint). *status*: `python -m bridge.cli.main status --dir D --json` in a fresh "
        "process (wall time, median of the repetitions) and `spool_status()` in-process, "
        "before the sync (no cursors) and after it (every event delivered). *sync*: one "
        "`Syncer.run_once()` pass in a child process to a sink adapter that counts and drops "
        "the events (batches of 1000, cursors saved per batch as with any backend); RSS "
        "sampled every 0.5 s with psutil, and the kernel's peak (`ru_maxrss`).",
        "",
        "| backlog (events) | generate s | file MB | status CLI s (before / after) | "
        "spool_status s (before / after) | sync s | events/s | delivered | "
        "RSS at 25/50/75/100 % (MB) | peak sampled | peak (kernel) |",
        "|---:|---:|---:|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for s in sizes:
        sy = s["sync"]
        q = " / ".join(f"{x:.0f}" for x in _quartiles(sy["rss_samples"]))
        L.append(
            f"| {s['events']:,} | {s['generate']['seconds']:.1f} | "
            f"{s['generate']['file_mb']:.0f} | {s['status_before']['cli']['median_s']:.2f} / "
            f"{s['status_after']['cli']['median_s']:.2f} | "
            f"{s['status_before']['inproc']['median_s']:.2f} / "
            f"{s['status_after']['inproc']['median_s']:.2f} | {sy['seconds']:.1f} | "
            f"{fmt_rate(sy['received'] / sy['seconds'])} | {sy['received']:,} | {q} | "
            f"{sy['peak_sampled_mb']:.0f} MB | **{sy['maxrss_self_mb']:.0f} MB** |")
    L.append("")
    big = max(sizes, key=lambda s: s["events"])
    small = min(sizes, key=lambda s: s["events"])
    worst = max(big["status_before"]["cli"]["median_s"], big["status_after"]["cli"]["median_s"])
    L.append(f"- Target `bridge status` < 1 s at {big['events']:,} events: {worst:.2f} s "
             f"(CLI, worst of before/after; the CLI's start-up alone, `status --help`, takes "
             f"{cli_start:.2f} s) — **{mark(worst < TARGET_STATUS_S)}**")
    peak = big["sync"]["maxrss_self_mb"]
    L.append(f"- Target peak RSS ≤ 150 MB for bridge's sync at {big['events']:,} events: "
             f"{peak:.0f} MB — **{mark(peak <= TARGET_RSS_MB)}**")
    if big is not small:
        d = big["sync"]["maxrss_self_mb"] - small["sync"]["maxrss_self_mb"]
        L.append(f"- Bounded memory: {small['events']:,} → {big['events']:,} events "
                 f"({big['events'] / small['events']:.0f}× the backlog) changes the peak by "
                 f"{d:+.0f} MB.")
    complete = all(s["sync"]["complete"] and s["sync"]["received"] >= s["events"]
                   for s in sizes)
    L.append(f"- Every sync delivered the whole backlog and left nothing pending: "
             f"{'yes' if complete else 'NO'}.")
    if floors:
        L.append("")
        L.append("Peak RSS of a fresh interpreter that only imports (kernel's `ru_maxrss`): "
                 + ", ".join(f"{k} {v:.0f} MB" for k, v in floors.items())
                 + ". A sync to the embedded MLflow store runs in a process that has imported "
                 "`mlflow`, so its peak starts from that floor; a sync to an MLflow server "
                 "does not import it (bridge's REST client); see the MLflow section, part 3.")
    L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_scale",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1M events only")
    ap.add_argument("--events", type=int, action="append",
                    help="backlog size (repeatable; default 1M and 10M)")
    ap.add_argument("--reps", type=int, default=None, help="status repetitions")
    ap.add_argument("--no-floors", action="store_true", help="skip the import floors")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    sizes = args.events or ([1_000_000] if args.quick else [1_000_000, 10_000_000])
    reps = args.reps or (2 if args.quick else 3)
    m = meta("bench.bench_scale")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as d:
        results = [one_size(Path(d), n, reps) for n in sorted(sizes)]
        cli_start = _bare_cli(reps)
    floors = None if args.no_floors else import_floors()
    print(render(m, results, cli_start, floors))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": m, "sizes": results,
                                               "cli_start_s": cli_start, "floors": floors},
                                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
