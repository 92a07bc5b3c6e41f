"""SIGKILL an import in the middle of writing a run: the next import leaves nothing torn,
nothing twice, nothing missing.

The child imports three runs of one source (points as ``MetricPoints``, events between
them, and one key's points read from a SQLite file, as the MLflow sqlite importer
hands them); the parent kills it at a random moment once a run's ``.partial`` file exists,
then imports again in-process. Runs finished before the kill are skipped, the rest are
written whole. Kill delays come from a seed printed on failure; set BRIDGE_TEST_KILLS for
more rounds and BRIDGE_TEST_SEED to replay one.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bridge.importers.sink import import_runs
from bridge.spool.reader import iter_events, list_runs

ROUNDS = int(os.environ.get("BRIDGE_TEST_KILLS", "4"))
RUNS, STEPS = 3, 60_000

SOURCE = textwrap.dedent('''
    import sqlite3
    from pathlib import Path
    from bridge.adapters.importing import ImportEvent, MetricPoints, SourceRun, SqlPoints

    class Source:
        """RUNS runs: STEPS steps of two keys as MetricPoints, a param between batches, and
        a third key's points copied from a SQLite file."""

        name = "synthetic"

        def __init__(self, table, runs, steps):
            self.table, self.n, self.steps = Path(table), runs, steps

        def runs(self):
            for r in range(self.n):
                yield SourceRun("synthetic", f"run-{r}", "killed", name=f"r{r}",
                                start_ms=1_000 + r)

        def stream(self, run):
            r = int(run.source_id.split("-")[1])
            for start in range(0, self.steps, 5_000):
                flat = []
                for s in range(start, min(self.steps, start + 5_000)):
                    flat += ["loss", s, 10 * s, r + s / self.steps, "acc", s, 10 * s, 0.5]
                yield MetricPoints(flat)
                yield ImportEvent("param", f"batch-{start}", 2_000, payload=start)
            yield SqlPoints(self.table, "lr", "SELECT step, ts AS ts_ms, value FROM "
                            "source.lr WHERE run = ? ORDER BY step", (r,))

        def events(self, run):
            raise AssertionError("the sink reads stream()")

    def make_table(path, runs, steps):
        with sqlite3.connect(path) as c:
            c.execute("CREATE TABLE IF NOT EXISTS lr (run INTEGER, step INTEGER, ts INTEGER, "
                      "value REAL)")
            if not c.execute("SELECT count(*) FROM lr").fetchone()[0]:
                c.executemany("INSERT INTO lr VALUES (?, ?, ?, ?)",
                              [(r, s, 10 * s, 1.0 / (s + 1)) for r in range(runs)
                               for s in range(steps)])
''')

CHILD = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[1])
    from killed_source import Source
    from bridge.importers.sink import import_runs
    import_runs(Source(sys.argv[2], int(sys.argv[4]), int(sys.argv[5])), sys.argv[3])
''')


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("source")
    (d / "killed_source.py").write_text(SOURCE)
    sys.path.insert(0, str(d))
    try:
        import killed_source  # type: ignore[import-not-found]

        killed_source.make_table(d / "lr.db", RUNS, STEPS)
    finally:
        sys.path.remove(str(d))
    return d


def _wait_for(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


def _check_whole(spool: Path) -> None:
    """Every run in full, each point once, in order, and no .partial file."""
    files = sorted((spool / "spool").iterdir())
    assert not [f for f in files if f.name.endswith(".partial")], files
    runs = list_runs(spool)
    assert sorted(r.name for r in runs) == [f"r{r}" for r in range(RUNS)]
    for rec in runs:
        (f,) = rec.files
        with sqlite3.connect(f.path) as c:
            assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        seqs = [ev.seq for ev in iter_events(rec.files, rec.run_id)]  # a point each
        assert seqs == list(range(1, len(seqs) + 1))
        metrics: dict[str, list[int]] = {}
        for ev in iter_events(rec.files, rec.run_id):
            if ev.kind == "metric":
                metrics.setdefault(ev.key, []).append(ev.step)
        assert {k: len(v) for k, v in metrics.items()} == {"loss": STEPS, "acc": STEPS,
                                                           "lr": STEPS}
        assert all(v == list(range(STEPS)) for v in metrics.values())


def test_a_killed_import_is_finished_by_the_next(source_dir: Path, tmp_path: Path) -> None:
    seed = int(os.environ.get("BRIDGE_TEST_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    sys.path.insert(0, str(source_dir))
    try:
        from killed_source import Source  # type: ignore[import-not-found]

        for round_ in range(ROUNDS):
            spool = tmp_path / f"spool-{round_}"
            (spool / "spool").mkdir(parents=True)
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(source_dir), str(source_dir / "lr.db"),
                 str(spool), str(RUNS), str(STEPS)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            try:
                nth = rng.randrange(RUNS)  # kill while the nth run is being written
                started = _wait_for(
                    lambda: any(f.name.endswith(".partial")
                                for f in (spool / "spool").iterdir())
                    and len(list((spool / "spool").glob("*.db"))) >= nth, 60)
                assert started, f"seed {seed}: the child wrote no partial file"
                time.sleep(rng.uniform(0, 0.3))
                child.send_signal(signal.SIGKILL)
            finally:
                child.wait(30)
            done_before = {f.name for f in (spool / "spool").glob("*.db")}
            again = import_runs(Source(source_dir / "lr.db", RUNS, STEPS), spool)
            skipped = {r.path.name for r in again if r.skipped}
            assert skipped == done_before, f"seed {seed}, round {round_}"
            _check_whole(spool)
    finally:
        sys.path.remove(str(source_dir))
