"""The ``.wandb`` reader against files written by the real wandb SDK (offline)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from bridge.adapters.wandb.log import (
    BLOCK_SIZE,
    CHUNK_HEADER,
    CorruptLogError,
    WandbLog,
    WandbLogError,
    find_run_logs,
    iter_records,
    read_run,
)

pytest.importorskip("wandb")

RUN_ID = "readerrun1"
ROWS = 1500  # enough rows for records to cross several 32 KiB blocks

WRITER = textwrap.dedent(
    """
    import sys, wandb
    out, run_id, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    settings = wandb.Settings(silent=True, console="off", disable_git=True,
        disable_code=True, x_disable_stats=True, x_disable_meta=True,
        x_disable_machine_info=True, x_save_requirements=False)
    run = wandb.init(project="proj", id=run_id, name="the name", notes="some notes",
        group="grp", job_type="train", tags=["a", "b"], mode="offline", dir=out,
        config={"lr": 0.1, "model": {"depth": 4, "act": "relu"}}, settings=settings)
    run.define_metric("bridge/step")
    run.define_metric("*", step_metric="bridge/step")
    for i in range(rows):
        run.log({"loss": 1.0 / (i + 1), "bridge/step": i, "_timestamp": 1.7e9 + i / 10,
                 "pad": "x" * 40})
    run.log({"odd": float("nan"), "big": float("inf"), "bridge/step": rows,
             "_timestamp": 1.8e9})
    with open(run.dir + "/notes.txt", "w") as f:
        f.write("hello")
    run.save(run.dir + "/notes.txt", base_path=run.dir, policy="now")
    run.summary["best"] = {"loss": 0.01, "epoch": 3}
    run.finish(exit_code=2)
    """
)


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real offline run written by the SDK in a child process (isolated env)."""
    out = tmp_path_factory.mktemp("wandb_reader")
    env = dict(os.environ)
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(out),
        WANDB_CONFIG_DIR=str(out / "cfg"),
        WANDB_CACHE_DIR=str(out / "cache"),
        WANDB_DATA_DIR=str(out / "data"),
        HOME=str(out / "home"),
    )
    env.pop("WANDB_API_KEY", None)
    subprocess.run(
        [sys.executable, "-c", WRITER, str(out), RUN_ID, str(ROWS)],
        env=env,
        check=True,
        timeout=120,
    )
    (log,) = find_run_logs(out / "wandb", RUN_ID)
    return log


def test_reads_everything_the_sdk_wrote(offline_run: Path) -> None:
    run = read_run(offline_run.parent)
    assert (run.run_id, run.project, run.name, run.notes) == (
        RUN_ID, "proj", "the name", "some notes",
    )
    assert (run.group, run.job_type, run.tags) == ("grp", "train", ["a", "b"])
    assert run.config == {"lr": 0.1, "model": {"depth": 4, "act": "relu"}}
    assert len(run.history) == ROWS + 1
    for i, row in enumerate(run.history[:ROWS]):
        assert row["_step"] == i and row["bridge/step"] == i
        assert row["loss"] == pytest.approx(1.0 / (i + 1), rel=1e-15)
        assert round(row["_timestamp"] * 1000) == round((1.7e9 + i / 10) * 1000)
        assert "_runtime" in row
    last = run.history[-1]
    assert math.isnan(last["odd"]) and last["big"] == math.inf
    assert run.summary["best"] == {"loss": 0.01, "epoch": 3}
    assert run.exit_code == 2
    assert "notes.txt" in run.files
    assert {"name": "", "glob_name": "*", "step_metric": "bridge/step"} in run.metrics
    assert not run.truncated and run.skipped_blocks == 0
    assert offline_run.stat().st_size > 3 * BLOCK_SIZE  # multi-block, multi-chunk


def test_iterator_yields_protobuf_records(offline_run: Path) -> None:
    kinds = [r.WhichOneof("record_type") for r in iter_records(offline_run)]
    assert kinds[0] == "header" and kinds[-1] == "exit"
    assert kinds.count("history") == ROWS + 1
    nums = [r.num for r in iter_records(offline_run)]
    assert nums == list(range(1, len(nums) + 1))  # nothing lost, nothing repeated


def test_checksum_is_plain_crc32_of_type_and_data(offline_run: Path) -> None:
    data = offline_run.read_bytes()
    assert data[:7] == b":W&B\xe1\xbe\x00"
    crc, length, kind = int.from_bytes(data[7:11], "little"), data[11] | data[12] << 8, data[13]
    assert kind == 1 and crc == zlib.crc32(data[13 : 14 + length])


@pytest.mark.parametrize("cut", [3, 7, 20, 500, BLOCK_SIZE - 3, BLOCK_SIZE, 40_000, -1])
def test_truncated_file_reads_a_clean_prefix(offline_run: Path, tmp_path: Path, cut: int) -> None:
    data = offline_run.read_bytes()
    cut = len(data) + cut if cut < 0 else cut
    part = tmp_path / "run-x.wandb"
    part.write_bytes(data[:cut])
    full = [r.num for r in iter_records(offline_run)]
    log = WandbLog(part)
    nums = [r.num for r in log.records()]
    assert nums == full[: len(nums)]  # a prefix, in order
    assert log.end_offset <= cut
    if cut > 7:
        # bytes after the last record are a cut record, unless they are a block's trailer:
        # fewer than a chunk header's 7 bytes of zero padding closing a full block
        trailer = cut % BLOCK_SIZE == 0 and cut - log.end_offset < CHUNK_HEADER and \
            not any(data[log.end_offset:cut])
        assert log.truncated == (log.end_offset < cut and not trailer)
    summary = read_run(part)
    assert summary.truncated == log.truncated and summary.exit_code is None


def test_every_truncation_point_is_a_prefix(offline_run: Path, tmp_path: Path) -> None:
    data = offline_run.read_bytes()[: 3 * BLOCK_SIZE]
    full = [r.num for r in iter_records(offline_run)]
    part = tmp_path / "run-x.wandb"
    for cut in range(7, len(data), 997):
        part.write_bytes(data[:cut])
        nums = [r.num for r in iter_records(part)]
        assert nums == full[: len(nums)]


def test_flipped_byte_is_a_checksum_error(offline_run: Path, tmp_path: Path) -> None:
    data = bytearray(offline_run.read_bytes())
    at = BLOCK_SIZE + 1000  # inside the second block
    data[at] ^= 0x40
    bad = tmp_path / "run-x.wandb"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError) as err:
        list(iter_records(bad))
    assert "checksum mismatch" in str(err.value) and BLOCK_SIZE <= err.value.offset < at


def test_skip_corrupt_drops_one_block_and_counts_it(offline_run: Path, tmp_path: Path) -> None:
    data = bytearray(offline_run.read_bytes())
    data[BLOCK_SIZE + 1000] ^= 0x40
    bad = tmp_path / "run-x.wandb"
    bad.write_bytes(bytes(data))
    log = WandbLog(bad, skip_corrupt=True)
    nums = [r.num for r in log.records()]
    full = [r.num for r in iter_records(offline_run)]
    assert log.skipped_blocks == 1 and not log.truncated
    assert nums == sorted(nums) and set(nums) < set(full)
    assert nums[-1] == full[-1]  # reading resumed after the damaged block
    assert len(full) - len(nums) < BLOCK_SIZE // 100  # about one block of records lost


def test_not_a_wandb_file(tmp_path: Path) -> None:
    other = tmp_path / "x.wandb"
    other.write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(WandbLogError, match="not a W&B transaction log"):
        list(iter_records(other))
