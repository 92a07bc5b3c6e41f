"""Sync throughput and memory of bridge into MLflow, next to hand-written MLflow clients.

Run ``python -m bench.bench_sync_mlflow [--quick] [--profile] [--json out.json]``.

1. One run of 2 keys × N steps, delivered to a real ``mlflow server`` on 127.0.0.1 (the
   command of DESIGN.md, ``--workers 1``, sqlite store; client with
   ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``) by bridge's ``Syncer.run_once()`` (then
   ``shutdown()``), next to the optimal hand-written loop — ``MlflowClient.log_batch`` of
   1000 metrics per request — and to ``MlflowClient.log_metric`` per point (on a subset,
   extrapolated). bridge and the loop alternate over repetitions; each contender runs in a
   fresh child process, into a fresh MLflow run, timed from its first request to its last
   (the run's creation and termination included for both).
2. Several runs at once (R runs × N/R points): bridge's Syncer, the log_batch loop over the
   runs one after the other, and the same loop with one thread per run — does concurrency
   across runs pay against this server?
3. Peak RSS of a ``bridge sync DIR`` subprocess (``python -m bridge.cli.main sync``)
   delivering a backlog of one run, sampled every 0.5 s with psutil, for two backlog
   sizes (memory must not grow with the backlog) and two destinations: the real server
   (bridge's REST client, no MLflow import) and the embedded MLflow sqlite store (the
   default ``{"name": "mlflow"}``, through ``MlflowClient``).

A benchmark, not a test: nothing asserts; the targets are printed as met or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import (
    RssSampler,
    count_metric_events,
    header,
    make_spool,
    mark,
    meta,
    quiet_vendor_env,
    run_in_child,
)

__all__ = ["main"]

_REPO = Path(__file__).resolve().parent.parent
_BATCH = 1000
_KEYS = ("loss", "acc")

TARGET_VS_BATCH = 0.9
TARGET_VS_PER_CALL = 50.0
TARGET_RSS_MB = 150.0


def _mlflow_server():
    sys.path.insert(0, str(_REPO / "tests"))
    from mlflow_server import MlflowServer  # type: ignore[import-not-found]

    return MlflowServer


# -- contenders (each in a fresh child process) --------------------------------------------


def _values(r: int, i: int) -> tuple[float, float]:
    x = 1.0 / (i + 1 + r)
    return x, x + 1.0


def bridge_sync(tmp: str, url: str, runs: int, steps: int, profile: bool) -> dict:
    """Record the spool (untimed), then time one ``Syncer`` pass and its shutdown."""
    quiet_vendor_env(Path(tmp))
    from bridge.agent.sync import Syncer
    from bridge.config import AgentSettings

    spool = Path(tmp) / "spool"
    make_spool(spool, [{"name": "mlflow", "tracking_uri": url, "experiment": "bench-bridge"}],
               runs, steps)
    points = count_metric_events(spool)
    # A server is reached by bridge's REST client: no MLflow import in this process.
    syncer = Syncer(spool, settings=AgentSettings())
    prof = _profile_deliveries(syncer) if profile else None
    t0 = time.perf_counter()
    summary = syncer.run_once()
    syncer.shutdown()
    t1 = time.perf_counter()
    top = _profile_top(prof) if prof is not None else None
    delivered = sum(r.delivered for r in summary.results)
    imported = any(m.split(".")[0] == "mlflow" for m in sys.modules)
    return {"seconds": t1 - t0, "points": points, "events": delivered, "mlflow_imported": imported,
            "complete": summary.complete, "runs": len(summary.results), "profile": top}


def _profile_deliveries(syncer):
    """Profile the deliveries where they run: in the Syncer's per-backend threads (a profiler
    enabled in the main thread sees only ``join``). Wraps the instance's method; the code
    under test is unchanged."""
    import cProfile

    prof = cProfile.Profile()
    inner = syncer._deliver

    def profiled(*a, **kw):
        return prof.runcall(inner, *a, **kw)

    syncer._deliver = profiled
    return prof


def _profile_top(prof, n: int = 25) -> str:
    import io
    import pstats

    s = io.StringIO()
    st = pstats.Stats(prof, stream=s)
    st.sort_stats("tottime").print_stats(n)
    st.sort_stats("cumulative").print_stats(r"bridge/|agent/|adapters/", n)
    return s.getvalue()


def log_batch_loop(tmp: str, url: str, runs: int, steps: int, threads: bool) -> dict:
    """The optimal hand-written client: log_batch of 1000 metrics, runs in turn or at once."""
    quiet_vendor_env(Path(tmp))
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=url)
    name = "bench-batch-threads" if threads else "bench-batch"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)

    def one(r: int) -> None:
        c = MlflowClient(tracking_uri=url)
        run_id = c.create_run(exp_id, run_name=f"batch-{r}").info.run_id
        buf: list = []
        for i in range(steps):
            ts = int(time.time() * 1000)
            a, b = _values(r, i)
            buf.append(Metric("loss", a, ts, i))
            buf.append(Metric("acc", b, ts, i))
            if len(buf) >= _BATCH:
                c.log_batch(run_id, metrics=buf)
                buf = []
        if buf:
            c.log_batch(run_id, metrics=buf)
        c.set_terminated(run_id, "FINISHED")

    t0 = time.perf_counter()
    if threads:
        ts_ = [threading.Thread(target=one, args=(r,)) for r in range(runs)]
        for t in ts_:
            t.start()
        for t in ts_:
            t.join()
    else:
        for r in range(runs):
            one(r)
    t1 = time.perf_counter()
    return {"seconds": t1 - t0, "points": runs * steps * len(_KEYS)}


def per_call_loop(tmp: str, url: str, steps: int) -> dict:
    """``MlflowClient.log_metric`` once per point: what a naive replay would do."""
    quiet_vendor_env(Path(tmp))
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("bench-per-call")
    exp_id = exp.experiment_id if exp else client.create_experiment("bench-per-call")
    t0 = time.perf_counter()
    run_id = client.create_run(exp_id, run_name="per-call").info.run_id
    for i in range(steps):
        a, b = _values(0, i)
        ts = int(time.time() * 1000)
        client.log_metric(run_id, "loss", a, ts, i)
        client.log_metric(run_id, "acc", b, ts, i)
    client.set_terminated(run_id, "FINISHED")
    t1 = time.perf_counter()
    return {"seconds": t1 - t0, "points": steps * len(_KEYS)}


def build_backlog(spool: str, steps: int, backend: dict) -> int:
    """One run of 2 keys × ``steps`` for ``backend``; returns its metric rows."""
    make_spool(Path(spool), [backend], 1, steps)
    return count_metric_events(Path(spool))


# -- parts ---------------------------------------------------------------------------------


def throughput(tmp: Path, url: str, points: int, per_call_points: int, reps: int,
               profile: bool) -> dict:
    steps = points // len(_KEYS)
    b, lb = [], []
    prof = None
    if profile:  # an extra repetition, not counted: the profiler slows the client down
        print("  single run, bridge under cProfile (not counted)", file=sys.stderr, flush=True)
        prof = run_in_child(bridge_sync, str(tmp / "single-profiled"), url, 1, steps, True)
    for r in range(reps):
        pair = ["bridge", "batch"] if r % 2 == 0 else ["batch", "bridge"]
        for who in pair:
            d = tmp / f"single-{who}-{r}"
            print(f"  single run, {who}, rep {r + 1}/{reps}", file=sys.stderr, flush=True)
            if who == "bridge":
                b.append(run_in_child(bridge_sync, str(d), url, 1, steps, False))
            else:
                lb.append(run_in_child(log_batch_loop, str(d), url, 1, steps, False))
    print("  single run, per-call log_metric", file=sys.stderr, flush=True)
    pc = run_in_child(per_call_loop, str(tmp / "per-call"), url, per_call_points // 2)
    rate = lambda res: res["points"] / res["seconds"]  # noqa: E731
    return {
        "points": points, "reps": reps,
        "bridge": b, "batch": lb, "per_call": pc, "profiled": prof,
        "bridge_rate": statistics.median(rate(x) for x in b),
        "batch_rate": statistics.median(rate(x) for x in lb),
        "per_call_rate": rate(pc),
    }


def concurrency(tmp: Path, url: str, runs: int, points: int) -> dict:
    steps = points // runs // len(_KEYS)
    out = {"runs": runs, "points": runs * steps * len(_KEYS)}
    print(f"  {runs} runs, bridge", file=sys.stderr, flush=True)
    out["bridge"] = run_in_child(bridge_sync, str(tmp / "multi-bridge"), url, runs, steps,
                                 False)
    print(f"  {runs} runs, log_batch in turn", file=sys.stderr, flush=True)
    out["serial"] = run_in_child(log_batch_loop, str(tmp / "multi-serial"), url, runs, steps,
                                 False)
    print(f"  {runs} runs, log_batch one thread per run", file=sys.stderr, flush=True)
    out["threads"] = run_in_child(log_batch_loop, str(tmp / "multi-threads"), url, runs, steps,
                                  True)
    return out


def mlflow_floor(tmp: str) -> dict:
    """Peak RSS of a bare process that imports MLflow, opens an embedded sqlite store and
    logs one batch of 1000 metrics: the floor under any MLflow sync, bridge or not."""
    import resource

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=f"sqlite:///{Path(tmp) / 'floor.db'}")
    exp = client.create_experiment("floor")
    run_id = client.create_run(exp).info.run_id
    ts = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric("loss", 1.0 / (i + 1), ts, i) for i in range(1000)])
    client.set_terminated(run_id)
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _delivered(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return int(c.execute("SELECT COUNT(*) FROM metrics").fetchone()[0])


def rss(tmp: Path, sizes: list[int], caps: list[float | None], server) -> dict:
    """``bridge sync`` on backlogs of each size, to the server and to the embedded store; a
    sync still running after its cap is stopped with SIGTERM (bridge stops between batches
    and saves its cursor)."""
    out: dict = {"floor": run_in_child(mlflow_floor, str(tmp)), "runs": []}
    env = dict(os.environ, BRIDGE_CONFIG=str(tmp / "no-user-config.toml"),
               PYTHONPATH=str(_REPO))
    server_db = server.root / "mlflow.db"
    for dest, events, cap in [(d, e, c) for d in ("server", "embedded")
                              for e, c in zip(sizes, caps)]:
        spool = tmp / f"backlog-{dest}-{events}"
        backend = ({"name": "mlflow", "tracking_uri": server.url, "experiment": "bench-rss"}
                   if dest == "server" else {"name": "mlflow"})
        db = server_db if dest == "server" else spool / "mlflow.db"
        before = _delivered(db)
        print(f"  {dest}, backlog {events:,}: recording", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rows = run_in_child(build_backlog, str(spool), events // len(_KEYS), backend)
        t_rec = time.perf_counter() - t0
        print(f"  {dest}, backlog {events:,}: bridge sync (cap {cap} s)", file=sys.stderr,
              flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli.main", "sync", str(spool)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sampler = RssSampler(proc.pid, every_s=0.5).start()
        stopped = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if cap is not None and not stopped and time.perf_counter() - t0 > cap:
                proc.send_signal(signal.SIGTERM)
                stopped = True
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        sampler.stop()
        samples = sampler.samples
        n = len(samples)
        # RSS at a quarter, half, three quarters and the end of the sync's life.
        marks = [samples[min(n - 1, max(0, int(n * q) - 1))][1] / 2**20 if n else 0.0
                 for q in (0.25, 0.5, 0.75, 1.0)]
        out["runs"].append({
            "dest": dest, "events": rows, "record_s": t_rec, "sync_s": wall,
            "rc": proc.returncode, "stopped": stopped, "delivered": _delivered(db) - before,
            "peak_mb": sampler.peak_mb, "maxrss_mb": usage.ru_maxrss / 1024, "samples": n,
            "marks_mb": marks})
    return out


# -- report --------------------------------------------------------------------------------


def render(m: dict, thr: dict, conc: dict | None, mem: dict | None, per_call_points: int
           ) -> str:
    L = header("Sync into MLflow (`bench/bench_sync_mlflow.py`)", m)
    L.append("### 1. One run to a real `mlflow server` (sqlite store, `--workers 1`, loopback)")
    L.append("")
    L.append(f"{thr['points']:,} metric points (2 keys × {thr['points'] // 2:,} steps). "
             "bridge: `Syncer(spool).run_once()` + `shutdown()` on a spool recorded "
             "beforehand (recording untimed). log_batch loop: `MlflowClient.log_batch` of "
             "1000 `Metric`s per request, built in the loop. Both create (bridge: find or "
             "create) and terminate their MLflow run inside the timed span; the loop imports "
             "`mlflow` before its clock starts, bridge's REST client needs no MLflow import. "
             f"{thr['reps']} alternated repetitions, medians; each in a "
             f"fresh process. Per-call `log_metric`: {per_call_points:,} points only, rate "
             "extrapolated to the whole backlog. The server and the client share the "
             "machine's 2 cores.")
    L.append("")
    L.append("| contender | points | seconds (each rep) | points/s | × log_batch loop |")
    L.append("|---|---:|---|---:|---:|")
    br, bt, pc = thr["bridge_rate"], thr["batch_rate"], thr["per_call_rate"]
    secs = lambda rs: ", ".join(f"{r['seconds']:.2f}" for r in rs)  # noqa: E731
    L.append(f"| bridge Syncer | {thr['bridge'][0]['points']:,} | {secs(thr['bridge'])} | "
             f"{br:,.0f} | {br / bt:.2f}× |")
    L.append(f"| log_batch(1000) loop | {thr['batch'][0]['points']:,} | {secs(thr['batch'])} | "
             f"{bt:,.0f} | 1.00× |")
    est = thr["points"] / pc
    L.append(f"| log_metric per point | {thr['per_call']['points']:,} (extrapolated: "
             f"{est:,.0f} s for {thr['points']:,}) | {thr['per_call']['seconds']:.2f} | "
             f"{pc:,.0f} | {pc / bt:.3f}× |")
    L.append("")
    ev = thr["bridge"][0]
    imported = any(r["mlflow_imported"] for r in thr["bridge"])
    L.append(f"bridge delivered {ev['events']:,} events in all (the {ev['points']:,} points "
             "plus the run's system/params events); every pass complete: "
             f"{'yes' if all(x['complete'] for x in thr['bridge']) else 'NO'}. "
             f"MLflow imported by bridge's sync process: {'yes' if imported else 'no'}.")
    L.append("")
    L.append(f"- Target bridge ≥ {TARGET_VS_BATCH}× the log_batch loop: {br / bt:.2f}× — "
             f"**{mark(br / bt >= TARGET_VS_BATCH)}**")
    L.append(f"- Target bridge ≥ {TARGET_VS_PER_CALL:.0f}× per-call `log_metric`: "
             f"{br / pc:.0f}× — **{mark(br / pc >= TARGET_VS_PER_CALL)}**")
    L.append("")
    if conc:
        L.append(f"### 2. {conc['runs']} runs at once ({conc['points']:,} points in all)")
        L.append("")
        L.append("bridge's Syncer delivers up to 4 runs of an HTTP MLflow server at once (one "
                 "client each: the adapter's `concurrent_runs`); the last row is a hand-written "
                 "loop with one thread per run. Both face this single-worker server, which "
                 "shares the client's 2 cores.")
        L.append("")
        L.append("| contender | seconds | points/s | × log_batch in turn |")
        L.append("|---|---:|---:|---:|")
        base = conc["serial"]["points"] / conc["serial"]["seconds"]
        for label, key in (("bridge Syncer", "bridge"), ("log_batch loop, runs in turn",
                                                          "serial"),
                           (f"log_batch loop, {conc['runs']} threads (one per run)",
                            "threads")):
            r = conc[key]
            rate = r["points"] / r["seconds"]
            L.append(f"| {label} | {r['seconds']:.2f} | {rate:,.0f} | {rate / base:.2f}× |")
        L.append("")
    if mem:
        L.append("### 3. Memory of `bridge sync` on a backlog")
        L.append("")
        L.append("`python -m bridge.cli.main sync DIR` as a subprocess; RSS of it and its "
                 "children sampled every 0.5 s with psutil, and the kernel's peak "
                 "(`ru_maxrss` from `wait4`). Backlog: one finished run of 2 keys × N/2 steps "
                 "recorded with `sync=\"offline\"`, for one of two destinations: *server*, "
                 "the real `mlflow server` of part 1 (bridge's REST client; the process never "
                 "imports MLflow), and *embedded*, backend `{\"name\": \"mlflow\"}` (the "
                 "embedded store `DIR/mlflow.db`, written through `MlflowClient`). A sync "
                 "still running at its cap is stopped "
                 "with SIGTERM (it stops between batches, keeping its cursor): memory is then "
                 "measured over the part delivered, with the whole backlog pending. *Floor*: a "
                 "bare process that imports MLflow, opens an embedded store and logs one "
                 f"batch of 1000 metrics: peak {mem['floor']['peak_mb']:.0f} MB.")
        L.append("")
        L.append("| destination | backlog (metric events) | record s | sync s | delivered | "
                 "events/s | exit | samples | RSS at 25/50/75/100 % (MB) | peak sampled | "
                 "peak (kernel) | over the floor |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
        for r in mem["runs"]:
            L.append(f"| {r['dest']} | {r['events']:,} | {r['record_s']:.1f} | {r['sync_s']:.1f}"
                     f"{' (capped)' if r['stopped'] else ''} | {r['delivered']:,} | "
                     f"{r['delivered'] / r['sync_s']:,.0f} | {r['rc']} | {r['samples']} | "
                     + " / ".join(f"{x:.0f}" for x in r["marks_mb"])
                     + f" | {r['peak_mb']:.0f} MB | **{r['maxrss_mb']:.0f} MB** | "
                     f"{r['maxrss_mb'] - mem['floor']['peak_mb']:+.0f} MB |")
        L.append("")
        for dest in ("server", "embedded"):
            runs = [r for r in mem["runs"] if r["dest"] == dest]
            peak = max(r["maxrss_mb"] for r in runs)
            L.append(f"- Target peak RSS ≤ {TARGET_RSS_MB:.0f} MB ({dest}): {peak:.0f} MB — "
                     f"**{mark(peak <= TARGET_RSS_MB)}**; from the smallest to the largest "
                     f"backlog: {runs[-1]['maxrss_mb'] - runs[0]['maxrss_mb']:+.0f} MB for "
                     f"{runs[-1]['events'] / max(1, runs[0]['events']):.0f}× the events.")
        L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_sync_mlflow",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile one extra (uncounted) bridge sync; print its hotspots")
    ap.add_argument("--skip-rss", action="store_true", help="skip part 3")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        points, per_call, reps, runs = 10_000, 100, 1, 4
        sizes, caps = [20_000, 200_000], [None, 8.0]
    else:
        points, per_call, reps, runs = 100_000, 1_000, 2, 4
        sizes, caps = [200_000, 1_000_000], [None, 120.0]
    m = meta("bench.bench_sync_mlflow", ("mlflow",))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    with tempfile.TemporaryDirectory(prefix="bench-sync-mlflow-") as d:
        tmp = Path(d)
        server = _mlflow_server()(tmp / "server")
        print("starting mlflow server …", file=sys.stderr, flush=True)
        server.start()
        try:
            print("1/3 single run …", file=sys.stderr, flush=True)
            thr = throughput(tmp, server.url, points, per_call, reps, args.profile)
            print("2/3 several runs …", file=sys.stderr, flush=True)
            conc = concurrency(tmp, server.url, runs, points)
            print("3/3 memory …", file=sys.stderr, flush=True)
            mem = None if args.skip_rss else rss(tmp, sizes, caps, server)
        finally:
            server.stop()
    text = render(m, thr, conc, mem, per_call)
    print(text)
    if thr.get("profiled"):
        p = thr["profiled"]
        print("\n<details><summary>cProfile of an extra, uncounted bridge sync (in its backend "
              f"thread; {p['seconds']:.1f} s under the profiler)</summary>\n\n```")
        print(p["profile"])
        print("```\n</details>")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": m, "throughput": thr, "concurrency": conc,
                                               "rss": mem}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
