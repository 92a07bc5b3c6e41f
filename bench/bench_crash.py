"""Crash window: what a SIGKILL loses at each durability setting, and what each costs per call.

Run ``python -m bench.bench_crash [--quick] [--trials N] [--seed S] [--json out.json]``.

Each trial is a fresh child process that opens a run with ``durability="journal"`` (the
default), ``"buffered"``, ``"commit"`` or ``"fsync"`` and then

1. times single ``run.log({2 keys}, step=i)`` calls for ~0.3 s (the per-call cost of the
   setting, measured in the same run as its crash window), flushes, and says it is ready;
2. logs in a tight loop, never calling ``flush()``, and after every ``REPORT_EVERY``-th call
   appends ``"<step> <time_ns>"`` to a report file with one ``os.write`` (a kernel write,
   which a SIGKILL cannot undo).

The parent SIGKILLs the child — the process alone in even trials, its whole process group
(as Slurm's ``scancel`` does) in odd ones — at a random moment (seeded) after it said ready,
then opens the spool the child left behind as any reader does (which replays a journal) and
counts what is in it. *Lost events*: the events of
the reported steps that are not in the spool (``2 × (reported step + 1)`` minus the
committed rows of steps ≤ that step); *lost ms*: the time from the last committed event to
the report. Calls logged after the last report are not counted, so the figures are lower
bounds by at most ``REPORT_EVERY - 1`` calls. Settings alternate trial by trial.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import header, meta, pct

__all__ = ["main"]

SETTINGS = ("journal", "buffered", "commit", "fsync")
REPORT_EVERY = 16
_TIMING_S = 0.3


def _child(spool: str, durability: str, report: str) -> None:
    """The logging child: timing phase, then a tight loop until it is killed."""
    import bridge

    run = bridge.init(project="crash", name=durability, dir=spool, sync="offline",
                      durability=durability, system_metrics=False)
    run.flush()
    log = run.log
    pc = time.perf_counter_ns
    times: list[int] = []
    step = 0
    end = pc() + int(_TIMING_S * 1e9)
    while pc() < end or len(times) < 50:
        x = 1.0 / (step + 1)
        t0 = pc()
        log({"loss": x, "acc": 1.0 - x}, step=step)
        times.append(pc() - t0)
        step += 1
    run.flush()
    times.sort()
    fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.write(json.dumps({"median_ns": statistics.median(times),
                                 "p99_ns": pct(times, 0.99), "calls": len(times),
                                 "first_step": step, "path": str(run._writer.path)}) + "\n")
    sys.stdout.flush()
    write, now = os.write, time.time_ns
    every = REPORT_EVERY
    while True:
        x = 1.0 / (step + 1)
        log({"loss": x, "acc": 1.0 - x}, step=step)
        if step % every == 0:
            write(fd, b"%d %d\n" % (step, now()))
        step += 1


def _last_report(path: Path) -> tuple[int, int] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    for line in reversed(data.splitlines()):
        parts = line.split()
        if len(parts) == 2:  # a line cut by the kill has no second field or no newline
            return int(parts[0]), int(parts[1])
    return None


def trial(tmp: Path, durability: str, delay_s: float, index: int, group: bool = False) -> dict:
    spool = tmp / f"t{index}-{durability}"
    report = tmp / f"t{index}-{durability}.report"
    code = ("import sys; from bench.bench_crash import _child; "
            "_child(sys.argv[1], sys.argv[2], sys.argv[3])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(spool), durability, str(report)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
    try:
        ready = json.loads(proc.stdout.readline())
        time.sleep(delay_s)  # the random kill point, not a wait for a condition
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    err = proc.stderr.read()
    rep = _last_report(report)
    if rep is None:
        raise RuntimeError(f"no report from the {durability} child; stderr:\n{err}")
    step, t_ns = rep
    from bridge.spool.recover import recover_dir

    recover_dir(spool)  # what the next opener of the spool does: a journal is replayed
    with sqlite3.connect(ready["path"]) as conn:  # recovers the WAL like any reader would
        kept, last_ts = conn.execute(
            "SELECT count(*), max(ts_ms) FROM events WHERE kind='metric' AND step<=?",
            (step,)).fetchone()
        top = conn.execute("SELECT max(step) FROM events WHERE kind='metric'").fetchone()[0]
        integrity = conn.execute("PRAGMA quick_check").fetchone()[0]
    expected = 2 * (step + 1)
    lost = max(0, expected - kept)
    lost_ms = max(0.0, t_ns / 1e6 - last_ts) if lost else 0.0
    return {"durability": durability, "kill": "group" if group else "process",
            "delay_s": delay_s, "reported_step": step,
            "committed_top_step": top, "lost_events": lost, "lost_ms": lost_ms,
            "logged_in_loop": step - ready["first_step"] + 1, "median_ns": ready["median_ns"],
            "p99_ns": ready["p99_ns"], "timed_calls": ready["calls"],
            "integrity": integrity, "stderr": err.strip()[-500:]}


def run_trials(tmp: Path, trials: int, seed: int, lo: float, hi: float) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for t in range(trials):
        k = t % len(SETTINGS)
        order = list(SETTINGS[k:] + SETTINGS[:k])
        for d in order:
            delay = rnd.uniform(lo, hi)
            out.append(trial(tmp, d, delay, len(out), group=t % 2 == 1))
        print(f"  trial {t + 1}/{trials}", file=sys.stderr, flush=True)
    return out


def summarize(results: list[dict]) -> dict:
    out = {}
    for d in SETTINGS:
        rs = [r for r in results if r["durability"] == d]
        lost = sorted(r["lost_events"] for r in rs)
        ms = sorted(r["lost_ms"] for r in rs)
        out[d] = {
            "trials": len(rs),
            "lost_median": statistics.median(lost), "lost_p99": pct(lost, 0.99),
            "lost_max": lost[-1], "lost_ms_median": statistics.median(ms),
            "lost_max_process": max((r["lost_events"] for r in rs if r["kill"] == "process"),
                                    default=0),
            "lost_max_group": max((r["lost_events"] for r in rs if r["kill"] == "group"),
                                  default=0),
            "lost_ms_p99": pct(ms, 0.99), "lost_ms_max": ms[-1],
            "with_loss": sum(1 for x in lost if x),
            "call_median_us": statistics.median(r["median_ns"] for r in rs) / 1000,
            "call_p99_us": statistics.median(r["p99_ns"] for r in rs) / 1000,
            "loop_calls_median": statistics.median(r["logged_in_loop"] for r in rs),
            "integrity_ok": all(r["integrity"] == "ok" for r in rs),
            "stderr_clean": all(not r["stderr"] for r in rs),
        }
    return out


def render(m: dict, s: dict, trials: int, seed: int, lo: float, hi: float) -> str:
    L = header("Crash window per durability setting (`bench/bench_crash.py`)", m)
    L += [
        f"{trials} trials per setting, alternated; each a fresh child that times "
        f"`run.log({{2 keys}}, step)` for ~{_TIMING_S} s, then logs in a tight loop without "
        f"`flush()`, appending its step to a report file every {REPORT_EVERY} calls, and is "
        f"SIGKILLed {lo:.2f}–{hi:.2f} s (uniform, seed {seed}) after it said ready — the "
        "process alone in half the trials, its process group in the other half. "
        "*lost*: events of reported steps missing from the spool file afterwards; *lost ms*: "
        "from the last committed event to the report (lower bounds: calls after the last "
        f"report, at most {REPORT_EVERY - 1}, are not counted). *per call*: median of the "
        "trials' median single-call times.",
        "",
        "| durability | per call median µs | per call p99 µs | calls before the kill "
        "(median) | trials with loss | lost events median / p99 / max | lost ms median / "
        "p99 / max | lost max: process / group kill | files intact |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for d, r in s.items():
        L.append(
            f"| {d} | {r['call_median_us']:.2f} | {r['call_p99_us']:.1f} | "
            f"{r['loop_calls_median']:,.0f} | {r['with_loss']} / {r['trials']} | "
            f"{r['lost_median']:,.0f} / {r['lost_p99']:,.0f} / {r['lost_max']:,.0f} | "
            f"{r['lost_ms_median']:.0f} / {r['lost_ms_p99']:.0f} / {r['lost_ms_max']:.0f} | "
            f"{r['lost_max_process']:,.0f} / {r['lost_max_group']:,.0f} | "
            f"{'yes' if r['integrity_ok'] else 'NO'} |")
    L.append("")
    j, b, c, f = s["journal"], s["buffered"], s["commit"], s["fsync"]
    L.append(f"- `journal` (the default) lost {j['lost_max']:,.0f} events at most in "
             f"{j['trials']} kills ({j['lost_max_process']:,.0f} when the process alone was "
             f"killed, {j['lost_max_group']:,.0f} when its group was), at "
             f"{j['call_median_us']:.2f} µs per call against `buffered`'s "
             f"{b['call_median_us']:.2f} µs.")
    L.append(f"- `commit` costs {c['call_median_us'] / b['call_median_us']:.0f}× `buffered` "
             f"per call and `fsync` {f['call_median_us'] / b['call_median_us']:.0f}×; "
             f"both lost nothing to a process kill "
             f"({c['lost_max']:.0f} and {f['lost_max']:.0f} events at most). `fsync` adds "
             "what a process kill cannot show: survival of a power loss.")
    from bridge.spool.writer import SpoolWriter

    q = SpoolWriter.__init__.__kwdefaults__["max_queue"]
    L.append(f"- `buffered` lost at most {b['lost_max']:,.0f} events "
             f"({b['lost_ms_max']:.0f} ms of logging) in {b['trials']} kills, median "
             f"{b['lost_median']:,.0f} ({b['lost_ms_median']:.0f} ms). The writer wakes every "
             f"50 ms (`flush_interval`), but a loop that logs faster than it commits keeps up "
             f"to `max_queue` = {q:,} calls ({2 * q:,} events here) queued, plus the batch "
             "being committed when the kill lands: that, not the interval, bounds the loss "
             "of a tight loop.")
    L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_crash",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 trials per setting")
    ap.add_argument("--trials", type=int, default=None, help="trials per setting (default 30)")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    trials = args.trials or (8 if args.quick else 30)
    lo, hi = 0.05, 0.6
    m = meta("bench.bench_crash")
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as d:
        results = run_trials(Path(d), trials, args.seed, lo, hi)
    s = summarize(results)
    print(render(m, s, trials, args.seed, lo, hi))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": m, "summary": s, "trials": results},
                                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
