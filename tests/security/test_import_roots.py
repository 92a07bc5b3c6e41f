"""A hostile import source cannot make bridge read a file outside the import root.

Whatever an importer reads ends up in the spool (blobs, text events) and is uploaded by the
next sync. Each test builds a source the way its tracker writes it (the real wandb SDK, the
real neptune client, MLflow's client, TensorBoard's writer, a Comet archive), then plants
what an attacker would: a symlinked directory, an absolute reference to a file outside, a
symlinked log file. Every file under the spool directory is then scanned for the outside
secret, and the refusal must be listed in the importer's ``warnings`` (what ``bridge
import`` prints as ``skipped: …``) while the rest of the run still arrives.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from bridge.adapters.importing import ImportError_, resolve_source
from bridge.importers.sink import import_runs

SECRET = b"TOP-SECRET-" + secrets.token_hex(16).encode()


def _outside(tmp_path: Path) -> Path:
    """A directory outside every import root, holding the victim's secret."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_bytes(SECRET)
    return out


def _assert_no_secret(spool: Path) -> None:
    """No byte sequence of the secret in any file under the spool dir (db, journal, blob)."""
    files = [p for p in spool.rglob("*") if p.is_file()]
    assert files, "the import wrote nothing at all"
    for p in files:
        assert SECRET not in p.read_bytes(), f"the outside secret leaked into {p}"


# -- the shared rule ---------------------------------------------------------------------


def test_resolve_source_checks_every_component(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    root = tmp_path / "root"
    (root / "files").mkdir(parents=True)
    (root / "files" / "ok.txt").write_text("ok")
    (root / "files" / "sub").symlink_to(outside)  # a directory, not the last component
    (root / "files" / "inner").symlink_to(root / "files")  # stays inside: allowed
    assert resolve_source(root / "files" / "ok.txt", [root]) == (root / "files" / "ok.txt")
    assert resolve_source(root / "files" / "inner" / "ok.txt", [root]).read_text() == "ok"
    for hostile in (root / "files" / "sub" / "secret.txt", outside / "secret.txt",
                    root / "files" / ".." / ".." / "outside" / "secret.txt"):
        with pytest.raises(ImportError_, match="outside the import root"):
            resolve_source(hostile, [root])
    # Outside, but the bytes match the digest the source recorded: a file it already knew.
    import hashlib

    good = ("sha256", hashlib.sha256(SECRET).digest())
    assert resolve_source(outside / "secret.txt", [root], digest=good).read_bytes() == SECRET
    with pytest.raises(ImportError_):
        resolve_source(outside / "secret.txt", [root], digest=("sha256", b"\0" * 32))


# -- W&B: the reported findings -----------------------------------------------------------

WANDB_RUN = textwrap.dedent(
    """
    import os, sys, wandb
    out, decoy = sys.argv[1], sys.argv[2]
    settings = wandb.Settings(silent=True, console="off", disable_git=True,
        disable_code=True, x_disable_stats=True, x_disable_meta=True,
        x_disable_machine_info=True, x_save_requirements=False)
    run = wandb.init(project="hostile", id="evil0001", mode="offline", dir=out,
        settings=settings)
    for i in range(3):
        run.log({"loss": 1.0 / (i + 1)}, step=i)
    os.makedirs(run.dir + "/sub", exist_ok=True)
    for rel, text in (("sub/secret.txt", "harmless"), ("notes.txt", "kept")):
        with open(run.dir + "/" + rel, "w") as f:
            f.write(text)
        run.save(run.dir + "/" + rel, base_path=run.dir, policy="now")
    art = wandb.Artifact("weights", type="model")
    art.add_file(decoy, name="model.bin", policy="immutable")  # local_path = decoy, absolute
    run.log_artifact(art)
    run.finish()
    """
)


def _wandb_offline(out: Path, decoy: Path) -> None:
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(out),
               WANDB_CONFIG_DIR=str(out / "cfg"), WANDB_CACHE_DIR=str(out / "cache"),
               WANDB_DATA_DIR=str(out / "data"), WANDB_ARTIFACT_DIR=str(out / "arts"),
               HOME=str(out / "home"))
    env.pop("WANDB_API_KEY", None)
    subprocess.run([sys.executable, "-c", WANDB_RUN, str(out), str(decoy)], env=env,
                   check=True, timeout=180)


def test_hostile_wandb_directory_reads_nothing_outside(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    from bridge.adapters.wandb.importer import WandbImporter

    outside = _outside(tmp_path)
    decoy = outside / "model.bin"
    decoy.write_bytes(b"harmless weights")
    source = tmp_path / "received"  # the directory handed over for import
    source.mkdir()
    _wandb_offline(source, decoy)
    # What the attacker plants: files/sub -> a directory outside, and the manifest's
    # absolute local_path now names a file of the victim (here: the decoy's path, whose
    # bytes on this machine are the secret; the recorded MD5 is the decoy's).
    (run_dir,) = (source / "wandb").glob("offline-run-*-evil0001")
    files = run_dir / "files"
    (files / "sub" / "secret.txt").unlink()
    (files / "sub").rmdir()
    (files / "sub").symlink_to(outside)
    decoy.write_bytes(SECRET)

    imp = WandbImporter(source)
    spool = tmp_path / "spool"
    (res,) = import_runs(imp, spool)

    _assert_no_secret(spool)
    assert len(imp.warnings) == 2, imp.warnings
    sub, art = sorted(imp.warnings, key=lambda w: not w.startswith("file"))
    assert "'sub/secret.txt'" in sub and "refused" in sub and "outside the import root" in sub
    assert "'weights'" in art and "refused" in art and "outside the import root" in art
    # The rest of the run still arrives: its metrics and the honest file.
    assert res.points == {"loss": 3} and res.counts["artifact"] == 1
    (blob,) = [p for p in (spool / "blobs").rglob("*") if p.is_file()]
    assert blob.read_bytes() == b"kept"


def test_wandb_staging_copy_outside_the_root_is_proven_by_its_digest(tmp_path: Path) -> None:
    """W&B keeps artifact files in its staging dir, outside the run dir; such a file is
    read because its bytes match the manifest's MD5 (the W&B finding's legitimate twin)."""
    pytest.importorskip("wandb")
    from bridge.adapters.wandb.importer import WandbImporter

    outside = _outside(tmp_path)
    decoy = outside / "model.bin"
    decoy.write_bytes(b"honest weights")
    source = tmp_path / "received"
    source.mkdir()
    _wandb_offline(source, decoy)
    imp = WandbImporter(source / "wandb")
    (res,) = import_runs(imp, tmp_path / "spool")
    assert res.counts["artifact"] == 3 and imp.warnings == []  # sub/secret.txt, notes, weights


# -- MLflow file store --------------------------------------------------------------------


def test_hostile_mlflow_file_store_reads_nothing_outside(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow import MlflowClient

    from bridge.adapters.mlflow.importer import MlflowImporter

    outside = _outside(tmp_path)
    store = tmp_path / "mlruns"
    client = MlflowClient(tracking_uri=store.as_uri())
    exp = client.create_experiment("e")
    honest = tmp_path / "report.txt"
    honest.write_text("report")
    ids = []
    for name in ("moved", "linked"):
        rid = client.create_run(exp, run_name=name).info.run_id
        client.log_metric(rid, "m", 1.0, step=0)
        client.log_artifact(rid, str(honest))
        client.set_terminated(rid)
        ids.append(rid)
    moved, linked = (store / exp / rid for rid in ids)
    # Run 1: meta.yaml names a directory outside the store as its artifact location.
    meta = (moved / "meta.yaml").read_text()
    line = next(x for x in meta.splitlines() if x.startswith("artifact_uri:"))
    (moved / "meta.yaml").write_text(meta.replace(line, f"artifact_uri: {outside.as_uri()}"))
    # Run 2: symlinks planted among its artifacts, a directory and a file.
    (linked / "artifacts" / "sub").symlink_to(outside)
    (linked / "artifacts" / "leak.txt").symlink_to(outside / "secret.txt")

    imp = MlflowImporter(str(store))
    spool = tmp_path / "spool"
    done = import_runs(imp, spool)

    _assert_no_secret(spool)
    assert sorted(r.source_id for r in done) == sorted(ids)
    assert len(imp.warnings) == 3, imp.warnings
    assert all("refused" in w and "outside the import root" in w for w in imp.warnings)
    assert any(ids[0] in w and "artifacts refused" in w for w in imp.warnings)
    assert any("'sub'" in w for w in imp.warnings) and any("'leak.txt'" in w for w in imp.warnings)
    by_id = {r.source_id: r for r in done}
    assert "artifact" not in by_id[ids[0]].counts and by_id[ids[0]].points == {"m": 1}
    assert by_id[ids[1]].counts["artifact"] == 1  # report.txt, read in place


# -- Neptune offline ----------------------------------------------------------------------


def test_neptune_upload_outside_the_root_is_refused(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A Neptune offline upload records the file's absolute path; one outside the import
    root is refused unless the user names its directory in ``trusted_roots``."""
    neptune = pytest.importorskip("neptune")
    from bridge.adapters.neptune import NeptuneImporter

    outside = _outside(tmp_path)
    decoy = outside / "data.bin"
    decoy.write_bytes(b"harmless data")
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(tmp_path / "received" / ".neptune"))
    run = neptune.init_run(mode="offline", name="hostile", capture_stdout=False,
                           capture_stderr=False, capture_hardware_metrics=False,
                           capture_traceback=False, git_ref=False, source_files=[])
    run["train/loss"].append(0.5, step=0)
    run["data/file"].upload(str(decoy))
    run.stop()
    decoy.write_bytes(SECRET)

    imp = NeptuneImporter(tmp_path / "received")
    spool = tmp_path / "spool"
    (res,) = import_runs(imp, spool)
    _assert_no_secret(spool)
    assert len(imp.warnings) == 1 and "'data/file' refused" in imp.warnings[0]
    assert "outside the import root" in imp.warnings[0]
    assert res.points == {"train/loss": 1} and "artifact" not in res.counts

    trusted = NeptuneImporter(tmp_path / "received", trusted_roots=[outside])
    (again,) = import_runs(trusted, tmp_path / "spool-trusted")
    assert again.counts["artifact"] == 1 and trusted.warnings == []


def test_neptune_parquet_symlinked_files_root_is_refused(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from bridge.adapters.neptune.importer import NeptuneImporter, sanitize_path_part

    outside = _outside(tmp_path)
    project = "ws/proj"
    data = tmp_path / "exports" / "data" / sanitize_path_part(project)
    files = tmp_path / "exports" / "files" / sanitize_path_part(project)
    data.mkdir(parents=True)
    (files / "RUN-1").mkdir(parents=True)
    (files / "RUN-1" / "leak").symlink_to(outside)  # a directory inside the files root
    rows = [{"project_id": project, "run_id": "RUN-1", "attribute_path": "files/leak",
             "attribute_type": "file", "file_value": {"path": "RUN-1/leak/secret.txt"}},
            {"project_id": project, "run_id": "RUN-1", "attribute_path": "eval/acc",
             "attribute_type": "float", "float_value": 0.5}]
    schema = pa.schema([("project_id", pa.string()), ("run_id", pa.string()),
                        ("attribute_path", pa.string()), ("attribute_type", pa.string()),
                        ("step", pa.decimal128(18, 6)), ("timestamp", pa.timestamp("ms", tz="UTC")),
                        ("float_value", pa.float64()),
                        ("file_value", pa.struct([("path", pa.string())]))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), data / "RUN-1_part_0.parquet")
    imp = NeptuneImporter(tmp_path / "exports" / "data")
    spool = tmp_path / "spool"
    import_runs(imp, spool)
    _assert_no_secret(spool)
    assert len(imp.warnings) == 1 and "'files/leak' refused" in imp.warnings[0]


# -- TensorBoard and Comet: a log or archive symlinked out of the directory ---------------


def test_tensorboard_event_file_symlinked_out_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tb_events import LegacyWriter

    from bridge.adapters.tensorboard.importer import TensorboardImporter

    secret_tag = SECRET.decode()
    elsewhere = tmp_path / "outside-logs"
    w = LegacyWriter(str(elsewhere))
    w.add_scalar(secret_tag, 1.0, 0, 1_700_000_000.0)
    w.close()
    logdir = tmp_path / "logs" / "train"
    w = LegacyWriter(str(logdir))
    w.add_scalar("loss", 0.5, 0, 1_700_000_000.0)
    w.close()
    (outside_file,) = elsewhere.glob("*tfevents*")
    (logdir / "events.out.tfevents.9999999999.evil").symlink_to(outside_file)

    imp = TensorboardImporter(tmp_path / "logs")
    spool = tmp_path / "spool"
    (res,) = import_runs(imp, spool)
    _assert_no_secret(spool)
    assert res.points == {"loss": 1}
    assert len(imp.warnings) == 1 and "refused" in imp.warnings[0]


def test_comet_archive_symlinked_out_is_refused(tmp_path: Path) -> None:
    from bridge.adapters.comet.importer import CometImporter

    def archive(path: Path, key: str, metric: str) -> None:
        msg = {"type": "metric_msg", "payload": {"local_timestamp": 1_700_000_000_000,
                                                 "metric": {"metricName": metric,
                                                            "metricValue": 1.0, "step": 0}}}
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("experiment.json", json.dumps({"offline_id": key, "project_name": "p",
                                                       "start_time": 1_700_000_000_000}))
            zf.writestr("messages.json", json.dumps(msg))

    outside = _outside(tmp_path)
    archive(outside / "private.zip", "private1", SECRET.decode())
    received = tmp_path / "received"
    received.mkdir()
    archive(received / "honest1-a.zip", "honest1", "loss")
    (received / "zz-b.zip").symlink_to(outside / "private.zip")

    imp = CometImporter(received)
    spool = tmp_path / "spool"
    (res,) = import_runs(imp, spool)
    _assert_no_secret(spool)
    assert res.source_id == "honest1" and res.points == {"loss": 1}
    assert len(imp.warnings) == 1 and "zz-b.zip" in imp.warnings[0]
    assert "outside the import root" in imp.warnings[0]
