"""Bytes on disk per metric point: bridge's spool beside each tracker's own offline files,
for the same logging.

Run ``python -m bench.bench_footprint [--quick] [--steps N] [--json F]``.

Each writer logs ``{"loss": x, "acc": y}`` at steps 0..N-1 (default 20,000 steps, 40,000
points: MLflow's SQLite store takes ~6 ms a call; quick 5,000 steps) in its own spawned process, then closes its run; the parent
measures what stayed on disk:

- bridge ``run.log`` (``sync="offline"``): the run's spool file(s) after ``finish()``;
- W&B offline: the run's ``.wandb`` transaction log (and the whole run directory);
- Neptune 1.x offline: the run's operation log directory under ``.neptune/offline``;
- neptune-scale offline: the run's ``run_operations.sqlite3``;
- Comet offline: the run's archive (a zip, compressed);
- MLflow ``log_metrics``: the SQLite store (``mlflow.db``) and the file store (``mlruns``).

Values differ per step (no writer can deduplicate). A benchmark, not a test: nothing
asserts; the figures go to BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from bench.common import header, meta, quiet_vendor_env, run_in_child

__all__ = ["main"]


def _bytes(root: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in root.rglob(pattern) if p.is_file())


def _values(steps: int) -> list[tuple[float, float]]:
    rnd = random.Random(11)
    return [(rnd.random(), rnd.random()) for _ in range(steps)]


def _bridge(tmp: str, steps: int) -> None:
    import bridge

    quiet_vendor_env(Path(tmp))
    run = bridge.init(project="bench", name="footprint", dir=Path(tmp) / "spool",
                      sync="offline", system_metrics=False)
    for i, (a, b) in enumerate(_values(steps)):
        run.log({"loss": a, "acc": b}, step=i)
    run.finish()


def _wandb(tmp: str, steps: int) -> None:
    quiet_vendor_env(Path(tmp))
    import wandb

    run = wandb.init(project="bench", mode="offline", dir=tmp,
                     settings=wandb.Settings(x_disable_stats=True, console="off"))
    for i, (a, b) in enumerate(_values(steps)):
        run.log({"loss": a, "acc": b}, step=i)
    run.finish()


def _neptune(tmp: str, steps: int) -> None:
    quiet_vendor_env(Path(tmp))
    os.environ["NEPTUNE_DATA_DIRECTORY"] = str(Path(tmp) / ".neptune")
    import neptune

    run = neptune.init_run(mode="offline", capture_stdout=False, capture_stderr=False,
                           capture_hardware_metrics=False, capture_traceback=False,
                           git_ref=False, source_files=[])
    for i, (a, b) in enumerate(_values(steps)):
        run["loss"].append(a, step=i)
        run["acc"].append(b, step=i)
    run.stop()


def _neptune_scale(tmp: str, steps: int) -> None:
    quiet_vendor_env(Path(tmp))
    from neptune_scale import Run

    run = Run(project="ws/bench", run_id="footprint", mode="offline",
              log_directory=str(Path(tmp) / ".neptune"), enable_console_log_capture=False)
    for i, (a, b) in enumerate(_values(steps)):
        run.log_metrics(data={"loss": a, "acc": b}, step=i)
    run.close()


def _comet(tmp: str, steps: int) -> None:
    quiet_vendor_env(Path(tmp))
    import comet_ml

    exp = comet_ml.OfflineExperiment(
        offline_directory=str(Path(tmp) / "comet"), auto_metric_logging=False,
        auto_param_logging=False, auto_output_logging=False, log_code=False, log_graph=False,
        log_env_details=False, log_git_metadata=False, log_git_patch=False, log_env_gpu=False,
        log_env_host=False, log_env_cpu=False, display_summary_level=0)
    for i, (a, b) in enumerate(_values(steps)):
        exp.log_metrics({"loss": a, "acc": b}, step=i)
    exp.end()


def _mlflow(tmp: str, steps: int, store: str) -> None:
    quiet_vendor_env(Path(tmp))
    import mlflow

    uri = (f"sqlite:///{Path(tmp) / 'mlflow.db'}" if store == "sqlite"
           else (Path(tmp) / "mlruns").as_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        for i, (a, b) in enumerate(_values(steps)):
            mlflow.log_metrics({"loss": a, "acc": b}, step=i)


# writer name -> (function, extra args, what is measured: glob under tmp, label)
WRITERS: dict[str, tuple[Any, tuple, str, str]] = {
    "bridge spool": (_bridge, (), "spool/**/*", "the run's spool files after `finish()`"),
    "W&B offline": (_wandb, (), "**/*.wandb", "the `.wandb` transaction log"),
    "Neptune 1.x offline": (_neptune, (), ".neptune/**/*", "the operation log directory"),
    "neptune-scale offline": (_neptune_scale, (), "**/run_operations.sqlite3",
                              "`run_operations.sqlite3`"),
    "Comet offline": (_comet, (), "comet/*.zip", "the offline archive (zip)"),
    "MLflow sqlite store": (_mlflow, ("sqlite",), "mlflow.db", "`mlflow.db`"),
    "MLflow file store": (_mlflow, ("file",), "mlruns/**/*", "the `mlruns` directory"),
}


def measure(tmp: Path, steps: int, only: list[str] | None = None) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name, (fn, extra, pattern, what) in WRITERS.items():
        if only and name not in only:
            continue
        d = tmp / name.replace(" ", "-")
        d.mkdir()
        try:
            run_in_child(fn, str(d), steps, *extra, timeout=1800)
        except RuntimeError as exc:  # an SDK not installed, or failing: say so, go on
            out[name] = {"error": str(exc).strip().splitlines()[-1], "what": what}
            continue
        size = sum(p.stat().st_size for p in d.glob(pattern) if p.is_file())
        out[name] = {"bytes": size, "points": 2 * steps, "what": what,
                     "bytes_per_point": size / (2 * steps)}
    return out


def render(m: dict, res: dict[str, dict], steps: int) -> str:
    lines = header("Bytes on disk per metric point", m)
    ours = res.get("bridge spool", {}).get("bytes_per_point")
    lines += ["", f"`{{\"loss\", \"acc\"}}` at {steps:,} steps ({2 * steps:,} points), each "
              "writer in its own process, measured after the run closed.", "",
              "| writer | what is measured | bytes | bytes per point | ratio to bridge |",
              "|---|---|---|---|---|"]
    for name, r in res.items():
        if "error" in r:
            lines.append(f"| {name} | {r['what']} | — | — | not measured: {r['error']} |")
            continue
        ratio = f"{r['bytes_per_point'] / ours:.2f}" if ours else "—"
        lines.append(f"| {name} | {r['what']} | {r['bytes']:,} | {r['bytes_per_point']:.1f} |"
                     f" {ratio} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_footprint",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5,000 steps")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--only", action="append", help="a writer's name (repeatable)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    steps = args.steps or (5_000 if args.quick else 20_000)
    m = meta("bench.bench_footprint", ("wandb", "neptune", "neptune-scale", "comet_ml",
                                        "mlflow"))
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as d:
        res = measure(Path(d), steps, args.only)
    print(render(m, res, steps))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": m, "steps": steps, "results": res},
                                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
