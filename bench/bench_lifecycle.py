"""Spool lifecycle: the caller's cost of a large artifact, and `bridge prune` on a big spool.

Run ``python -m bench.bench_lifecycle [--quick] [--artifact-mb N] [--events N] [--json F]``.

1. ``log_artifact`` of an N MB file (default 1,000; quick 200), side by side: the old path
   (hash, copy, fsync on the caller's thread: ``bridge.spool.blobs.store_file``), the new
   copy mode (``log_artifact(path)``: the caller only lists and stats; the artifact thread
   copies), and reference mode (``copy=False``: hashed off the caller's thread, no copy).
   Caller time, time until ``flush()`` returns, and bytes the spool gained; ratios to the old
   path.
2. ``bridge prune`` (``bridge.agent.retention.prune``) on a spool of M metric events
   (default 10M; quick 1M) in 10 finished runs, one writer file each, marked delivered to one
   backend (cursors set past each run's last event and the remote run closed, as a
   completed `bridge sync` leaves them; the delivery itself is bench_sync_*'s subject):
   wall time, peak RSS of the pruning process, bytes freed; then `status` and `data()` on
   the emptied spool.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import header, make_spool, meta

__all__ = ["main"]


def _dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def artifact(tmp: Path, mb: int) -> dict:
    import bridge
    from bridge import writer_pool
    from bridge.spool import blobs

    src = tmp / "ckpt.bin"
    chunk = os.urandom(1 << 20)
    with open(src, "wb") as fh:
        for _ in range(mb):
            fh.write(chunk[:1_000_000])
    out: dict = {"mb": mb}
    # the old path: what log_artifact did on the caller's thread
    spool = tmp / "old"
    t0 = time.perf_counter()
    blobs.store_file(spool, src)
    out["old_caller_s"] = time.perf_counter() - t0
    out["old_spool_bytes"] = _dir_bytes(spool)
    for mode, copy in (("copy", True), ("reference", False)):
        spool = tmp / mode
        run = bridge.init(project="bench", dir=spool, sync="offline")
        t0 = time.perf_counter()
        run.log_artifact(src, copy=copy)
        caller = time.perf_counter() - t0
        run.flush()
        durable = time.perf_counter() - t0
        run.finish()
        writer_pool.close_all()
        out[f"{mode}_caller_s"] = caller
        out[f"{mode}_durable_s"] = durable
        out[f"{mode}_spool_bytes"] = _dir_bytes(spool / "blobs") if (spool / "blobs").exists() else 0
    src.unlink()
    return out


def _mark_delivered(spool: Path) -> None:
    from bridge.agent.state import StateStore
    from bridge.spool.reader import list_runs, max_seqs

    store = StateStore(spool)
    try:
        for rec in list_runs(spool):
            store.save_remote("memory", rec.run_id, f"mem-{rec.run_id}", None)
            store.commit_batch("memory", rec.run_id, max_seqs(rec.files, rec.run_id), {}, {})
            store.mark_closed("memory", rec.run_id)
    finally:
        store.close()


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from bridge.agent.retention import prune
t0 = time.perf_counter()
out = prune(Path(sys.argv[1]))
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "runs": len(out.report.runs), "events": out.report.events, "bytes": out.report.bytes}))
"""


def prune_bench(tmp: Path, events: int) -> dict:
    from bridge import writer_pool

    spool = tmp / "prune"
    runs = 10
    steps = events // (runs * 2)
    t0 = time.perf_counter()
    make_spool(spool, [{"name": "memory"}], runs=runs, steps=steps, keys=2)
    writer_pool.close_all()
    build = time.perf_counter() - t0
    _mark_delivered(spool)
    before = _dir_bytes(spool)
    res = subprocess.run([sys.executable, "-c", _CHILD, str(spool)], capture_output=True,
                         text=True, check=True)
    figures = json.loads(res.stdout)
    after = _dir_bytes(spool)
    from bridge.agent.status import spool_status
    from bridge.query import data

    t0 = time.perf_counter()
    status_left = len(spool_status(spool))
    rows_left = len(data(dir=spool, run="all"))
    after_s = time.perf_counter() - t0
    return {"events": runs * steps * 2, "build_s": build, "bytes_before": before,
            "bytes_after": after, "status_runs_after": status_left, "data_rows_after": rows_left,
            "status_and_data_after_s": after_s, **figures}


def render(m: dict, art: dict, pr: dict) -> str:
    lines = header("Spool lifecycle: large artifacts, prune", m)
    old = art["old_caller_s"]
    lines += ["", f"### `log_artifact` of a {art['mb']:,} MB file", "",
              "| path | caller time | until durable (`flush()`) | spool bytes added | caller ratio to old |",
              "|---|---|---|---|---|",
              f"| old: hash + copy + fsync on the caller's thread | {old * 1000:.0f} ms | "
              f"{old * 1000:.0f} ms | {art['old_spool_bytes'] / 1e6:,.0f} MB | 1 |"]
    for mode, label in (("copy", "copy mode, artifact thread"),
                        ("reference", "`copy=False`, hashed off-thread")):
        c = art[f"{mode}_caller_s"]
        lines.append(f"| {label} | {c * 1000:.2f} ms | {art[f'{mode}_durable_s'] * 1000:.0f} ms"
                     f" | {art[f'{mode}_spool_bytes'] / 1e6:,.0f} MB | {c / old:.4f} |")
    worst = max(art["copy_caller_s"], art["reference_caller_s"]) * 1000
    lines += ["", f"- Target `log_artifact` of a {art['mb']:,} MB file costs the caller under "
              f"50 ms: {worst:.1f} ms — **{'met' if worst < 50 else 'MISSED'}**",
              f"- Target `copy=False` keeps no second copy: {art['reference_spool_bytes']:,} "
              f"bytes added — **{'met' if art['reference_spool_bytes'] == 0 else 'MISSED'}**"]
    lines += ["", f"### `bridge prune` of {pr['events']:,} delivered metric events (10 runs)", "",
              "| figure | value |", "|---|---|",
              f"| wall time | {pr['wall_s']:.2f} s |",
              f"| peak RSS of the pruning process | {pr['peak_rss_mb']:.0f} MB |",
              f"| bytes freed (reported) | {pr['bytes'] / 1e6:,.1f} MB |",
              f"| spool bytes before → after | {pr['bytes_before'] / 1e6:,.1f} MB → "
              f"{pr['bytes_after'] / 1e6:,.3f} MB |",
              f"| bytes per metric event before | {pr['bytes_before'] / pr['events']:.1f} |",
              f"| `status` / `data()` after: runs, rows | {pr['status_runs_after']}, "
              f"{pr['data_rows_after']} ({pr['status_and_data_after_s'] * 1000:.0f} ms) |",
              "",
              f"- Target prune leaves `status` and `data()` consistent: "
              f"{pr['status_runs_after']} runs, {pr['data_rows_after']} rows left — "
              f"**{'met' if pr['status_runs_after'] == pr['data_rows_after'] == 0 else 'MISSED'}**",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_lifecycle",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 MB artifact, 1M events")
    ap.add_argument("--artifact-mb", type=int, default=None)
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    mb = args.artifact_mb or (200 if args.quick else 1000)
    events = args.events or (1_000_000 if args.quick else 10_000_000)
    m = meta("bench.bench_lifecycle")
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as d:
        art = artifact(Path(d), mb)
        pr = prune_bench(Path(d), events)
    print(render(m, art, pr))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": m, "artifact": art, "prune": pr},
                                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
