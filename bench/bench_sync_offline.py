"""Sync rate of bridge into the W&B, Neptune and Comet offline files, next to each vendor's
SDK logging the same data itself.

Run ``python -m bench.bench_sync_offline [--quick] [--profile] [--json out.json]``.

For each vendor, one run of 2 keys × N steps:

- bridge: the run is recorded beforehand with ``sync="offline"`` and the backend
  ``{"name": "wandb", "mode": "offline", "dir": …}`` / ``{"name": "neptune", "mode":
  "offline", "data_dir": …}`` / ``{"name": "comet", "mode": "offline", "offline_directory":
  …}`` (recording untimed); timed: ``Syncer(spool).run_once()`` + ``shutdown()``, which opens
  the vendor run, exports, closes it and flushes the SDK's files;
- the vendor alone: init the SDK offline, log the same N steps in a loop
  (``run.log({2 keys}, step=i)``, ``run["k"].append(v, step=i)`` ×2,
  ``exp.log_metrics({2 keys}, step=i)``), then finish / stop / end; timed from init to the
  return of finish, as for bridge.

Each contender runs in a fresh child process; bridge and the SDK alternate over
repetitions; medians. A benchmark, not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    count_metric_events,
    header,
    make_spool,
    meta,
    quiet_vendor_env,
    run_in_child,
)

__all__ = ["main"]

VENDORS = ("wandb", "neptune", "comet")
_SDK = {"wandb": "wandb", "neptune": "neptune", "comet": "comet_ml"}


def _spec(vendor: str, out: Path) -> dict:
    if vendor == "wandb":
        return {"name": "wandb", "mode": "offline", "dir": str(out), "project": "bench"}
    if vendor == "neptune":
        return {"name": "neptune", "mode": "offline", "data_dir": str(out)}
    return {"name": "comet", "mode": "offline", "offline_directory": str(out)}


def bridge_sync(vendor: str, tmp: str, steps: int, profile: bool) -> dict:
    """Record (untimed), then time one Syncer pass and its shutdown into the offline files."""
    t = Path(tmp)
    quiet_vendor_env(t)
    from bridge.agent.sync import Syncer
    from bridge.config import AgentSettings

    spool = t / "spool"
    make_spool(spool, [_spec(vendor, t / "out")], 1, steps)
    points = count_metric_events(spool)
    # The SDK's import is a one-off start-up cost: the SDK-alone loop imports it before its
    # clock starts, so bridge does too (its adapter would import it lazily); reported apart.
    t_imp = time.perf_counter()
    importlib.import_module(_SDK[vendor])
    import_s = time.perf_counter() - t_imp
    syncer = Syncer(spool, settings=AgentSettings())
    prof = None
    if profile:
        from bench.bench_sync_mlflow import _profile_deliveries

        prof = _profile_deliveries(syncer)
    t0 = time.perf_counter()
    summary = syncer.run_once()
    syncer.shutdown()
    t1 = time.perf_counter()
    top = None
    if prof is not None:
        import io
        import pstats

        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
        top = s.getvalue()
    return {"seconds": t1 - t0, "points": points, "import_s": import_s,
            "events": sum(r.delivered for r in summary.results),
            "complete": summary.complete,
            "error": next((r.error for r in summary.results if r.error), None),
            "profile": top}


def vendor_direct(vendor: str, tmp: str, steps: int) -> dict:
    """The vendor's SDK alone, offline, the same data in a loop; init to finish timed."""
    t = Path(tmp)
    quiet_vendor_env(t)
    out = t / "out"
    out.mkdir(parents=True, exist_ok=True)
    if vendor == "wandb":
        import wandb

        t0 = time.perf_counter()
        run = wandb.init(project="bench", dir=str(out), mode="offline")
        log = run.log
        for i in range(steps):
            x = 1.0 / (i + 1)
            log({"loss": x, "acc": x + 1.0}, step=i)
        run.finish()
    elif vendor == "neptune":
        import os

        os.environ["NEPTUNE_DATA_DIRECTORY"] = str(out / ".neptune")
        import neptune

        t0 = time.perf_counter()
        run = neptune.init_run(mode="offline", capture_stdout=False, capture_stderr=False,
                               capture_hardware_metrics=False, capture_traceback=False,
                               git_ref=False, source_files=[])
        for i in range(steps):
            x = 1.0 / (i + 1)
            run["loss"].append(x, step=i)
            run["acc"].append(x + 1.0, step=i)
        run.stop()
    else:
        import comet_ml

        t0 = time.perf_counter()
        exp = comet_ml.OfflineExperiment(
            offline_directory=str(out), auto_metric_logging=False, auto_param_logging=False,
            auto_histogram_weight_logging=False, auto_histogram_gradient_logging=False,
            auto_histogram_activation_logging=False, auto_output_logging=False,
            log_code=False, log_graph=False, log_env_details=False, log_git_metadata=False,
            log_git_patch=False, log_env_gpu=False, log_env_host=False, log_env_cpu=False,
            display_summary_level=0)
        log = exp.log_metrics
        for i in range(steps):
            x = 1.0 / (i + 1)
            log({"loss": x, "acc": x + 1.0}, step=i)
        exp.end()
    t1 = time.perf_counter()
    return {"seconds": t1 - t0, "points": steps * 2}


def run(tmp: Path, vendors: list[str], steps: int, reps: int, profile: bool) -> dict:
    out: dict = {}
    for v in vendors:
        b, d = [], []
        for r in range(reps):
            pair = ["bridge", "sdk"] if r % 2 == 0 else ["sdk", "bridge"]
            for who in pair:
                print(f"  {v}: {who}, rep {r + 1}/{reps}", file=sys.stderr, flush=True)
                where = str(tmp / f"{v}-{who}-{r}")
                if who == "bridge":
                    b.append(run_in_child(bridge_sync, v, where, steps, profile and r == 0))
                else:
                    d.append(run_in_child(vendor_direct, v, where, steps))
        rate = lambda x: x["points"] / x["seconds"]  # noqa: E731
        out[v] = {"bridge": b, "sdk": d,
                  "bridge_rate": statistics.median(rate(x) for x in b),
                  "sdk_rate": statistics.median(rate(x) for x in d)}
    return out


def render(m: dict, res: dict, steps: int, reps: int) -> str:
    L = header("Sync into the W&B, Neptune and Comet offline files "
               "(`bench/bench_sync_offline.py`)", m)
    L.append(f"One run of 2 keys × {steps:,} steps ({2 * steps:,} metric points) per vendor. "
             "bridge: `Syncer(spool).run_once()` + `shutdown()` on a spool recorded "
             "beforehand, timed from the pass's start to the vendor SDK's files being "
             "flushed. SDK alone: the vendor's offline init, the same points logged in a loop "
             f"(one call per step; Neptune: one `append` per key), then finish/stop/end. "
             f"{reps} alternated repetitions, each in a fresh process; medians. Both with the "
             "SDK already imported (bridge's adapter imports it lazily; that one-off cost is "
             "the *import* column, outside the figures). Rates are metric points per second; "
             "bridge also delivers the run's few system/param events.")
    L.append("")
    L.append("| vendor | bridge s (each rep) | bridge pts/s | SDK alone s (each rep) "
             "| SDK alone pts/s | bridge ÷ SDK | SDK import s | complete |")
    L.append("|---|---|---:|---|---:|---:|---:|---|")
    secs = lambda rs: ", ".join(f"{r['seconds']:.2f}" for r in rs)  # noqa: E731
    for v, r in res.items():
        ok = all(x["complete"] for x in r["bridge"])
        err = next((x["error"] for x in r["bridge"] if x["error"]), None)
        L.append(f"| {v} | {secs(r['bridge'])} | {r['bridge_rate']:,.0f} | {secs(r['sdk'])} | "
                 f"{r['sdk_rate']:,.0f} | {r['bridge_rate'] / r['sdk_rate']:.2f}× | "
                 f"{statistics.median(x['import_s'] for x in r['bridge']):.2f} | "
                 f"{'yes' if ok else 'NO: ' + str(err)[:80]} |")
    L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_sync_offline",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5k steps, one repetition")
    ap.add_argument("--vendor", action="append", choices=VENDORS, help="only this vendor")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile bridge's first sync per vendor and print its hotspots")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    steps, reps = (5_000, 1) if args.quick else (20_000, 2)
    m = meta("bench.bench_sync_offline", ("wandb", "neptune", "comet_ml"))
    with tempfile.TemporaryDirectory(prefix="bench-sync-offline-") as d:
        res = run(Path(d), args.vendor or list(VENDORS), steps, reps, args.profile)
    print(render(m, res, steps, reps))
    for v, r in res.items():
        prof = r["bridge"][0].get("profile")
        if prof:
            print(f"\n<details><summary>cProfile of bridge's sync into {v} (tottime)"
                  "</summary>\n\n```")
            print(prof)
            print("```\n</details>")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": m, "results": res}, indent=2,
                                              default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
