"""MLflow's own API over ``bridge:`` (the tracking-store plugin) beside MLflow's own stores.

``python -m bench.bench_mlflow_plugin [--quick] [--json F]``: per call of
``mlflow.log_metric`` and ``mlflow.log_metrics`` (3 keys) inside a run, with the tracking URI
``bridge:///<tmp>``, MLflow's file store, its sqlite store, and the sqlite store with MLflow's
async logging; and the wall time of an autologged sklearn fit (``mlflow.sklearn.autolog``,
``log_models=False``) with ``bridge:`` and with the file store. Each contender runs in a fresh
interpreter of its own, so no store's imports or threads weigh on another's figure; the
contenders alternate in rounds (3, or 2 with ``--quick``) and each figure is the median of its
rounds, so a burst of load on the shared machine weighs on every contender alike. Targets
(issue 17): ``bridge:`` at least 10x cheaper per call than the file store and 50x than the
sqlite store; the autologged fit no slower than with the file store.

Part of every figure is MLflow's own fluent layer, the same for every store: each
``mlflow.log_metric`` builds ``MlflowClient`` objects whose registry-URI lookup tries to
import pyspark (about 150 µs per call here without pyspark installed); it is not bridge's to
remove, and it bounds the ratio any store can reach.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import header, mark, meta

_CHILD = r'''
import json, os, sys, time
import mlflow
kind, root, n, what = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
uri = {"bridge": f"bridge://{root}/spool", "file": f"file://{root}/mlruns",
       "sqlite": f"sqlite:///{root}/mlflow.db", "async": f"sqlite:///{root}/mlflow.db"}[kind]
if kind == "file":
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
if kind == "async":
    mlflow.config.enable_async_logging(True)
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("bench")
out = {}
if what == "calls":
    with mlflow.start_run():
        mlflow.log_metric("warm", 1.0, step=0)
        t = time.perf_counter()
        for i in range(n):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
        out["log_metric_us"] = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for i in range(n):
            mlflow.log_metrics({"a": 1.0, "b": 2.0, "c": 3.0}, step=i)
        out["log_metrics_us"] = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
    out["end_run_s"] = time.perf_counter() - t  # async: draining the queue
else:
    import numpy as np
    from sklearn.linear_model import Ridge
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(2000, 20)), rng.normal(size=2000)
    mlflow.sklearn.autolog(log_models=False)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        with mlflow.start_run():
            Ridge(alpha=0.5).fit(X, y)
        times.append(time.perf_counter() - t)
    out["fit_s"] = sorted(times)[len(times) // 2]
print(json.dumps(out))
'''

CALLS = {"bridge": 5000, "file": 1000, "sqlite": 200, "async": 5000}
QUICK = {"bridge": 1000, "file": 300, "sqlite": 50, "async": 1000}


def _child(kind: str, n: int, what: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-plugin-") as root:
        env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "BRIDGE_CONFIG": f"{root}/none.toml"}
        import os

        env = {**{k: v for k, v in os.environ.items()
                  if not k.startswith(("MLFLOW_", "BRIDGE_"))}, **env}
        out = subprocess.run([sys.executable, "-c", _CHILD, kind, root, str(n), what],
                             env=env, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(f"{kind} {what}: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    counts = QUICK if args.quick else CALLS
    rounds = 2 if args.quick else 3
    m = meta("bench.bench_mlflow_plugin", ("mlflow", "scikit-learn"))
    runs: dict[str, list[dict]] = {k: [] for k in counts}
    fit_runs: dict[str, list[dict]] = {"bridge": [], "file": []}
    for r in range(rounds):
        print(f"  round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        order = list(counts)[r % len(counts):] + list(counts)[:r % len(counts)]
        for k in order:
            runs[k].append(_child(k, counts[k], "calls"))
        for k in ("bridge", "file")[::1 if r % 2 == 0 else -1]:
            fit_runs[k].append(_child(k, 3 if args.quick else 5, "fit"))

    def med(rows: list[dict], field: str) -> float:
        return statistics.median(row[field] for row in rows)

    calls = {k: {f: med(v, f) for f in ("log_metric_us", "log_metrics_us")}
             for k, v in runs.items()}
    fits = {k: {"fit_s": med(v, "fit_s")} for k, v in fit_runs.items()}
    b = calls["bridge"]
    result = {
        "calls": calls, "fits": fits, "rounds": rounds,
        "log_metric_vs_file": calls["file"]["log_metric_us"] / b["log_metric_us"],
        "log_metric_vs_sqlite": calls["sqlite"]["log_metric_us"] / b["log_metric_us"],
        "log_metrics_vs_file": calls["file"]["log_metrics_us"] / b["log_metrics_us"],
        "log_metrics_vs_sqlite": calls["sqlite"]["log_metrics_us"] / b["log_metrics_us"],
        "fit_vs_file": fits["bridge"]["fit_s"] / fits["file"]["fit_s"],
    }
    lines = header("MLflow's API over `bridge:`, the tracking-store plugin "
                   "(`bench/bench_mlflow_plugin.py`)", m)
    lines += [f"Per call inside a run, each store in a fresh interpreter, median of {rounds} "
              "alternated rounds; µs per call. *async*: the sqlite store with MLflow's async "
              "logging (the queue drained at `end_run`, untimed).", "",
              "| store | log_metric µs/call | log_metrics(3) µs/call |", "|---|---:|---:|"]
    for k, v in calls.items():
        lines.append(f"| {k} | {v['log_metric_us']:.0f} | {v['log_metrics_us']:.0f} |")
    r = result
    lines += ["",
              f"- Target `bridge:` ≥ 10× cheaper per call than MLflow's file store: "
              f"{r['log_metric_vs_file']:.1f}× (`log_metric`), {r['log_metrics_vs_file']:.1f}× "
              f"(`log_metrics`) — **{mark(min(r['log_metric_vs_file'], r['log_metrics_vs_file']) >= 10)}**",
              f"- Target `bridge:` ≥ 50× cheaper per call than MLflow's sqlite store: "
              f"{r['log_metric_vs_sqlite']:.0f}× (`log_metric`), {r['log_metrics_vs_sqlite']:.0f}× "
              f"(`log_metrics`) — **{mark(min(r['log_metric_vs_sqlite'], r['log_metrics_vs_sqlite']) >= 50)}**",
              f"- Target an autologged sklearn fit no slower than with the file store: "
              f"{fits['bridge']['fit_s'] * 1e3:.0f} ms vs {fits['file']['fit_s'] * 1e3:.0f} ms "
              f"(×{r['fit_vs_file']:.2f}) — **{mark(r['fit_vs_file'] <= 1.0)}**", ""]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"meta": m, "results": result}, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
