"""TensorBoard media written by ``torch.utils.tensorboard.SummaryWriter`` import whole.

``add_image``, ``add_images``, ``add_histogram``, ``add_audio``, ``add_text`` and
``add_pr_curve`` write a log directory; TensorBoard's ``EventAccumulator`` reads it back,
and the imported media events must hold the same encoded bytes, histogram counts, text and
curve values at the same steps and wall times. The same calls through
``bridge.SummaryWriter`` record what the import of torch's file holds (``add_embedding``
included). tensorboardX, the writer torch's was taken
from, writes the same records and runs the same test where it is installed; each writer is
skipped, with the reason, where its package is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from bridge.adapters.tensorboard.importer import TensorboardImporter  # noqa: E402
from bridge.importers.sink import import_runs  # noqa: E402
from bridge.spool.blobs import blob_path  # noqa: E402
from bridge.spool.reader import find_run, iter_events  # noqa: E402

W0 = 1_700_000_000.0
WRITERS = ["torch.utils.tensorboard"]


def _ms(t: float) -> int:
    return int(round(t * 1000))


def _write(module: str, run_dir: Path) -> dict[str, Any]:
    tb = pytest.importorskip(module, reason=f"{module} is not installed")
    rng = np.random.default_rng(11)
    w = tb.SummaryWriter(str(run_dir))
    made: dict[str, Any] = {"hist": {}}
    for s in range(3):
        w.add_image("input", rng.integers(0, 256, (3, 16, 20), dtype=np.uint8), s,
                    walltime=W0 + s)  # CHW, torch's default dataformats
        w.add_image("hwc", rng.random((9, 7, 3)), s, walltime=W0 + s, dataformats="HWC")
        w.add_images("batch", rng.random((4, 3, 8, 8)), s, walltime=W0 + s + 0.5)  # NCHW
        values = rng.normal(size=1000) * (s + 1)
        made["hist"][s] = values
        w.add_histogram("weights", values, s, walltime=W0 + s + 0.25, bins="auto")
        w.add_histogram("default_bins", values, s, walltime=W0 + s + 0.25)  # "tensorflow"
        w.add_audio("tone", np.sin(np.arange(800) / (s + 2.0)) * 0.5, s, sample_rate=8000,
                    walltime=W0 + s + 0.75)
        w.add_text("notes", f"step **{s}**", s, walltime=W0 + s + 0.125)
        labels = rng.integers(0, 2, 100)
        w.add_pr_curve("pr", labels, np.clip(labels * 0.4 + rng.random(100) * 0.6, 0, 1), s,
                       walltime=W0 + s + 0.375, num_thresholds=31)
        w.add_scalar("loss", 1.0 / (s + 1), s, walltime=W0 + s)
    w.close()
    return made


def _accumulator(run_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={
        "images": 0, "audio": 0, "histograms": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize("module", WRITERS)
def test_summary_writer_media_import(module: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "logs" / "train"
    made = _write(module, run_dir)
    spool = tmp_path / "spool"
    done = import_runs(TensorboardImporter(tmp_path / "logs"), spool)
    assert [r.name for r in done] == ["train"]
    rec = find_run(spool, done[0].run_id)
    media: dict[str, dict[int, Any]] = {}
    tags: dict[str, str] = {}
    for ev in iter_events(rec.files, done[0].run_id):
        if ev.kind == "media":
            media.setdefault(ev.key, {})[ev.step] = ev
        elif ev.kind == "tag":
            tags[ev.key] = ev.payload
    acc = _accumulator(run_dir)

    def blob(item: dict) -> bytes:
        return blob_path(spool, item["sha256"]).read_bytes()

    for tag, shape in (("input", (20, 16)), ("hwc", (7, 9)), ("batch", None)):
        assert sorted(media[tag]) == [0, 1, 2]
        for seen in acc.Images(tag):  # the bytes TensorBoard shows, at the same step
            ev = media[tag][seen.step]
            item = ev.payload["items"][0]
            assert ev.payload["type"] == "image" and ev.ts_ms == _ms(seen.wall_time)
            assert blob(item) == seen.encoded_image_string
            assert (item["width"], item["height"]) == (seen.width, seen.height)
            if shape:
                assert (item["width"], item["height"]) == shape

    for tag in ("weights", "default_bins"):
        for seen in acc.Histograms(tag):
            ev = media[tag][seen.step]
            data = ev.payload["data"]
            assert ev.payload["type"] == "histogram" and ev.ts_ms == _ms(seen.wall_time)
            assert sum(data["counts"]) == 1000 == seen.histogram_value.num
            assert len(data["edges"]) == len(data["counts"]) + 1
            assert data["edges"] == sorted(data["edges"])
            values = made["hist"][seen.step]
            assert data["edges"][0] <= values.min() and data["edges"][-1] >= values.max()
    for s, values in made["hist"].items():
        counts, edges = np.histogram(values, bins="auto")
        assert media["weights"][s].payload["data"] == {
            "edges": edges.tolist(), "counts": counts.astype(float).tolist()}

    for seen in acc.Audio("tone"):
        item = media["tone"][seen.step].payload["items"][0]
        assert blob(item) == seen.encoded_audio_string
        assert (item["mime"], item["sample_rate"], item["duration"]) == ("audio/wav", 8000, 0.1)

    assert {s: (ev.payload["type"], ev.payload["data"]["text"], ev.ts_ms)
            for s, ev in media["notes"].items()} == {
        s: ("text", f"step **{s}**", _ms(W0 + s + 0.125)) for s in range(3)}

    from tensorboard.util import tensor_util

    for seen in acc.Tensors("pr"):
        table = tensor_util.make_ndarray(seen.tensor_proto)
        ev = media["pr"][seen.step]
        assert ev.payload["type"] == "curve" and ev.ts_ms == _ms(seen.wall_time)
        assert ev.payload["data"]["x"] == table[5].astype(float).tolist()
        assert ev.payload["data"]["y"] == table[4].astype(float).tolist()
        assert ev.payload["source"]["descriptor"]["num_thresholds"] == 31
    assert "tensorboard.skipped" not in tags  # nothing written here was left out


def test_bridge_writer_matches_torch_writer(tmp_path: Path) -> None:
    """The same calls with torch tensors, through torch's writer (then imported) and through
    ``bridge.SummaryWriter``: equal pixels, histogram bins, PR curve, audio and text."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    tb = pytest.importorskip("torch.utils.tensorboard")
    import io
    import wave

    from PIL import Image

    from bridge.summary_writer import SummaryWriter as BridgeWriter

    g = torch.Generator().manual_seed(5)
    image = torch.rand(3, 6, 9, generator=g)
    values = torch.randn(1000, generator=g)
    labels = torch.randint(0, 2, (200,), generator=g)
    predictions = torch.rand(200, generator=g)
    tone = torch.sin(torch.arange(800) / 7.0) * 0.5
    calls = [
        ("add_image", ("img", image, 2), {}),
        ("add_histogram", ("w", values, 2), {}),  # bins="tensorflow"
        ("add_pr_curve", ("pr", labels, predictions, 2), {"num_thresholds": 25}),
        ("add_audio", ("tone", tone, 2), {"sample_rate": 8000}),
        ("add_text", ("notes", "some *text*", 2), {}),
    ]
    theirs = tb.SummaryWriter(str(tmp_path / "logs" / "run"))
    ours = BridgeWriter("run", dir=tmp_path / "ours", sync="offline")
    for name, args, kwargs in calls:
        getattr(theirs, name)(*args, walltime=W0 + 2, **kwargs)
        getattr(ours, name)(*args, walltime=W0 + 2, **kwargs)
    mat, label_img = torch.rand(4, 3, generator=g), torch.rand(4, 3, 5, 5, generator=g)
    for writer in (theirs, ours):  # projector files, no walltime
        writer.add_embedding(mat, metadata=["w", "x", "y", "z"], label_img=label_img,
                             global_step=2, tag="feats")
    theirs.close()
    ours.close()
    assert ours.run.warnings == 0

    def read(spool: Path, run_id: str) -> dict[str, Any]:
        rec = find_run(spool, run_id)
        return {e.key: e for e in iter_events(rec.files, run_id) if e.kind == "media"}

    (done,) = import_runs(TensorboardImporter(tmp_path / "logs"), tmp_path / "imported")
    a = read(tmp_path / "imported", done.run_id)
    b = read(tmp_path / "ours", ours.run.id)
    tables = [a["embeddings/feats"].payload["data"], b["embeddings/feats"].payload["data"]]
    assert tables[0]["columns"] == tables[1]["columns"] == [
        "label", "dim_0", "dim_1", "dim_2", "image"]
    assert [r[:4] for r in tables[0]["rows"]] == [r[:4] for r in tables[1]["rows"]]
    for row_a, row_b in zip(*(t["rows"] for t in tables)):
        tiles = [np.asarray(Image.open(blob_path(s, r[4]["media"]["items"][0]["sha256"])))
                 for s, r in ((tmp_path / "imported", row_a), (tmp_path / "ours", row_b))]
        assert np.array_equal(tiles[0], tiles[1])
    emb = "embeddings/feats"  # the projector files have no wall time: only the step
    assert (a.pop(emb).step, b[emb].step) == (2, 2)
    assert {k: (e.step, e.ts_ms, e.payload["type"]) for k, e in a.items()} == {
        k: (e.step, e.ts_ms, e.payload["type"]) for k, e in b.items() if k != emb}

    def blob(spool: Path, event: Any) -> bytes:
        return blob_path(spool, event.payload["items"][0]["sha256"]).read_bytes()

    pixels = [np.asarray(Image.open(io.BytesIO(blob(s, e["img"]))))
              for s, e in ((tmp_path / "imported", a), (tmp_path / "ours", b))]
    assert np.array_equal(pixels[0], pixels[1])
    assert a["w"].payload["data"] == b["w"].payload["data"]
    for axis in ("x", "y"):
        np.testing.assert_allclose(a["pr"].payload["data"][axis], b["pr"].payload["data"][axis],
                                   rtol=1e-6, atol=1e-7)  # torch stores float32
    frames = []
    for s, e in ((tmp_path / "imported", a), (tmp_path / "ours", b)):
        with wave.open(io.BytesIO(blob(s, e["tone"]))) as wav:
            frames.append((wav.getframerate(), wav.readframes(wav.getnframes())))
    assert frames[0] == frames[1]
    assert a["notes"].payload["data"] == b["notes"].payload["data"] == {"text": "some *text*"}


def test_torch_event_files_migrate_to_mlflow_and_wandb(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Images and histograms torch wrote arrive in MLflow (its image layout, read back with
    ``MlflowClient``) and W&B offline with identical bytes at the same steps."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from bridge.agent.sync import Syncer
    from bridge.verify import verify_run

    for k, v in {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
                 "MLFLOW_ENABLE_ASYNC_LOGGING": "false", "HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "logs" / "train"
    _write("torch.utils.tensorboard", run_dir)
    spool = tmp_path / "spool"
    backends = [{"name": "mlflow"},
                {"name": "wandb", "mode": "offline", "dir": str(tmp_path / "wandb")}]
    (done,) = import_runs(TensorboardImporter(tmp_path / "logs", project="tb"), spool,
                          backends=backends)
    summary = Syncer(spool).run_once()
    for result in summary.results:
        assert result.error is None and result.pending == 0 and result.dead == 0, result
    for dest in ("mlflow", "wandb"):
        rep = verify_run(spool, done.run_id, dest)
        assert rep.found, rep.notes
        for field in ("media", "media_files"):  # every event at its step, every byte
            assert rep.fields[field].expected > 0 and rep.fields[field].percent == 100.0, (
                dest, field, rep.fields[field])
        data = {k: (v["expected"], v["data_kept"]) for k, v in rep.media_per_key.items()}
        # W&B re-bins a histogram over its 512-bin limit (TensorBoard's default edges give
        # ~580 over this data) and holds a curve as a wandb.Table (the W&B adapter's
        # forms): their inline data is transformed there; everything else is equal.
        transformed = {"default_bins", "pr"} if dest == "wandb" else set()
        assert {k: v for k, v in data.items() if k not in transformed} == {
            k: (3, 3) for k in data if k not in transformed}, (dest, data)

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{spool}/mlflow.db")
    (mr,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                               filter_string=f"tags.`bridge.run_id` = '{done.run_id}'")
    pngs = [f.path for f in client.list_artifacts(mr.info.run_id, "images")
            if f.path.endswith(".png") and f.path.startswith("images/input+step+")]
    seen = {e.step: e.encoded_image_string for e in _accumulator(run_dir).Images("input")}
    assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in pngs) == sorted(seen)
    for path in pngs:
        step = int(path.split("+step+")[1].split("+")[0])
        local = client.download_artifacts(mr.info.run_id, path, str(tmp_path / "dl"))
        assert Path(local).read_bytes() == seen[step]


@pytest.mark.parametrize("bins,max_bins", [(100, 30), (37, 5), ("tensorflow", None),
                                           ("auto", None), (10, None)])
def test_histogram_bins_match_torch(bins: Any, max_bins: Any) -> None:
    """bridge's add_histogram keeps the buckets torch's writer stores (read back as the
    importer reads them), max_bins merging included."""
    summary = pytest.importorskip("torch.utils.tensorboard.summary",
                                  reason="torch is not installed")
    from bridge.adapters.tensorboard.compat import histogram, tensorflow_bins
    from bridge.adapters.tensorboard.media import histogram_edges

    values = np.random.default_rng(0).normal(size=5000)
    proto = summary.make_histogram(values, tensorflow_bins() if bins == "tensorflow" else bins,
                                   max_bins)
    stored = histogram_edges(list(proto.bucket_limit), list(proto.bucket), proto.min, proto.max)
    assert histogram(values, bins, max_bins) == stored
