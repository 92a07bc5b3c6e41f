"""MLflow step images and ``log_table`` tables imported as media events.

The corpus is written by MLflow itself (``MlflowClient.log_image(key=, step=, timestamp=)``,
``log_table`` with an image column, an embedded sqlite store in a temporary directory), plus
hand-made files in the file-name dialects older MLflow versions wrote (``%`` separators, ``#``
or ``~`` for ``/`` in the key). Every image must arrive at its key, step and timestamp with
MLflow's PNG bytes, no thumbnail may arrive at all, and the table must keep its images.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")

from bridge.adapters.mlflow.importer import MlflowImporter  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.spool import blobs  # noqa: E402
from bridge.spool.reader import iter_events, list_runs  # noqa: E402

T0 = 1_700_000_000_000


def _png(seed: int, size: tuple[int, int] = (12, 16)) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[str, str, dict[str, Any]]:
    """An MLflow run written by MLflow's own client; returns (uri, run id, what was logged)."""
    import pandas as pd
    from PIL import Image

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("media", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp, start_time=T0)
    rid = run.info.run_id
    logged: dict[str, Any] = {"images": [], "old": []}
    for step in range(3):
        arr = np.random.default_rng(step).integers(0, 256, (20, 30, 3), dtype=np.uint8)
        client.log_image(rid, arr, key="train/samples", step=step, timestamp=T0 + step)
        logged["images"].append(("train/samples", step, T0 + step))
    client.log_image(rid, Image.new("RGB", (8, 8), "red"), key="plain", step=9, timestamp=T0 + 9)
    logged["images"].append(("plain", 9, T0 + 9))
    # Older dialects, as MLflow 2.x wrote them ('%' separators, '#' for '/'), and '~' with '%'.
    old = tmp_path / "old" / "images"
    old.mkdir(parents=True)
    for name, key, step, ts, seed in [
        ("val#pics%step%4%timestamp%{ts}%0a1b2c3d-aaaa-bbbb-cccc-000000000001", "val/pics", 4, T0 + 40, 1),
        ("val~pics%step%5%timestamp%{ts}%0a1b2c3d-aaaa-bbbb-cccc-000000000002", "val/pics", 5, T0 + 50, 2),
        ("flat+step+6+timestamp+{ts}+0a1b2c3d-aaaa-bbbb-cccc-000000000003", "flat", 6, T0 + 60, 3),
    ]:
        stem = name.format(ts=ts)
        data = _png(100 + seed)
        (old / f"{stem}.png").write_bytes(data)
        sep = "+" if "+step+" in stem else "%"
        (old / f"{stem}{sep}compressed.webp").write_bytes(b"RIFFthumb")
        logged["old"].append((key, step, ts, data))
    client.log_artifacts(rid, str(old), "images")
    # log_table, with an image column, appended to once (MLflow reads and extends the file)
    df = pd.DataFrame({"prompt": ["a cat", "a dog"],
                       "picture": [Image.new("RGB", (6, 4), "blue"), Image.new("RGB", (5, 5), "green")]})
    client.log_table(rid, data=df, artifact_file="eval/results.json")
    client.log_table(rid, data={"prompt": ["a fox"], "score": [0.5]}, artifact_file="scores.json")
    client.log_text(rid, "keep me", "notes/readme.txt")
    client.set_terminated(rid, end_time=T0 + 1000)
    return uri, rid, logged


def _import(uri: str, tmp_path: Path) -> tuple[Path, str, MlflowImporter]:
    imp = MlflowImporter(uri, experiments=["media"])
    spool = tmp_path / "spool"
    [res] = import_runs(imp, spool)
    return spool, res.run_id, imp


def _events(spool: Path, run_id: str) -> list[Any]:
    rec = [r for r in list_runs(spool) if r.run_id == run_id][0]
    return list(iter_events(rec.files, run_id))


def test_step_images_in_every_dialect(corpus: tuple[str, str, dict], tmp_path: Path) -> None:
    uri, rid, logged = corpus
    spool, run_id, imp = _import(uri, tmp_path)
    evs = _events(spool, run_id)
    images = {(e.key, e.step): e for e in evs if e.kind == "media" and e.payload["type"] == "image"}
    client = mlflow.MlflowClient(uri)
    written = [f.path for f in client.list_artifacts(rid, "images")]
    for key, step, ts in logged["images"]:
        ev = images[(key, step)]
        assert ev.ts_ms == ts
        [item] = ev.payload["items"]
        [path] = [p for p in written if f"+step+{step}+timestamp+{ts}+" in p and p.endswith(".png")]
        original = Path(client.download_artifacts(rid, path, str(tmp_path / "dl"))).read_bytes()
        assert blobs.blob_path(spool, item["sha256"]).read_bytes() == original
        assert item["mime"] == "image/png"
    for key, step, ts, data in logged["old"]:
        ev = images[(key, step)]
        assert ev.ts_ms == ts
        [item] = ev.payload["items"]
        assert blobs.blob_path(spool, item["sha256"]).read_bytes() == data
    assert len(images) == len(logged["images"]) + len(logged["old"])
    # thumbnails are MLflow's copies: neither media nor artifacts
    artifacts = [e for e in evs if e.kind == "artifact"]
    names = [f["path"] for e in artifacts for f in e.payload["files"]]
    assert not any("compressed" in n for n in names)
    assert {e.key for e in artifacts} == {"notes"}
    assert imp.warnings == []


def test_log_table_becomes_a_table_with_its_images(corpus: tuple[str, str, dict],
                                                   tmp_path: Path) -> None:
    uri, rid, _ = corpus
    spool, run_id, _ = _import(uri, tmp_path)
    tables = {e.key: e for e in _events(spool, run_id)
              if e.kind == "media" and e.payload["type"] == "table"}
    assert set(tables) == {"eval/results.json", "scores.json"}
    ev = tables["eval/results.json"]
    assert ev.payload["source"] == {"vendor": "mlflow",
                                    "descriptor": {"artifact_file": "eval/results.json"}}
    data = ev.payload["data"]
    assert data["columns"] == ["prompt", "picture"]
    assert [r[0] for r in data["rows"]] == ["a cat", "a dog"]
    client = mlflow.MlflowClient(uri)
    table = json.loads(Path(client.download_artifacts(rid, "eval/results.json",
                                                      str(tmp_path / "t"))).read_text())
    from PIL import Image

    for row, raw in zip(data["rows"], table["data"]):
        [item] = row[1]["media"]["items"]
        got = blobs.blob_path(spool, item["sha256"]).read_bytes()
        want = Path(client.download_artifacts(rid, raw[1]["filepath"], str(tmp_path / "t")))
        assert got == want.read_bytes()
        assert Image.open(io.BytesIO(got)).format == "PNG"
    assert tables["scores.json"].payload["data"]["rows"] == [["a fox", 0.5]]


def test_round_trip_back_to_mlflow_keeps_the_layout(corpus: tuple[str, str, dict],
                                                     tmp_path: Path) -> None:
    """MLflow -> bridge -> MLflow: the step images land in log_image's layout again (same
    keys, steps, timestamps, bytes) and the table at the same artifact_file."""
    from bridge.agent.sync import Syncer
    from bridge.config import AgentSettings

    uri, rid, logged = corpus
    target = tmp_path / "target"
    imp = MlflowImporter(uri, experiments=["media"])
    spool2 = tmp_path / "spool2"
    import_runs(imp, spool2, backends=[{"name": "mlflow", "tracking_uri":
                                        f"sqlite:///{target / 'mlflow.db'}"}])
    target.mkdir(exist_ok=True)
    assert Syncer(spool2, settings=AgentSettings(retry_attempts=2)).run_once().complete
    client = mlflow.MlflowClient(f"sqlite:///{target / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("media").experiment_id])
    paths = [f.path for f in client.list_artifacts(run.info.run_id, "images")]
    from bridge.adapters.mlflow.names import parse_step_image

    got = {(p.key, p.step, p.timestamp) for p in map(parse_step_image, paths) if not p.compressed}
    want = {(k, s, t) for k, s, t in logged["images"]} | {(k, s, t) for k, s, t, _ in logged["old"]}
    assert got == want
    assert run.data.tags["mlflow.loggedImages"] == "True"
    listed = json.loads(run.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "eval/results.json", "type": "table"} in listed


@pytest.mark.parametrize("path, want", [
    ("images/a~b+step+3+timestamp+17+0a1b-2c.png", ("a/b", 3, 17, "0a1b-2c", False, "png")),
    ("images/a~b+step+3+timestamp+17+0a1b-2c+compressed.webp", ("a/b", 3, 17, "0a1b-2c", True, "webp")),
    ("images/a#b%step%0%timestamp%5%u-1%compressed.webp", ("a/b", 0, 5, "u-1", True, "webp")),
    ("images/k k%step%12%timestamp%99%u.png", ("k k", 12, 99, "u", False, "png")),
    ("images/plain.png", None),
    ("images/sub/a+step+1+timestamp+2+u.png", None),
    ("other/a+step+1+timestamp+2+u.png", None),
])
def test_every_step_image_dialect_parses(path: str, want: tuple | None) -> None:
    from bridge.adapters.mlflow.names import parse_step_image

    got = parse_step_image(path)
    assert (None if got is None else (got.key, got.step, got.timestamp, got.uuid,
                                      got.compressed, got.extension)) == want


def test_written_names_read_back_and_stay_inside_the_run() -> None:
    from bridge.adapters.mlflow import media, names

    for key in ("train/samples", "a+b", "x:y~z", "../up", "a//b", "ünï", " "):
        path = names.step_image_file(key, 4, 123, names.media_uuid(key))
        parsed = names.parse_step_image(path)
        assert parsed is not None and (parsed.step, parsed.timestamp) == (4, 123)
        assert re.fullmatch(r"[A-Za-z0-9_\-./ ]+", parsed.key), parsed.key  # log_image's keys
        for p in (path, names.media_file(key, 4, "audio", 123, 0, ".wav"),
                  names.table_file(key, 4)):
            assert not p.startswith("/") and ".." not in p.split("/") and "//" not in p
        assert names.parse_media_descriptor(names.media_file(key, 4, "audio", 123)) == (
            4, "audio", 123)
    assert names.step_image_file("a/b", 1, 2, "u") == "images/a~b+step+1+timestamp+2+u.png"
    mlflow_src = {"source": {"vendor": "mlflow", "descriptor": {"artifact_file": "e/t.parquet"}}}
    assert media.table_path("t", 3, mlflow_src) == "e/t.json"
    assert media.table_path("t", 3, {}) == "tables/t/step_3.json"
    evil = {"source": {"vendor": "mlflow", "descriptor": {"artifact_file": "../t.json"}}}
    assert media.table_path("t", None, evil) == "tables/t/step_0.json"
