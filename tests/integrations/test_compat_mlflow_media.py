"""``bridge.compat.mlflow`` media: ``log_image``, ``log_table`` and ``log_figure(step=)``, as an
MLflow script calls them, recorded in the spool and read back from the embedded MLflow store
in the layout MLflow's own ``log_image``/``log_table`` write."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

import bridge.compat.mlflow as mlflow  # was: import mlflow
from bridge.spool import blobs
from bridge_readback import events, mlflow_run, sync_to_mlflow

real_mlflow = pytest.importorskip("mlflow")

STEP_IMAGE = re.compile(r"^images/(?P<key>[^+]+)\+step\+(?P<step>\d+)\+timestamp\+(?P<ts>\d+)"
                        r"\+[0-9a-f-]{36}\.png$")


@pytest.fixture(autouse=True)
def fresh_shim(spool):
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.configure()
    mlflow._experiment = None


def _media(spool, run_id):
    return [e for e in events(spool, run_id) if e.kind == "media"]


def _step_images(client, remote):
    out = {}
    for f in client.list_artifacts(remote, "images"):
        m = STEP_IMAGE.match(f.path)
        if m:
            out[(m["key"].replace("~", "/"), int(m["step"]))] = (int(m["ts"]), f.path)
    return out


def test_log_image_with_key_step_and_timestamp(spool, tmp_path):
    mlflow.set_experiment("compat-images")
    with mlflow.start_run() as active:
        for step in range(3):
            arr = np.full((10, 14, 3), step * 60, dtype=np.uint8)
            mlflow.log_image(arr, key="train/sample", step=step, timestamp=1_700_000_000_000 + step)
        from PIL import Image

        mlflow.log_image(Image.new("RGB", (5, 7), "red"), key="pil")  # step 0, now
        mlflow.log_image(np.zeros((4, 4), dtype=np.uint8), artifact_file="static/zero.png")
    run_id = active.info.run_id
    media = {(e.key, e.step): e for e in _media(spool, run_id)}
    assert set(media) == {("train/sample", 0), ("train/sample", 1), ("train/sample", 2), ("pil", 0)}
    assert media[("train/sample", 2)].ts_ms == 1_700_000_000_002
    client = sync_to_mlflow(spool)
    remote = mlflow_run(client, run_id)
    grid = _step_images(client, remote.info.run_id)
    assert set(grid) == set(media)
    for key, ev in media.items():
        ts, path = grid[key]
        assert ts == ev.ts_ms
        local = client.download_artifacts(remote.info.run_id, path, str(tmp_path / "dl"))
        data = open(local, "rb").read()
        assert data == blobs.blob_path(spool, ev.payload["items"][0]["sha256"]).read_bytes()
    assert remote.data.tags["mlflow.loggedImages"] == "True"
    files = [f.path for f in client.list_artifacts(remote.info.run_id, "static")]
    assert files == ["static/zero.png"]


def test_log_image_refuses_what_mlflow_refuses(spool):
    img = np.zeros((2, 2), dtype=np.uint8)
    with mlflow.start_run():
        with pytest.raises(TypeError):
            mlflow.log_image(img)
        with pytest.raises(TypeError):
            mlflow.log_image(img, artifact_file="a.png", step=1)
        with pytest.raises(ValueError):
            mlflow.log_image(img, key="bad:key")


def test_log_table_appends_like_mlflow_and_keeps_images(spool, tmp_path):
    import pandas as pd
    from PIL import Image

    mlflow.set_experiment("compat-tables")
    with mlflow.start_run() as active:
        mlflow.log_table({"q": ["a", "b"], "score": [0.1, 0.2]}, artifact_file="eval/qa.json")
        mlflow.log_table(pd.DataFrame({"q": ["c"], "score": [0.3]}), artifact_file="eval/qa.json")
        mlflow.log_table({"img": [Image.new("RGB", (4, 4), "blue")], "label": ["sky"]},
                         artifact_file="pics.json")
        with pytest.raises(ValueError):
            mlflow.log_table({"a": [1]}, artifact_file="bad.csv")
    run_id = active.info.run_id
    tables = [e for e in _media(spool, run_id) if e.payload["type"] == "table"]
    assert [e.key for e in tables] == ["eval/qa.json", "eval/qa.json", "pics.json"]
    assert tables[1].payload["data"]["rows"] == [["a", 0.1], ["b", 0.2], ["c", 0.3]]
    client = sync_to_mlflow(spool)
    remote = mlflow_run(client, run_id)
    rid = remote.info.run_id
    listed = json.loads(remote.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "eval/qa.json", "type": "table"} in listed
    assert {"path": "pics.json", "type": "table"} in listed
    qa = json.loads(open(client.download_artifacts(rid, "eval/qa.json", str(tmp_path / "a"))).read())
    assert qa == {"columns": ["q", "score"], "data": [["a", 0.1], ["b", 0.2], ["c", 0.3]]}
    pics = json.loads(open(client.download_artifacts(rid, "pics.json", str(tmp_path / "b"))).read())
    cell = pics["data"][0][0]
    assert cell["type"] == "image" and cell["filepath"].startswith("table_images/pics/")
    png = open(client.download_artifacts(rid, cell["filepath"], str(tmp_path / "c")), "rb").read()
    assert Image.open(io.BytesIO(png)).size == (4, 4)


def test_log_figure_keeps_its_step(spool, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mlflow.set_experiment("compat-figures")
    with mlflow.start_run() as active:
        for epoch in range(2):
            fig, ax = plt.subplots(figsize=(2, 2))
            ax.plot([0, 1], [epoch, 1 - epoch])
            mlflow.log_figure(fig, "plots/curve.png", step=epoch)
            plt.close(fig)
        fig, ax = plt.subplots(figsize=(2, 2))
        mlflow.log_figure(fig, "plots/static.png")
        plt.close(fig)
    run_id = active.info.run_id
    media = sorted((e.key, e.step) for e in _media(spool, run_id))
    assert media == [("plots/curve", 0), ("plots/curve", 1)]
    client = sync_to_mlflow(spool)
    rid = mlflow_run(client, run_id).info.run_id
    assert set(_step_images(client, rid)) == {("plots/curve", 0), ("plots/curve", 1)}
    assert [f.path for f in client.list_artifacts(rid, "plots")] == ["plots/static.png"]
