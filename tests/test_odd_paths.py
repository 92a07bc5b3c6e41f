"""A spool whose path holds characters a SQLite URI gives a meaning (``?``, ``#``, ``%``):
every read-only open names the file itself, not a URI query or fragment cut from it."""

from __future__ import annotations

from pathlib import Path

import pytest

import bridge
from bridge import writer_pool
from bridge.adapters.memory import STORE
from bridge.agent.retention import prune
from bridge.agent.shards import parse_shard
from bridge.agent.status import spool_status
from bridge.agent.sync import Syncer
from bridge.config import AgentSettings
from bridge.spool.reader import spool_files
from bridge.spool.repair import check_file
from bridge.spool.schema import read_only_uri

FAST = AgentSettings(retry_initial=0.01, retry_max=0.05, retry_attempts=2)
ODD_NAMES = ["what?mode=rw", "sharp#1", "per%25cent", "two words"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_read_only_uri_names_the_file_itself(tmp_path: Path, name: str) -> None:
    import sqlite3

    db = tmp_path / name / "x.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (v)")
        conn.execute("INSERT INTO t VALUES (42)")
    conn.close()
    ro = sqlite3.connect(read_only_uri(db), uri=True)
    try:
        assert ro.execute("SELECT v FROM t").fetchall() == [(42,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.execute("INSERT INTO t VALUES (1)")
    finally:
        ro.close()
    assert sorted(p.name for p in db.parent.iterdir()) == ["x.db"]  # nothing made beside it


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_spool_under_an_odd_path_logs_syncs_and_prunes(tmp_path: Path, name: str) -> None:
    spool = tmp_path / name / "spool"
    store = f"odd-{ODD_NAMES.index(name)}"
    STORE.pop(store, None)
    run = bridge.init(project="odd", dir=spool, sync="offline",
                      backends=[{"name": "memory", "store": store}])
    for step in range(20):
        run.log({"loss": 1.0 / (step + 1)}, step=step)
    run.finish()
    writer_pool.close_all()

    files = spool_files(spool)
    assert files and all(check_file(f).ok for f in files)  # repair's check
    df = bridge.data(run=run.id, event="metric", dir=spool)  # the reader
    assert list(df["step"]) == list(range(20))
    syncer = Syncer(spool, settings=FAST, shard=parse_shard("0/1"))  # a shard's reads
    try:
        summary = syncer.run_once()
    finally:
        syncer.shutdown()
    assert summary.complete, [(r.run_id, r.error) for r in summary.results]
    delivered = [(e.step, e.value) for e in STORE[store]["events"][run.id] if e.kind == "metric"]
    assert delivered == [(s, 1.0 / (s + 1)) for s in range(20)]
    (status,) = spool_status(spool)
    assert status.run_id == run.id and [(p.pending, p.dead) for p in status.backends] == [(0, 0)]
    out = prune(spool)  # liveness and prune's reads
    assert [v.run_id for v in out.runs if v.prune] == [run.id]
    assert spool_status(spool) == []
