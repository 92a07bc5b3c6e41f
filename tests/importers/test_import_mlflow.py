"""The MLflow importer against stores filled by MLflow's own fluent API (not by bridge).

A child process logs a corpus with ``mlflow`` (a real server, an embedded sqlite store, a
file store); the importer reads it into a spool, and every point, param, tag, artifact byte,
time, status, id and parent link is compared with what was logged.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("mlflow")

from bridge.adapters.importing import ImportEvent, SourceRun  # noqa: E402
from bridge.adapters.mlflow.importer import MlflowImporter  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.spool import blobs  # noqa: E402
from bridge.spool.reader import find_run, iter_events, list_runs  # noqa: E402

T0 = 1_700_000_000_000
BINARY = bytes(range(256)) * 4

# What the fluent API logs: two experiments, a parent with a nested child, odd statuses,
# NaN points, explicit timestamps, a top-level file and a directory of artifacts.
SPEC: dict[str, Any] = {
    "experiments": [
        {"name": "exp-a", "runs": [
            {"name": "parent", "status": "FINISHED", "description": "parent notes\nline 2",
             "params": {"lr": 0.001, "layers": [64, 32], "opt": "adam", "flag": True},
             "tags": {"team": "vision", "summary.best": "0.93", "bridge.group": "sweep-1"},
             "metrics": {"loss": [[s, T0 + 10 * s, 1.0 / (s + 1)] for s in range(50)],
                         "acc": [[0, T0, 0.5], [1, T0 + 5, float("nan")], [3, T0 + 9, 0.75],
                                 [3, T0 + 11, 0.8]]},
             "files": {"weights.bin": None},
             "dirs": {"plots": {"a.txt": "first plot", "sub/b.csv": "x,y\n1,2\n"}},
             "children": [
                 {"name": "child", "status": "FAILED", "params": {"fold": 2},
                  "tags": {"kind": "cv"},
                  "metrics": {"val/loss": [[s, T0 + 100 + s, 2.0 - s / 10] for s in range(7)]},
                  "files": {}, "dirs": {}, "children": []},
             ]},
            {"name": "killed", "status": "KILLED", "params": {}, "tags": {},
             "metrics": {"x": [[0, T0 + 1, -1.5]]}, "files": {}, "dirs": {}, "children": []},
        ]},
        {"name": "exp-b", "runs": [
            {"name": "other", "status": "FINISHED", "params": {"seed": 7}, "tags": {"k": "v"},
             "metrics": {"m": [[s, T0 + s, float(s)] for s in range(0, 30, 3)]},
             "files": {"report.txt": "hello"}, "dirs": {}, "children": []},
        ]},
    ]
}

WRITER = textwrap.dedent(
    """
    import json, os, sys, tempfile
    import mlflow
    from mlflow import MlflowClient
    spec_path, out_path, uris = sys.argv[1], sys.argv[2], sys.argv[3:]
    BINARY = bytes(range(256)) * 4
    spec = json.load(open(spec_path))
    out = {}

    def write(r):
        mlflow.log_params(r["params"])
        mlflow.set_tags(r["tags"])
        for key, points in r["metrics"].items():
            for step, ts, value in points:
                mlflow.log_metric(key, float(value), step=step, timestamp=ts)
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in r["files"].items():
                path = os.path.join(tmp, name)
                with open(path, "wb") as f:
                    f.write(BINARY if text is None else text.encode())
                mlflow.log_artifact(path)
            for dname, files in r["dirs"].items():
                root = os.path.join(tmp, dname)
                for rel, text in files.items():
                    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
                    with open(os.path.join(root, rel), "w") as f:
                        f.write(text)
                mlflow.log_artifacts(root, artifact_path=dname)

    def run(r, nested=False):
        active = mlflow.start_run(run_name=r["name"], nested=nested,
                                  description=r.get("description"))
        write(r)
        for child in r["children"]:
            run(child, nested=True)
        rid = active.info.run_id
        mlflow.end_run(status=r["status"])
        got = MlflowClient(uri).get_run(rid)
        out[uri][r["name"]] = {"id": rid, "start": got.info.start_time, "end": got.info.end_time,
                          "status": got.info.status, "tags": got.data.tags,
                          "experiment": got.info.experiment_id}

    for uri in uris:  # one process for several stores: MLflow's import is slow
        mlflow.set_tracking_uri(uri)
        out[uri] = {}
        for exp in spec["experiments"]:
            mlflow.set_experiment(exp["name"])
            for r in exp["runs"]:
                run(r)
    json.dump(out, open(out_path, "w"))
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_ENABLE_ASYNC_LOGGING="false",
               GIT_PYTHON_REFRESH="quiet", MLFLOW_ALLOW_FILE_STORE="true")
    return env


class CorpusWriter:
    """Log SPEC into each of ``uris`` with MLflow's fluent API in a child process.

    ``result()`` waits for it and gives the facts of each run (id, times, status, tags as
    MLflow holds them) per URI.
    """

    def __init__(self, uris: list[str], work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        (work / "spec.json").write_text(json.dumps(SPEC))
        (work / "writer.py").write_text(WRITER)
        self.out = work / "out.json"
        self.proc = subprocess.Popen(
            [sys.executable, str(work / "writer.py"), str(work / "spec.json"), str(self.out),
             *uris], cwd=work, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)

    def result(self) -> dict[str, dict[str, Any]]:
        try:
            _, err = self.proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert self.proc.returncode == 0, err[-4000:]
        return json.loads(self.out.read_text())


def _specs() -> Iterator[tuple[str, dict[str, Any]]]:
    def walk(runs: list[dict]) -> Iterator[dict]:
        for r in runs:
            yield r
            yield from walk(r["children"])

    for exp in SPEC["experiments"]:
        for r in walk(exp["runs"]):
            yield exp["name"], r


def _nan_safe(value: float) -> Any:
    return "NaN" if math.isnan(value) else value


def read_back(spool: Path, run_id: str) -> dict[str, Any]:
    """An imported run from the spool: its record, points, params, tags, files."""
    rec = find_run(spool, run_id)
    assert rec is not None, f"run {run_id} not in the spool"
    out: dict[str, Any] = {"rec": rec, "points": {}, "params": {}, "tags": {}, "summary": {},
                           "artifacts": {}, "notes": [], "events": [], "all": []}
    for ev in iter_events(rec.files, run_id):
        out["all"].append((ev.kind, ev.key, ev.step, ev.ts_ms,
                           None if ev.value is None else _nan_safe(ev.value),
                           json.dumps(ev.payload, sort_keys=True)))
        if ev.kind == "metric":
            out["points"].setdefault(ev.key, []).append([ev.step, ev.ts_ms, _nan_safe(ev.value)])
        elif ev.kind == "param":
            out["params"][ev.key] = ev.payload
        elif ev.kind == "tag":
            out["tags"][ev.key] = ev.payload
        elif ev.kind == "summary":
            out["summary"][ev.key] = ev.payload
        elif ev.kind == "note":
            out["notes"].append(ev.payload)
        elif ev.kind == "event":
            out["events"].append(ev)
        elif ev.kind == "artifact":
            out["artifacts"][ev.key] = {
                f["path"]: blobs.blob_path(spool, f["sha256"]).read_bytes()
                for f in ev.payload["files"]}
    for key in out["points"]:
        out["points"][key].sort(key=lambda p: (p[1], p[0], str(p[2])))
    return out


def check_corpus(spool: Path, facts: dict[str, Any]) -> None:
    """Everything SPEC logged is in the spool, exactly once, with MLflow's ids."""
    runs = {r.run_id: r for r in list_runs(spool)}
    assert len(runs) == len(facts)
    for exp_name, r in _specs():
        fact = facts[r["name"]]
        got = read_back(spool, fact["id"])
        rec = got["rec"]
        assert rec.run_id == fact["id"]  # the MLflow id survives as the bridge id
        assert (rec.project, rec.name, rec.status) == (exp_name, r["name"], r["status"])
        assert (rec.start_ms, rec.end_ms) == (fact["start"], fact["end"])
        expected_points = {k: sorted(([s, t, _nan_safe(v)] for s, t, v in pts),
                                     key=lambda p: (p[1], p[0], str(p[2])))
                           for k, pts in r["metrics"].items()}
        assert got["points"] == expected_points
        assert got["params"] == {k: str(v) for k, v in r["params"].items()}
        mlflow_tags = dict(fact["tags"])
        notes = mlflow_tags.pop("mlflow.note.content", None)
        assert notes == r.get("description")
        assert got["notes"] == ([notes] if notes else [])
        assert rec.notes == notes
        assert rec.group == mlflow_tags.pop("bridge.group", None)
        summary = {k[len("summary."):]: json.loads(v)
                   for k, v in list(mlflow_tags.items()) if k.startswith("summary.")}
        for k in list(mlflow_tags):
            if k.startswith("summary."):
                del mlflow_tags[k]
        assert got["summary"] == summary
        expected_tags = dict(mlflow_tags, **{"bridge.source": "mlflow"})
        parent = mlflow_tags.get("mlflow.parentRunId")
        if parent:
            expected_tags["bridge.parent_run_id"] = parent
        assert got["tags"] == expected_tags
        for k, v in r["tags"].items():
            if k not in ("bridge.group",) and not k.startswith("summary."):
                assert got["tags"][k] == v
        expected_art = {name: {name: BINARY if text is None else text.encode()}
                        for name, text in r["files"].items()}
        for dname, files in r["dirs"].items():
            expected_art[dname] = {rel: text.encode() for rel, text in files.items()}
        assert got["artifacts"] == expected_art
    child = read_back(spool, facts["child"]["id"])
    assert child["tags"]["bridge.parent_run_id"] == facts["parent"]["id"]
    parent = read_back(spool, facts["parent"]["id"])
    assert parent["summary"] == {"best": 0.93}
    assert parent["rec"].group == "sweep-1"
    assert parent["points"]["acc"][1] == [1, T0 + 5, "NaN"]


# -- a real server ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedded_writer(tmp_path_factory) -> tuple[dict[str, str], CorpusWriter]:
    """Starts filling an embedded sqlite store and a file store while the server starts."""
    root = tmp_path_factory.mktemp("corpus-embedded")
    stores = {"sqlite": f"sqlite:///{root / 'mlflow.db'}", "file": (root / "mlruns").as_uri(),
              "file_path": str(root / "mlruns")}
    return stores, CorpusWriter([stores["sqlite"], stores["file"]], root / "work")


@pytest.fixture(scope="module")
def corpora(embedded_writer, mlflow_server, tmp_path_factory) -> dict[str, Any]:
    """The corpus on the server, in an embedded sqlite store and in a file store."""
    stores, embedded = embedded_writer
    stores = dict(stores, server=mlflow_server.url)
    on_server = CorpusWriter([mlflow_server.url], tmp_path_factory.mktemp("corpus-server"))
    facts = {**on_server.result(), **embedded.result()}
    return {"stores": stores, **{k: facts[v] for k, v in stores.items() if v in facts}}


@pytest.fixture(scope="module")
def server_corpus(corpora) -> dict[str, Any]:
    return corpora["server"]


def test_server_import_keeps_everything(mlflow_server, server_corpus, tmp_path: Path) -> None:
    done = import_runs(MlflowImporter(mlflow_server.url), tmp_path)
    assert sorted(r.source_id for r in done) == sorted(f["id"] for f in server_corpus.values())
    assert all(r.run_id == r.source_id for r in done)
    check_corpus(tmp_path, server_corpus)
    parent = next(r for r in done if r.source_id == server_corpus["parent"]["id"])
    assert parent.points == {"loss": 50, "acc": 4}


def test_server_experiments_and_filter(mlflow_server, server_corpus, tmp_path: Path) -> None:
    by_name = import_runs(MlflowImporter(mlflow_server.url, experiments=["exp-b"]), tmp_path / "a")
    assert [r.source_id for r in by_name] == [server_corpus["other"]["id"]]
    exp_id = server_corpus["killed"]["experiment"]
    by_id = MlflowImporter(mlflow_server.url, experiments=[exp_id],
                           filter="attributes.status = 'KILLED'")
    assert [r.source_id for r in by_id.runs()] == [server_corpus["killed"]["id"]]
    with pytest.raises(Exception, match="no experiment"):
        list(MlflowImporter(mlflow_server.url, experiments=["nope"]).runs())


def test_small_pages_read_every_point(mlflow_server, server_corpus, tmp_path: Path) -> None:
    """Metric histories are paginated: a page smaller than a series loses nothing."""
    import_runs(MlflowImporter(mlflow_server.url, experiments=["exp-a"], page_size=7), tmp_path)
    got = read_back(tmp_path, server_corpus["parent"]["id"])
    assert [p[0] for p in got["points"]["loss"]] == list(range(50))


class _FaultyImporter(MlflowImporter):
    """Raises in the middle of one run's stream (what the sink reads): an import killed
    half-way."""

    def __init__(self, *args: Any, fail_run: str, after: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.fail_run, self.after = fail_run, after

    def stream(self, run: SourceRun) -> Iterator[Any]:
        for n, ev in enumerate(super().stream(run)):
            if run.source_id == self.fail_run and n == self.after:
                raise RuntimeError("injected fault")
            yield ev


def test_interrupted_import_resumes_without_duplicates(mlflow_server, server_corpus,
                                                       tmp_path: Path) -> None:
    fail = server_corpus["child"]["id"]
    with pytest.raises(RuntimeError, match="injected fault"):
        import_runs(_FaultyImporter(mlflow_server.url, fail_run=fail, after=5), tmp_path)
    first = {r.run_id for r in list_runs(tmp_path)}
    assert server_corpus["parent"]["id"] in first and fail not in first
    assert not list((tmp_path / "spool").glob("*.partial"))
    again = import_runs(MlflowImporter(mlflow_server.url), tmp_path)
    assert {r.run_id for r in again if r.skipped} == first
    check_corpus(tmp_path, server_corpus)
    clean = tmp_path / "clean"
    import_runs(MlflowImporter(mlflow_server.url), clean)
    for fact in server_corpus.values():
        assert sorted(read_back(tmp_path, fact["id"])["all"]) == \
            sorted(read_back(clean, fact["id"])["all"])


# -- embedded stores -------------------------------------------------------------------------

def test_sqlite_store(corpora, tmp_path: Path) -> None:
    import_runs(MlflowImporter(corpora["stores"]["sqlite"]), tmp_path / "spool")
    check_corpus(tmp_path / "spool", corpora["sqlite"])


def test_sqlite_store_streams_the_spool_events_would(corpora, tmp_path: Path) -> None:
    """The sqlite store's points go to the sink as MetricPoints straight from the table's
    rows: the same spool, row for row, as one event a point (NaN points included)."""
    from same_spool import assert_same_spool

    by_stream, _ = assert_same_spool(lambda: MlflowImporter(corpora["stores"]["sqlite"]),
                                     tmp_path)
    assert sum(sum(r.points.values()) for r in by_stream) > 0


ONE_RUN = """
import math, sys
from mlflow import MlflowClient
from mlflow.entities import Metric
client = MlflowClient(sys.argv[1])
run = client.create_run(client.create_experiment("one"), run_name="alone")
rid = run.info.run_id
# ties on (timestamp, step) told apart by value, NaN and infinities among them
points = [Metric("loss", v, 1_700_000_000_000 + t, s) for t, s, v in [
    (5, 1, 0.5), (5, 1, -1.0), (5, 1, float("nan")), (0, 0, 2.0), (9, 3, float("inf")),
    (9, 2, float("-inf")), (7, 7, 1e300)]]
client.log_batch(rid, metrics=points)
client.log_batch(rid, metrics=[Metric("acc", i / 10, 1_700_000_000_000 + i, i) for i in range(50)])
client.set_terminated(rid)
print("@@" + rid)
"""


def _mlflow_history(uri: str, run_id: str, key: str) -> list[tuple]:
    from mlflow import MlflowClient

    return [(m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
            for m in MlflowClient(uri).get_metric_history(run_id, key)]


def test_a_one_run_sqlite_store_keeps_mlflow_s_order_and_values(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'one.db'}"
    proc = subprocess.run([sys.executable, "-c", ONE_RUN, uri], capture_output=True, text=True,
                          cwd=tmp_path, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1][2:]
    importer = MlflowImporter(uri)
    assert "INDEXED BY" not in importer._points_select(tmp_path / "one.db")  # one run
    (done,) = import_runs(importer, tmp_path / "spool")
    assert done.points == {"acc": 50, "loss": 7}
    for key in ("loss", "acc"):
        got = [(e.step, e.ts_ms, "nan" if e.value != e.value else e.value)
               for e in iter_events(find_run(tmp_path / "spool", run_id).files, run_id)
               if e.kind == "metric" and e.key == key]
        assert got == _mlflow_history(uri, run_id, key), key


def test_a_store_of_several_runs_is_read_run_by_run(corpora, tmp_path: Path) -> None:
    """Through the store's (run_uuid, key) index: the primary key's would read every run's
    points of a key for each run."""
    import sqlite3

    db = Path(corpora["stores"]["sqlite"].removeprefix("sqlite:///"))
    select = MlflowImporter(corpora["stores"]["sqlite"])._points_select(db)
    assert 'INDEXED BY "index_metrics_run_uuid_key_step"' in select
    with sqlite3.connect(":memory:") as conn:
        conn.execute("ATTACH DATABASE ? AS source", (str(db),))
        plan = " ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + select,
                                                          ("x", "loss")))
    assert "run_uuid=? AND key=?" in plan, plan


def test_file_store(corpora, tmp_path: Path) -> None:
    import_runs(MlflowImporter(corpora["stores"]["file"]), tmp_path / "spool-uri")
    check_corpus(tmp_path / "spool-uri", corpora["file"])
    import_runs(MlflowImporter(corpora["stores"]["file_path"]), tmp_path / "spool-path")
    check_corpus(tmp_path / "spool-path", corpora["file"])  # a bare path is a file store


# -- bridge → MLflow → bridge (what `bridge verify` relies on) -------------------------------

def test_round_trip_through_bridge_adapter(mlflow_server, tmp_path: Path) -> None:
    import bridge
    from bridge.agent.sync import Syncer

    spool = tmp_path / "spool"
    run = bridge.init(project="roundtrip", name="rt", notes="round trip", group="g1",
                      config={"lr": 0.1, "model": {"depth": 4, "act": "relu"}, "bs": 32},
                      tags={"team": "a"}, dir=spool, sync="offline",
                      backends=[{"name": "mlflow", "tracking_uri": mlflow_server.url}])
    logged = []
    for s in range(20):
        ts = T0 + 1000 * s
        value = float("nan") if s == 7 else 1.0 / (s + 1)
        run.log_metric("loss", value, step=s, timestamp=ts)
        logged.append([s, ts, _nan_safe(value)])
    run.summary["best"] = {"loss": 0.05, "epoch": 19}
    run.summary["name"] = "final"
    run.log_event("checkpoint", {"epoch": 3})
    run.finish()
    summary = Syncer(spool).run_once()
    assert summary.complete, summary
    original = read_back(spool, run.id)

    back = tmp_path / "back"
    imported = import_runs(MlflowImporter(mlflow_server.url, experiments=["roundtrip"]), back)
    assert len(imported) == 1
    got = read_back(back, imported[0].run_id)
    assert got["points"]["loss"] == logged
    assert got["params"] == {"lr": "0.1", "model.depth": "4", "model.act": "relu", "bs": "32"}
    assert got["summary"] == {"best": {"loss": 0.05, "epoch": 19}, "name": "final"}
    assert got["tags"]["bridge.run_id"] == run.id
    assert got["tags"]["team"] == "a"
    assert got["rec"].notes == "round trip" and got["rec"].group == "g1"
    assert got["rec"].name == "rt" and got["rec"].status == "FINISHED"
    assert got["rec"].start_ms == original["rec"].start_ms
    assert got["rec"].end_ms == original["rec"].end_ms
    assert [(e.key, e.ts_ms, e.payload) for e in got["events"]] == \
        [(e.key, e.ts_ms, e.payload) for e in original["events"]]
    system = [p for p in got["artifacts"]["bridge"] if p.startswith("system")]
    assert len(system) == 1  # bridge/system[/<node>].json is kept as a plain artifact
    assert json.loads(got["artifacts"]["bridge"][system[0]])["python"]


# -- a million points in bounded memory ------------------------------------------------------

LARGE_WRITER = textwrap.dedent(
    """
    import sys
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    uri, n = sys.argv[1], int(sys.argv[2])
    c = MlflowClient(uri)
    exp = c.create_experiment("large")
    rid = c.create_run(exp, run_name="big", start_time=1700000000000).info.run_id
    for lo in range(0, n, 1000):
        c.log_batch(rid, metrics=[Metric("loss", 1.0 / (i + 1), 1700000000000 + i, i)
                                  for i in range(lo, min(n, lo + 1000))])
    c.set_terminated(rid, "FINISHED")
    print(rid)
    """
)

LARGE_READER = textwrap.dedent(
    """
    import json, resource, sys
    from bridge.adapters.mlflow.importer import MlflowImporter
    from bridge.importers.sink import import_runs
    import mlflow  # loaded before the baseline: the SDK's own footprint is not the import's
    importer = MlflowImporter(sys.argv[1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done = import_runs(importer, sys.argv[2])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kb": before, "after_kb": after, "points": done[0].points}))
    """
)


@pytest.mark.skipif(os.environ.get("BRIDGE_TEST_LARGE") != "1",
                    reason="a million points take minutes; set BRIDGE_TEST_LARGE=1")
@pytest.mark.timeout(3600)
def test_million_points_bounded_memory(tmp_path: Path) -> None:
    n = 1_000_000
    uri = f"sqlite:///{tmp_path / 'large.db'}"
    (tmp_path / "w.py").write_text(LARGE_WRITER)
    (tmp_path / "r.py").write_text(LARGE_READER)
    w = subprocess.run([sys.executable, str(tmp_path / "w.py"), uri, str(n)], env=_env(),
                       capture_output=True, text=True, timeout=1800)
    assert w.returncode == 0, w.stderr[-3000:]
    started = time.monotonic()
    r = subprocess.run([sys.executable, str(tmp_path / "r.py"), uri, str(tmp_path / "spool")],
                       env=_env(), capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    assert r.returncode == 0, r.stderr[-3000:]
    facts = json.loads(r.stdout.strip().splitlines()[-1])
    assert facts["points"] == {"loss": n}
    growth_mb = (facts["after_kb"] - facts["before_kb"]) / 1024
    print(f"importing {n} points: {seconds:.1f} s, peak RSS {facts['before_kb'] / 1024:.0f}"
          f" -> {facts['after_kb'] / 1024:.0f} MB (growth {growth_mb:.1f} MB)")
    assert growth_mb < 300
    rec = find_run(tmp_path / "spool", w.stdout.strip().splitlines()[-1])
    steps = 0
    for ev in iter_events(rec.files, rec.run_id):
        if ev.kind == "metric":
            assert ev.ts_ms == T0 + ev.step
            steps += 1
    assert steps == n
