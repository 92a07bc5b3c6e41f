"""Several processes into one run (DDP ranks), and fork after init."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import bridge
from bridge.spool.reader import iter_events, list_runs

RANK_SCRIPT = textwrap.dedent("""
    import sys, bridge
    run_id, spool, rank = sys.argv[1], sys.argv[2], sys.argv[3]
    run = bridge.init(project="ddp", run_id=run_id, resume="allow", dir=spool, sync="offline",
                      node=f"rank{rank}")
    for step in range(200):
        run.log({f"loss/rank{rank}": step * 0.5, "shared": float(rank)}, step=step)
    run.finish()
""")


def test_four_processes_into_one_run(tmp_path):
    run = bridge.init(project="ddp", dir=tmp_path, sync="offline", node="launcher")
    run.flush()
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, run.id, str(tmp_path), str(r)])
             for r in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    run.finish()
    rec = list_runs(tmp_path)[0]
    assert len(list_runs(tmp_path)) == 1
    assert len(rec.files) == 5  # the launcher + one file per rank
    evs = [e for e in iter_events(rec.files, run.id) if e.kind == "metric"]
    assert len(evs) == 4 * 200 * 2
    by_node = {}
    for e in evs:
        by_node.setdefault(e.node, 0)
        by_node[e.node] += 1
    assert by_node == {f"rank{r}": 400 for r in range(4)}
    ts = [e.ts_ms for e in evs]
    assert ts == sorted(ts)  # merged in time order across files
    df = bridge.data(run=run.id, dir=tmp_path, event="metric", node="rank2")
    assert len(df) == 400 and set(df["node"]) == {"rank2"}


def test_fork_after_init_child_gets_its_own_file(tmp_path):
    run = bridge.init(project="fork", dir=tmp_path, sync="offline")
    run.log({"parent": 1.0}, step=0)
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            run.log({"child": 2.0}, step=1)
            run.flush()
        except BaseException:
            code = 1
        finally:
            os._exit(code)  # skip atexit: the child's writer is flushed above
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    run.log({"parent": 3.0}, step=2)
    run.finish()
    rec = list_runs(tmp_path)[0]
    assert len(rec.files) == 2
    got = sorted((e.key, e.value) for e in iter_events(rec.files, run.id) if e.kind == "metric")
    assert got == [("child", 2.0), ("parent", 1.0), ("parent", 3.0)]
