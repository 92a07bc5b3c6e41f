"""Run the whole benchmark suite and collect one report, one JSON file and a target table.

``python -m bench [--quick] [--json F] [--markdown F] [--only NAME ...]``.

Each benchmark module runs in a subprocess of its own (``python -m bench.<name>``, with
``--quick`` passed through), so one module's imports, threads and vendor SDKs never weigh on
the next. Their markdown (stdout) is collected into one document whose top is a table of
every target (target, figure, met or missed, the command that measured it), and their JSON
into one file. Progress goes to stderr; the table to stdout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["MODULES", "Target", "main"]

# In the order of BENCHMARKS.md; quick-mode cost on a 2-core machine in the comments.
MODULES = (
    "bench_log",           # hot path, ingestion, import time (~30 s)
    "bench_vendors",       # caller time beside the vendors' SDKs (~1 min)
    "bench_media",         # caller time of an image per step beside W&B and MLflow (~1.5 min)
    "bench_mlflow_plugin", # MLflow's fluent API over bridge: beside MLflow's stores (~2 min)
    "bench_writers",       # 1-32 writer processes (~45 s)
    "bench_sync_mlflow",   # sync to a real MLflow server (~1.5 min)
    "bench_sync_offline",  # sync into W&B, Neptune, Comet offline files (~30 s)
    "bench_sessions",      # W&B sessions / Comet archives per hour of background sync (~2 min)
    "bench_scale",         # 1M / 10M-event backlog: status latency, sync memory (~20 s)
    "bench_crash",         # events lost to SIGKILL per durability setting (~30 s)
    "bench_lifecycle",     # a large artifact's caller cost; prune of a 1M/10M spool (~15 s)
    "bench_footprint",     # bytes on disk per metric point beside the vendors' files (~3 min)
    "bench_shards",        # 1/2/4/8 sync shards against a rate-limiting stand-in (~1 min quick)
    "bench_journal",       # durability="journal": calls lost per kill, sustained cost (~2 min)
    "bench_import",        # import throughput beside each source's raw read (~1.5 min quick)
)

_TARGET = re.compile(r"^- Target (?P<target>.+?): (?P<figure>.+?) — \*\*(?P<mark>met|MISSED)\*\*")
# bench_log states its import target inside a sentence.
_IMPORT = re.compile(r"\*\*(?P<figure>\+[\d.]+ ms)\*\* — target (?P<target>≤ [\d.]+ ms) "
                     r"\*\*(?P<mark>met|MISSED)\*\*")


@dataclass
class Target:
    module: str
    target: str
    figure: str
    met: bool
    command: str


@dataclass
class Outcome:
    module: str
    command: str
    exit: int
    seconds: float
    markdown: str
    data: dict | None
    stderr_tail: str
    targets: list[Target] = field(default_factory=list)


def _run(module: str, quick: bool, tmp: Path) -> Outcome:
    out_json = tmp / f"{module}.json"
    args = [sys.executable, "-m", f"bench.{module}", *(["--quick"] if quick else []),
            "--json", str(out_json)]
    shown = f"python -m bench.{module}" + (" --quick" if quick else "")
    print(f"== {shown}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    tail: list[str] = []
    assert proc.stderr is not None
    stdout_chunks: list[str] = []
    # stderr is progress: echo it as it comes; stdout is read after (a pipe each, so a
    # reader thread keeps the child from blocking on a full stdout pipe).
    def drain() -> None:
        assert proc.stdout is not None
        stdout_chunks.append(proc.stdout.read())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    for line in proc.stderr:
        sys.stderr.write("   " + line)
        tail.append(line)
        del tail[:-40]
    proc.wait()
    reader.join()
    seconds = time.monotonic() - t0
    markdown = "".join(stdout_chunks).strip()
    data = json.loads(out_json.read_text()) if out_json.exists() else None
    o = Outcome(module, shown, proc.returncode, seconds, markdown, data, "".join(tail))
    for line in markdown.splitlines():
        m = _TARGET.match(line.strip())
        if m:
            o.targets.append(Target(module, m["target"], m["figure"], m["mark"] == "met",
                                    shown))
        m = _IMPORT.search(line)
        if m:
            o.targets.append(Target(module, f"`import bridge` adds {m['target']} to bare Python",
                                    m["figure"], m["mark"] == "met", shown))
    return o


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summary_table(outcomes: list[Outcome]) -> str:
    lines = ["| target | figure | | command |", "|---|---|---|---|"]
    for o in outcomes:
        if o.exit != 0:
            lines.append(f"| `{o.module}` did not finish (exit {o.exit}) | – | **FAILED** | "
                         f"`{o.command}` |")
        for t in o.targets:
            lines.append(f"| {t.target} | {t.figure} | **{'met' if t.met else 'MISSED'}** | "
                         f"`{t.command}` |")
    return "\n".join(lines)


def document(outcomes: list[Outcome], quick: bool, started: str, load: tuple) -> str:
    cmd = "python -m bench" + (" --quick" if quick else "")
    head = [
        "# Benchmarks",
        "",
        f"`{cmd}` on {started}; load average before {load[0]}, after {load[1]}; "
        + ", ".join(f"`{o.module}` {o.seconds:.0f} s" for o in outcomes) + ".",
        "",
        "## Targets",
        "",
        summary_table(outcomes),
        "",
    ]
    body = []
    for o in outcomes:
        body.append(o.markdown if o.markdown else f"## `{o.module}`\n\n(no output)")
        if o.exit != 0:
            body.append(f"\n`{o.command}` exited {o.exit}; last stderr lines:\n\n```\n"
                        f"{o.stderr_tail.strip()}\n```")
        body.append("")
    return "\n".join(head + body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a short run of every module (a few minutes on 2 cores)")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help=f"only these modules ({', '.join(m[6:] for m in MODULES)})")
    ap.add_argument("--json", metavar="PATH", help="write every module's figures as one JSON")
    ap.add_argument("--markdown", metavar="PATH", help="write the combined markdown")
    args = ap.parse_args(argv)
    modules = list(MODULES)
    if args.only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in args.only}
        unknown = wanted - set(MODULES)
        if unknown:
            ap.error(f"unknown module(s): {', '.join(sorted(unknown))}")
        modules = [m for m in MODULES if m in wanted]
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load0 = _load()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as d:
        outcomes = [_run(m, args.quick, Path(d)) for m in modules]
    load1 = _load()
    wall = time.monotonic() - t0
    doc = document(outcomes, args.quick, started, (load0, load1))
    if args.markdown:
        Path(args.markdown).write_text(doc + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "started": started, "quick": args.quick, "wall_s": wall,
            "load_before": load0, "load_after": load1,
            "targets": [asdict(t) for o in outcomes for t in o.targets],
            "modules": {o.module: {"command": o.command, "exit": o.exit,
                                   "seconds": o.seconds, "data": o.data}
                        for o in outcomes},
        }, indent=2))
    print(f"\nbench suite: {len(outcomes)} module(s) in {wall:.0f} s, load average "
          f"{load0} → {load1}\n")
    print(summary_table(outcomes))
    return 0 if all(o.exit == 0 for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
