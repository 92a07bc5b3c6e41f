"""Sustained ingestion with several writer processes on one spool directory.

Run ``python -m bench.bench_writers [--quick] [--writers N ...] [--json out.json]``.

For 1, 4, 16 and 32 processes, a fixed total of metric points (2 keys per call) is split
evenly between them. Each process opens its own run in the same spool directory (so its own
spool file: writers never share a lock), waits at a start line, logs its share in a tight
loop and returns after ``run.finish()`` (everything committed). Beside it, the same number of
processes each insert the same rows, pre-built, with one ``executemany`` into a file of
their own with bridge's schema and pragmas: the raw ceiling of that many writers on this
machine. The two alternate, repeated; the aggregate rate is all points over the span from
the first start to the last commit (``CLOCK_MONOTONIC``, shared by the processes).

Checked for every bridge process: empty stderr (no lock errors, no warnings), its file
holds exactly its share of rows, and nothing was counted as dropped.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import fmt_rate, header, mark, meta

__all__ = ["main"]

TARGET_RATIO = 0.6
_INSERT = ("INSERT INTO events (run_id, kind, key, step, ts_ms, value, payload) "
           "VALUES (?, 'metric', ?, ?, ?, ?, NULL)")


def _child(kind: str, spool: str, calls: int, index: int) -> None:
    """One writer process: prepare, say ready, wait for "go", write, report JSON."""
    pool = [{"loss": 1.0 / (j + 1), "acc": 1.0 - 1.0 / (j + 1)} for j in range(128)]
    if kind == "bridge":
        import bridge

        run = bridge.init(project="writers", name=f"w{index}", dir=spool, sync="offline",
                          system_metrics=False)
        run.flush()
        path = str(run._writer.path)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()
        t0 = time.monotonic_ns()
        log = run.log
        for j in range(calls):
            log(pool[j & 127], step=j)
        run.finish()
        t1 = time.monotonic_ns()
        dropped = run._writer.dropped
        run_id = run.id
    else:
        from bridge.spool.schema import connect, create_schema

        d = Path(spool) / "spool"
        d.mkdir(parents=True, exist_ok=True)
        path = str(d / f"ceiling-{index}.db")
        conn = connect(Path(path), wal=True, synchronous="NORMAL")
        create_schema(conn, {"file_id": f"ceiling-{index}"})
        run_id = f"{index:032x}"
        ts = time.time_ns() // 1_000_000
        rows = [(run_id, k, j, ts, v) for j in range(calls) for k, v in pool[j & 127].items()]
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()
        t0 = time.monotonic_ns()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, rows)
        conn.execute("COMMIT")
        t1 = time.monotonic_ns()
        conn.close()
        dropped = 0
    print(json.dumps({"t0": t0, "t1": t1, "path": path, "run_id": run_id,
                      "dropped": dropped}))


def _round(tmp: Path, kind: str, writers: int, calls_each: int, tag: str) -> dict:
    spool = tmp / f"{tag}-{kind}-{writers}"
    code = ("import sys; from bench.bench_writers import _child; "
            "_child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))")
    cwd = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", code, kind, str(spool), str(calls_each),
                               str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=cwd)
             for i in range(writers)]
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.wait(30)
            raise RuntimeError(f"{kind} writer did not start: {line!r} {p.stderr.read()}")
    for p in procs:  # all prepared: release them together
        p.stdin.write("go\n")
        p.stdin.flush()
    reports, errors = [], []
    for p in procs:
        out, err = p.communicate(timeout=900)
        reports.append(json.loads(out.strip().splitlines()[-1]))
        if err.strip() or p.returncode:
            errors.append(f"exit {p.returncode}: {err.strip()[-400:]}")
    span = (max(r["t1"] for r in reports) - min(r["t0"] for r in reports)) / 1e9
    expected = 2 * calls_each
    counts_ok = True
    for r in reports:
        with sqlite3.connect(f"file:{r['path']}?mode=ro", uri=True) as c:
            n = c.execute("SELECT count(*) FROM events WHERE kind='metric' AND run_id=?",
                          (r["run_id"],)).fetchone()[0]
        counts_ok &= n == expected and r["dropped"] == 0
    files = len(list((spool / "spool").glob("*.db")))
    per = [expected / ((r["t1"] - r["t0"]) / 1e9) for r in reports]
    return {"kind": kind, "writers": writers, "points": expected * writers, "span_s": span,
            "pts_per_s": expected * writers / span, "per_writer_median_pts_s":
            statistics.median(per), "errors": errors, "counts_ok": counts_ok,
            "files": files}


def run_all(tmp: Path, counts: list[int], total_points: int, reps: int) -> dict:
    out: dict = {}
    for n in counts:
        calls_each = max(1, total_points // (2 * n))
        rows: dict[str, list[dict]] = {"bridge": [], "executemany": []}
        for r in range(reps):
            order = ["bridge", "executemany"] if r % 2 == 0 else ["executemany", "bridge"]
            for kind in order:
                print(f"  {n} writers, {kind}, rep {r + 1}/{reps}", file=sys.stderr, flush=True)
                rows[kind].append(_round(tmp, kind, n, calls_each, f"r{r}"))
        b = statistics.median(x["pts_per_s"] for x in rows["bridge"])
        c = statistics.median(x["pts_per_s"] for x in rows["executemany"])
        out[n] = {"writers": n, "calls_each": calls_each, "points": calls_each * 2 * n,
                  "bridge_pts_s": b, "executemany_pts_s": c, "ratio": b / c,
                  "bridge_per_writer_pts_s": statistics.median(
                      x["per_writer_median_pts_s"] for x in rows["bridge"]),
                  "errors": [e for x in rows["bridge"] + rows["executemany"]
                             for e in x["errors"]],
                  "counts_ok": all(x["counts_ok"] for x in rows["bridge"]),
                  "files_ok": all(x["files"] == n for x in rows["bridge"]),
                  "runs": rows}
    return out


def render(m: dict, res: dict, reps: int) -> str:
    L = header("Several writer processes on one spool directory (`bench/bench_writers.py`)", m)
    L += [
        "A fixed total of points (2 keys per call) split evenly between N processes, each with "
        "its own run and spool file in one directory, released together; bridge: `run.log` "
        "loop then `run.finish()`; executemany: the same rows pre-built, one `executemany` "
        "per process into its own file (same schema and pragmas). Aggregate = all points / "
        f"(last commit − first start). Medians of {reps} alternated repetition(s).",
        "",
        "| writers | points | bridge pts/s | executemany pts/s | ratio | bridge per writer "
        "pts/s | files | rows match, none dropped | stderr clean |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for n, r in res.items():
        L.append(f"| {n} | {r['points']:,} | {fmt_rate(r['bridge_pts_s'])} | "
                 f"{fmt_rate(r['executemany_pts_s'])} | {r['ratio']:.2f}× | "
                 f"{fmt_rate(r['bridge_per_writer_pts_s'])} | {n if r['files_ok'] else '≠'} "
                 f"| {'yes' if r['counts_ok'] else 'NO'} | "
                 f"{'yes' if not r['errors'] else 'NO'} |")
    L.append("")
    top = max(res)
    clean = all(not r["errors"] and r["counts_ok"] and r["files_ok"] for r in res.values())
    n_err = sum(len(r["errors"]) for r in res.values())
    L.append(f"- Target {top} writer processes without lock errors: {n_err} failed or noisy "
             f"processes, rows {'complete' if clean else 'INCOMPLETE'} in every file — "
             f"**{mark(clean and top >= 32)}**")
    worst = min(res.values(), key=lambda r: r["ratio"])
    L.append(f"- Target (own, stricter) aggregate ≥ {TARGET_RATIO}× the executemany ceiling "
             "at every N: "
             f"lowest {worst['ratio']:.2f}× ({worst['writers']} writers) — "
             f"**{mark(worst['ratio'] >= TARGET_RATIO)}**")
    for r in res.values():
        for e in r["errors"][:3]:
            L.append(f"  - {r['writers']} writers: `{e}`")
    L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_writers",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer points, one repetition")
    ap.add_argument("--writers", type=int, action="append",
                    help="writer counts (repeatable; default 1 4 16 32)")
    ap.add_argument("--points", type=int, default=None, help="total points per configuration")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    counts = args.writers or [1, 4, 16, 32]
    points = args.points or (640_000 if args.quick else 3_200_000)
    reps = args.reps or (1 if args.quick else 2)
    m = meta("bench.bench_writers")
    with tempfile.TemporaryDirectory(prefix="bench-writers-") as d:
        res = run_all(Path(d), counts, points, reps)
    print(render(m, res, reps))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": m, "results": res}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
