"""Concurrency: threads logging to one run; 32 processes into one run, no lock errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import bridge
from bridge.spool.reader import iter_events, list_runs

WRITER = textwrap.dedent("""
    import sys, warnings, bridge
    warnings.simplefilter("error")  # any bridge warning (e.g. a lock error) fails the child
    run = bridge.init(run_id=sys.argv[1], resume="allow", dir=sys.argv[2], sync="offline",
                      node="rank" + sys.argv[3])
    for step in range(500):
        run.log({"loss": step * 1.0, "rank": float(sys.argv[3])}, step=step)
    run.finish()
""")

PROCESSES = int(os.environ.get("BRIDGE_TEST_PROCESSES", "32"))


def test_many_processes_into_one_run(tmp_path):
    run = bridge.init(project="conc", dir=tmp_path, sync="offline", node="launcher")
    run.flush()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, run.id, str(tmp_path), str(r)],
                              stderr=subprocess.PIPE, text=True) for r in range(PROCESSES)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * PROCESSES, [e for e in errors if e][:2]
    assert not any("locked" in e for e in errors)
    run.finish()
    rec = list_runs(tmp_path)[0]
    assert len(rec.files) == PROCESSES + 1
    per_node: dict[str, int] = {}
    for e in iter_events(rec.files, run.id):
        if e.kind == "metric":
            per_node[e.node] = per_node.get(e.node, 0) + 1
    assert per_node == {f"rank{r}": 1000 for r in range(PROCESSES)}


def test_threads_logging_to_one_run(tmp_path):
    run = bridge.init(project="threads", dir=tmp_path, sync="offline", max_queue=2000)
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait()
        for step in range(2000):
            run.log({f"t{t}": float(step)}, step=step)
            if step % 500 == 0:
                run.log_param(f"p{t}_{step}", step)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.finish()
    rec = list_runs(tmp_path)[0]
    counts: dict[str, list] = {}
    for e in iter_events(rec.files, run.id):
        if e.kind == "metric":
            counts.setdefault(e.key, []).append(e.step)
    assert sorted(counts) == [f"t{t}" for t in range(8)]
    for steps in counts.values():
        assert sorted(steps) == list(range(2000))
