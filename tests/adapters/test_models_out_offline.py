"""MLflow 3 logged models and dataset inputs, recorded by the real MLflow tracking-store
plugin (``MLFLOW_TRACKING_URI=bridge:///<spool>``), synced by the agent to W&B, Neptune and
Comet offline, and read back from each vendor's own offline files: the model's files byte
for byte (sha256), its metadata, the datasets' fields, no dead letter; then a replay after
a sync that lost its cursor and state adds no second copy."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("sklearn")
pytest.importorskip("pandas")

sys.path.insert(0, str(Path(__file__).parent))

from bridge.agent.state import StateStore  # noqa: E402
from bridge.agent.sync import Syncer  # noqa: E402
from bridge.spool.reader import iter_events, list_runs  # noqa: E402

S3_URI = "s3://bridge-test/taxi/eval.parquet"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One spool written by MLflow's own API through the bridge plugin."""
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.linear_model import Ridge

    root = tmp_path_factory.mktemp("seeded")
    spool = root / "spool"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("COMET_DISABLE_AUTO_LOGGING", "1")
        mp.setenv("BRIDGE_CONFIG", str(root / "none.toml"))
        mp.delenv("BRIDGE_BACKENDS", raising=False)
        mlflow.set_tracking_uri(f"bridge://{spool}")
        try:
            mlflow.set_experiment("taxi")
            df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [2.0, 4.0, 6.0]})
            with mlflow.start_run(run_name="train"):
                mlflow.log_param("alpha", 0.5)
                mlflow.log_input(mlflow.data.from_pandas(df, name="taxi-train"),
                                 context="training")
                mlflow.log_input(mlflow.data.from_pandas(df.head(2), source=S3_URI,
                                                         name="taxi-eval"), context="eval")
                model = Ridge(alpha=0.5).fit(df[["x"]], df["y"])
                info = mlflow.sklearn.log_model(model, name="ridge", params={"alpha": "0.5"},
                                                tags={"team": "a"})
                mlflow.log_metric("mse", 0.1, model_id=info.model_id)
                mlflow.set_logged_model_tags(info.model_id, {"stage": "candidate"})
                MlflowClient().delete_logged_model_tag(info.model_id, "team")
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)
            mlflow.tracking.fluent._active_experiment_id = None
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    return spool


@pytest.fixture
def spool(seeded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the seeded spool per test, synced from a clean working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMET_DISABLE_AUTO_LOGGING", "1")
    monkeypatch.setenv("COMET_API_KEY", "dummy")
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.setenv("BRIDGE_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("BRIDGE_BACKENDS", raising=False)
    dest = tmp_path / "spool"
    shutil.copytree(seeded, dest)
    return dest


def _recorded(spool: Path) -> dict[str, Any]:
    """What the plugin recorded: the run, its model's records and its datasets."""
    [rec] = list_runs(spool)
    events = list(iter_events(rec.files, rec.run_id))
    models = [e for e in events if e.kind == "model"]
    [create] = [e.payload for e in models if e.payload["op"] == "create"]
    files = {f["path"]: f["sha256"] for e in models if e.payload["op"] == "files"
             for f in e.payload["files"]}
    assert {"MLmodel", "model.skops", "requirements.txt"} <= set(files)
    for sha in files.values():  # the spool holds the bytes MLflow wrote
        assert _sha((spool / "blobs" / sha[:2] / sha).read_bytes()) == sha
    datasets = {e.key: e.payload for e in events if e.kind == "dataset"}
    assert set(datasets) == {"taxi-train", "taxi-eval"}
    return {"run": rec, "model_id": models[0].key, "create": create, "files": files,
            "datasets": datasets}


def _sync(spool: Path, backend: str, options: dict[str, Any]) -> None:
    summary = Syncer(spool, backends=[backend], backend_options={backend: options}).run_once()
    [result] = summary.results
    store = StateStore(spool)
    try:
        dead = store.dead_letters(backend)
    finally:
        store.close()
    assert summary.complete and result.pending == 0, summary
    assert dead == [], [d.reason for d in dead]


def _lose_state(spool: Path) -> None:
    """A sync killed after the vendor's files were written and before the agent saved its
    cursor and the adapter's state: the next sync replays everything."""
    for p in spool.glob("state.db*"):
        p.unlink()


# -- W&B --------------------------------------------------------------------------------


def test_wandb_model_and_dataset_artifacts(spool: Path, tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    from wandb_readback import read_back

    rec = _recorded(spool)
    run_id = rec["run"].run_id
    out = tmp_path / "wandb-out"
    _sync(spool, "wandb", {"mode": "offline", "dir": str(out)})
    back = read_back(out, run_id)
    arts = {(a["type"], a["name"]): a for a in back.artifacts}

    model = arts[("model", "ridge")]
    meta = model["metadata"]
    assert meta["bridge_model_id"] == rec["model_id"]
    assert meta["mlflow_model_name"] == "ridge" and meta["params"] == {"alpha": "0.5"}
    assert meta["tags"]["team"] == "a"  # the tags when the files were logged
    by_path = {f["path"]: f for f in model["files"]}
    assert set(by_path) == set(rec["files"])
    for path, sha in rec["files"].items():  # the copies `wandb sync` uploads, byte for byte
        assert _sha(Path(by_path[path]["local_path"]).read_bytes()) == sha

    for name, d in rec["datasets"].items():
        art = arts[("dataset", name)]
        m = art["metadata"]
        assert m["bridge_used_as"] == "input" and m["mlflow_dataset_name"] == name
        for key in ("digest", "source_type", "source", "schema", "profile", "tags"):
            assert m[key] == d[key], (name, key)
        files = {f["path"]: f for f in art["files"]}
        described = json.loads(Path(files["dataset.json"]["local_path"]).read_bytes())
        assert described == {k: d[k] for k in ("name", "digest", "source_type", "source",
                                                  "schema", "profile", "tags")}
        refs = [f for p, f in files.items() if p != "dataset.json"]
        if name == "taxi-eval":  # an s3:// source: a reference W&B records without reading
            assert [(r["path"], r["digest"]) for r in refs] == [("source/eval.parquet", S3_URI)]
        else:  # built in code: no URI to reference
            assert refs == []
    assert arts[("dataset", "taxi-train")]["metadata"]["tags"] == {
        "mlflow.data.context": "training"}

    # a replay: the same artifacts again, with the same digests (one W&B version each)
    first = {k: a["digest"] for k, a in arts.items()}
    _lose_state(spool)
    _sync(spool, "wandb", {"mode": "offline", "dir": str(out)})
    again = read_back(out, run_id)
    assert len(again.artifacts) == 2 * len(back.artifacts)
    for a in again.artifacts:
        assert first[(a["type"], a["name"])] == a["digest"]


def test_wandb_refuses_use_artifact_offline_so_datasets_are_logged() -> None:
    """Why the dataset artifact is an output: the offline SDK has no run inputs."""
    wandb = pytest.importorskip("wandb")
    import inspect

    assert "Cannot use artifact when in offline mode" in inspect.getsource(wandb.Run.use_artifact)


# -- Neptune ----------------------------------------------------------------------------


def test_neptune_model_and_dataset_fields(spool: Path, tmp_path: Path) -> None:
    pytest.importorskip("neptune")
    import neptune_readback as nrb

    rec = _recorded(spool)
    run_id = rec["run"].run_id
    data_dir = tmp_path / "neptune-out"
    _sync(spool, "neptune", {"mode": "offline", "data_dir": str(data_dir)})
    [nrun] = nrb.runs_for(data_dir / ".neptune", run_id)
    f = nrun.fields
    assert f["models/ridge/id"] == rec["model_id"]
    assert f["models/ridge/status"] == "READY"  # the status event after the files
    assert f["models/ridge/experiment"] == "taxi"
    assert f["models/ridge/output_step"] == 0
    assert "models/ridge/type" not in f  # MLflow recorded no model type
    assert nrun.namespace("models/ridge/params") == {"alpha": "0.5"}
    tags = nrun.namespace("models/ridge/tags")
    assert tags["stage"] == "candidate" and "team" not in tags  # set, then deleted
    assert {k: v for k, v in tags.items() if k != "stage"} == {
        k: v for k, v in rec["create"]["tags"].items() if k != "team"}
    uploaded = {k[len("models/ridge/files/"):]: v for k, v in nrun.files.items()
                if k.startswith("models/ridge/files/")}
    assert set(uploaded) == set(rec["files"])
    for path, sha in rec["files"].items():
        assert _sha(uploaded[path]) == sha, path
    assert nrun.file_ext["models/ridge/files/MLmodel"] == ""
    assert nrun.file_ext["models/ridge/files/model.skops"] == "skops"

    for name, d in rec["datasets"].items():
        ns = nrun.namespace(f"datasets/{name}")
        assert ns["name"] == name
        for key in ("digest", "source_type", "source", "schema", "profile"):
            assert ns[key] == d[key], (name, key)
        assert ns["tags"] == d["tags"]
    assert nrun.namespace("datasets/taxi-eval")["tags"] == {"mlflow.data.context": "eval"}

    # a replay: a second offline directory, without a second upload or value
    _lose_state(spool)
    _sync(spool, "neptune", {"mode": "offline", "data_dir": str(data_dir)})
    runs = nrb.runs_for(data_dir / ".neptune", run_id)
    assert len(runs) == 2
    replayed = runs[1]
    assert not [k for k in replayed.files if k.startswith(("models/", "datasets/"))]
    assert not [k for k in replayed.fields if k.startswith(("models/", "datasets/"))]


# -- Comet ------------------------------------------------------------------------------


def test_comet_model_and_dataset(spool: Path, tmp_path: Path) -> None:
    pytest.importorskip("comet_ml")
    import comet_readback as crb

    rec = _recorded(spool)
    run_id = rec["run"].run_id
    out = tmp_path / "comet-out"
    _sync(spool, "comet", {"mode": "offline", "offline_directory": str(out)})
    arch = crb.merged(crb.read_archives(out, run_id))
    elements = [a for a in arch.assets if a.upload_type == "model-element"]
    assert {a.grouping for a in elements} == {"ridge"}
    by_name = {a.file_name: a for a in elements}
    assert set(by_name) == set(rec["files"])
    for path, sha in rec["files"].items():
        asset = by_name[path]
        assert _sha(asset.data) == sha and asset.metadata["sha256"] == sha
        assert asset.metadata["mlflow_model_id"] == rec["model_id"]
        assert json.loads(asset.metadata["params"]) == {"alpha": "0.5"}

    record = json.loads(arch.others["mlflow_model.ridge"])  # the latest state of the model
    assert record["mlflow_model_id"] == rec["model_id"] and record["status"] == "READY"
    assert record["params"] == {"alpha": "0.5"}
    assert record["tags"]["stage"] == "candidate" and "team" not in record["tags"]

    for name, d in rec["datasets"].items():
        got = json.loads(arch.others[f"mlflow_dataset.{name}"])
        assert got == {k: d[k] for k in ("name", "digest", "source_type", "source", "schema",
                                         "profile", "tags")}
    # Comet keeps one dataset info per experiment: the last dataset's
    eval_digest = rec["datasets"]["taxi-eval"]["digest"]
    assert arch.others["dataset_info"] == f"taxi-eval-{eval_digest}, {S3_URI}"

    # a replay: the ledger of the archives already written skips every event
    uploads = sum(1 for t in arch.types if t == "file_upload")
    _lose_state(spool)
    _sync(spool, "comet", {"mode": "offline", "offline_directory": str(out)})
    again = crb.merged(crb.read_archives(out, run_id))
    assert sum(1 for t in again.types if t == "file_upload") == uploads
    assert [a for a in again.assets if a.upload_type == "model-element"] == elements
