"""Caller time of one ``log`` of 2 metrics: bridge next to the vendors' own SDKs.

Run ``python -m bench.bench_vendors [--quick] [--no-wandb] [--json out.json]``.

Contenders, each in its own child process (spawned by this one, so one process tree), all
offline or local, no key, no network:

- bridge ``run.log({"loss": x, "acc": y}, step=i)`` (``sync="offline"``: the spool only);
- Neptune 1.x offline: ``run["loss"].append(x, step=i); run["acc"].append(y, step=i)``;
- Comet ``OfflineExperiment.log_metrics({2 keys}, step=i)``, auto-logging off;
- MLflow fluent ``mlflow.log_metrics({2 keys}, step=i)`` into a file store and a SQLite
  store, ``synchronous=True`` and ``synchronous=False`` (MLflow's async logging);
- ``wandb.log`` offline (as in ``bench/bench_log.py``).

The parent alternates the contenders in rounds (the starting one rotated), one turn at a
time; the others wait idle. A turn times single calls with ``perf_counter_ns`` (minus the
timer's own median cost, measured in the same child) and batches of 100 calls (batch time /
100). Between turns, untimed, each contender is left to finish its background work (bridge
flushed, MLflow's async queue flushed, then the child's threads and children idle).

A benchmark, not a test: nothing asserts; the targets are printed as met or missed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import Child, header, mark, meta, pct, quiet_vendor_env, settle_cpu

__all__ = ["main"]

_pc = time.perf_counter_ns
_BATCH = 100
_POOL = 128
_KEYS = ("loss", "acc")

TARGET_VS_WANDB = 40.0
TARGET_VS_COMET = 15.0


# -- contenders (built inside their child process) -----------------------------------------


class _Contender:
    """Times calls of ``self.log(dict, step=)``; subclasses set it up in ``__init__``."""

    name = "?"
    log: Callable[..., Any]

    def __init__(self, tmp: str) -> None:
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        quiet_vendor_env(self.tmp)
        rnd = random.Random(7)
        self.pool = [{k: rnd.random() for k in _KEYS} for _ in range(_POOL)]
        self.step = 0

    def flush(self) -> None:
        """Finish what the SDK still does in the background for the calls made so far."""

    def settle(self) -> None:
        self.flush()
        settle_cpu(deadline_s=10.0)

    def calibrate(self, seconds: float) -> float:
        """Warm up; return the cost of one call in ns (settled afterwards)."""
        n, t0 = 0, _pc()
        while True:
            self._per_call(10)
            n += 10
            el = _pc() - t0
            if el > seconds * 1e9 and n >= 30:
                break
        self.settle()
        return el / n

    def _per_call(self, n: int) -> list[int]:
        out: list[int] = []
        append, pc, log, pool = out.append, _pc, self.log, self.pool
        step, mask = self.step, _POOL - 1
        for j in range(n):
            d = pool[j & mask]
            s = step + j
            t0 = pc()
            log(d, step=s)
            t1 = pc()
            append(t1 - t0)
        self.step = step + n
        return out

    def _batched(self, n_batches: int) -> list[float]:
        out: list[float] = []
        append, pc, log = out.append, _pc, self.log
        batch = self.pool[:_BATCH]
        step = self.step
        for _ in range(n_batches):
            s = step
            t0 = pc()
            for d in batch:
                log(d, step=s)
                s += 1
            t1 = pc()
            append((t1 - t0) / _BATCH)
            step = s
        self.step = step
        return out

    def turn(self, n_call: int, n_batch: int) -> dict:
        gc.collect()
        ov: list[int] = []
        for _ in range(5000):
            t0 = _pc()
            t1 = _pc()
            ov.append(t1 - t0)
        per_call = self._per_call(n_call)
        batched = self._batched(n_batch)
        self.settle()
        return {"per_call": per_call, "batched": batched, "overhead": statistics.median(ov)}

    def close(self) -> None:
        pass


class BridgeLog(_Contender):
    name = "bridge run.log"

    def __init__(self, tmp: str) -> None:
        super().__init__(tmp)
        import bridge

        self.run = bridge.init(project="bench", name="vendors", dir=self.tmp / "spool",
                               sync="offline")
        t = getattr(self.run, "_system_thread", None)
        if t is not None:
            t.join(10)
        self.run.flush()
        self.log = self.run.log

    def flush(self) -> None:
        self.run.flush()

    def close(self) -> None:
        self.run.finish()


class NeptuneOffline(_Contender):
    name = "Neptune offline append ×2"

    def __init__(self, tmp: str) -> None:
        super().__init__(tmp)
        os.environ["NEPTUNE_DATA_DIRECTORY"] = str(self.tmp / ".neptune")
        import neptune

        self.run = neptune.init_run(
            mode="offline", capture_stdout=False, capture_stderr=False,
            capture_hardware_metrics=False, capture_traceback=False, git_ref=False,
            source_files=[])
        run = self.run

        def log(d: dict, step: int) -> None:
            for k, v in d.items():
                run[k].append(v, step=step)

        self.log = log

    def flush(self) -> None:
        self.run.wait()

    def close(self) -> None:
        self.run.stop()


class CometOffline(_Contender):
    name = "Comet offline log_metrics"

    def __init__(self, tmp: str) -> None:
        super().__init__(tmp)
        import comet_ml

        self.exp = comet_ml.OfflineExperiment(
            offline_directory=str(self.tmp / "comet"), auto_metric_logging=False,
            auto_param_logging=False, auto_histogram_weight_logging=False,
            auto_histogram_gradient_logging=False, auto_histogram_activation_logging=False,
            auto_output_logging=False, log_code=False, log_graph=False,
            log_env_details=False, log_git_metadata=False, log_git_patch=False,
            log_env_gpu=False, log_env_host=False, log_env_cpu=False,
            display_summary_level=0)
        self.log = self.exp.log_metrics

    def close(self) -> None:
        self.exp.end()


class _Mlflow(_Contender):
    store = "sqlite"
    synchronous = True

    def __init__(self, tmp: str) -> None:
        super().__init__(tmp)
        import mlflow

        self.mlflow = mlflow
        uri = (f"sqlite:///{self.tmp / 'mlflow.db'}" if self.store == "sqlite"
               else (self.tmp / "mlruns").as_uri())
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("bench")
        mlflow.start_run()
        sync, log_metrics = self.synchronous, mlflow.log_metrics

        def log(d: dict, step: int) -> None:
            log_metrics(d, step=step, synchronous=sync)

        self.log = log

    def flush(self) -> None:
        if not self.synchronous:
            self.mlflow.flush_async_logging()

    def close(self) -> None:
        self.mlflow.end_run()


class MlflowFileSync(_Mlflow):
    name = "MLflow log_metrics file store"
    store = "file"


class MlflowFileAsync(_Mlflow):
    name = "MLflow log_metrics file store async"
    store, synchronous = "file", False


class MlflowSqliteSync(_Mlflow):
    name = "MLflow log_metrics sqlite"


class MlflowSqliteAsync(_Mlflow):
    name = "MLflow log_metrics sqlite async"
    synchronous = False


class WandbOffline(_Contender):
    name = "wandb.log offline"

    def __init__(self, tmp: str) -> None:
        super().__init__(tmp)
        from bench.bench_log import _wandb

        made = _wandb(self.tmp)
        if made is None:
            raise RuntimeError("wandb is not importable")
        contender, self._finish = made
        self.log = contender.log

    def close(self) -> None:
        self._finish()


CONTENDERS = [BridgeLog, NeptuneOffline, CometOffline, MlflowFileSync, MlflowFileAsync,
              MlflowSqliteSync, MlflowSqliteAsync, WandbOffline]


# -- orchestration -------------------------------------------------------------------------


def run(tmp: Path, rounds: int, turn_s: float, with_wandb: bool,
        contenders: list[type] | None = None) -> dict:
    """Alternate ``contenders`` (default: this module's) in rounds; figures per contender."""
    classes = [c for c in (contenders or CONTENDERS) if with_wandb or c.name != WandbOffline.name]
    children: dict[str, Child] = {}
    failed: dict[str, str] = {}
    for cls in classes:  # start in parallel: SDK imports dominate the wall time
        children[cls.name] = Child(cls, str(tmp / cls.__name__), timeout=300)
    for name, ch in list(children.items()):
        try:
            ch.ready()
        except RuntimeError as exc:
            failed[name] = str(exc).strip().splitlines()[-1]
            del children[name]
    names = list(children)
    cost, n_call, n_batch = {}, {}, {}
    for name in names:
        cost[name] = children[name].call("calibrate", 0.1 if turn_s >= 0.1 else 0.05)
        n_call[name] = int(min(100_000, max(50, turn_s * 1e9 / cost[name])))
        n_batch[name] = max(1, n_call[name] // _BATCH)
    samples = {n: {"per_call": [], "batched": [], "overhead": []} for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        print(f"  round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        for name in order:
            res = children[name].call("turn", n_call[name], n_batch[name])
            s = samples[name]
            s["per_call"] += res["per_call"]
            s["batched"] += res["batched"]
            s["overhead"].append(res["overhead"])
    for name, ch in children.items():
        try:
            ch.close()
        except RuntimeError as exc:
            print(f"warning: closing {name} failed: {exc}", file=sys.stderr)
    out: dict = {"contenders": {}, "failed": failed}
    for name in names:
        s = samples[name]
        ov = statistics.median(s["overhead"])
        pc, b = sorted(s["per_call"]), sorted(s["batched"])
        out["contenders"][name] = {
            "calls": len(pc) + len(b) * _BATCH, "timer_ns": ov,
            "median_ns": max(0.0, statistics.median(pc) - ov),
            "p99_ns": max(0.0, pct(pc, 0.99) - ov),
            "batch_ns": statistics.median(b), "batch_p99_ns": pct(b, 0.99),
        }
    return out


def _us(ns: float) -> str:
    return f"{ns / 1000:.2f}" if ns < 100_000 else f"{ns / 1000:,.0f}"


def render(m: dict, res: dict, rounds: int, turn_s: float) -> str:
    L = header("Caller time beside the vendors' SDKs (`bench/bench_vendors.py`)", m)
    L.append(f"One `log` of 2 metrics with a step, each contender in its own child process, "
             f"alternated in {rounds} rounds (~{turn_s} s per turn and mode, the first "
             "contender rotated). *median / p99*: single calls timed with `perf_counter_ns`, "
             "minus the timer's median cost; *batch*: median over batches of 100 calls of "
             "(batch time / 100). Times in µs. Background work (bridge's writer, MLflow's "
             "async queue, the SDKs' threads, wandb-core) is flushed and left to go idle "
             "between turns, untimed. *× bridge*: the contender's cost over bridge's.")
    L.append("")
    L.append("| contender | calls | median | p99 | batch | batch p99 | × bridge (median) "
             "| × bridge (batch) |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = res["contenders"]
    br = rows.get("bridge run.log")
    for name, r in rows.items():
        xm = r["median_ns"] / br["median_ns"] if br and br["median_ns"] else float("nan")
        xb = r["batch_ns"] / br["batch_ns"] if br and br["batch_ns"] else float("nan")
        L.append(f"| {name} | {r['calls']:,} | {_us(r['median_ns'])} | {_us(r['p99_ns'])} | "
                 f"{_us(r['batch_ns'])} | {_us(r['batch_p99_ns'])} | {xm:,.0f}× | {xb:,.0f}× |")
    for name, why in res["failed"].items():
        L.append(f"| {name} | — | failed to start: {why} | | | | | |")
    L.append("")
    for target, label, name in ((TARGET_VS_WANDB, "`wandb.log` offline", "wandb.log offline"),
                                (TARGET_VS_COMET, "Comet offline `log_metrics`",
                                 "Comet offline log_metrics")):
        r = rows.get(name)
        if r is None or not br:
            L.append(f"- Target ≥ {target:.0f}× cheaper than {label}: not measured")
            continue
        xm, xb = r["median_ns"] / br["median_ns"], r["batch_ns"] / br["batch_ns"]
        L.append(f"- Target bridge ≥ {target:.0f}× cheaper than {label}: {xm:.0f}× by median, "
                 f"{xb:.0f}× by batch — **{mark(min(xm, xb) >= target)}**")
    L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_vendors",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 short rounds, under a minute")
    ap.add_argument("--no-wandb", action="store_true", help="skip wandb.log offline")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    rounds, turn_s = (2, 0.05) if args.quick else (6, 0.2)
    m = meta("bench.bench_vendors", ("mlflow", "wandb", "neptune", "comet_ml"))
    with tempfile.TemporaryDirectory(prefix="bench-vendors-") as d:
        res = run(Path(d), rounds, turn_s, not args.no_wandb)
    text = render(m, res, rounds, turn_s)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": {k: v for k, v in m.items()},
                                               "results": res}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
