"""Blob writes never follow a symlink planted in the blob store.

``<spool dir>/blobs/<xx>`` (or ``blobs`` itself) made a symlink to another directory would
send every artifact whose SHA-256 starts with ``xx`` there. The store opens its directories
with ``O_NOFOLLOW``: ``run.log_artifact`` then records nothing, raises nothing into the
training loop and emits a counted ``BridgeWarning`` (from the artifact thread, by the next
``flush()``); nothing is written outside.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import pytest

import bridge
from bridge.errors import BridgeWarning
from bridge.spool import blobs
from bridge.spool.reader import iter_events, list_runs

CONTENT = b"model weights \x00\x01"
SHA = hashlib.sha256(CONTENT).hexdigest()


def _artifacts(spool: Path, run_id: str) -> list[dict]:
    (rec,) = [r for r in list_runs(spool) if r.run_id == run_id]
    return [e.payload for e in iter_events(rec.files, run_id) if e.kind == "artifact"]


@pytest.mark.parametrize("planted", ["fan-out", "blobs"])
def test_log_artifact_refuses_a_symlinked_store_dir(tmp_path: Path, planted: str) -> None:
    spool, outside = tmp_path / "spool", tmp_path / "outside"
    outside.mkdir()
    src = tmp_path / "model.bin"
    src.write_bytes(CONTENT)
    run = bridge.init(project="p", dir=spool, sync="offline")
    if planted == "blobs":
        (spool / "blobs").symlink_to(outside)
    else:
        (spool / "blobs").mkdir(exist_ok=True)
        (spool / "blobs" / SHA[:2]).symlink_to(outside)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.log_artifact(src)  # must not raise into the training loop
        run.log({"loss": 1.0})  # and the run goes on
        run.flush()  # the copy runs on the artifact thread: its warning comes by now
    messages = [str(w.message) for w in caught if issubclass(w.category, BridgeWarning)]
    assert len(messages) == 1 and "log_artifact" in messages[0]
    assert "symlink" in messages[0] and "artifact not recorded" in messages[0]
    assert run.warnings == 1
    run.finish()
    assert list(outside.iterdir()) == []  # not a byte written through the link
    assert _artifacts(spool, run.id) == []
    assert list_runs(spool)[0].warnings == 1
    incoming = [p for p in spool.rglob(".incoming-*")]
    assert incoming == []  # the temporary copy is removed as well


def test_symlink_planted_at_a_blob_name_is_replaced_not_written_through(tmp_path: Path) -> None:
    spool, outside = tmp_path / "spool", tmp_path / "outside"
    outside.mkdir()
    target = outside / "victim"
    target.write_bytes(b"must stay")
    (spool / "blobs" / SHA[:2]).mkdir(parents=True)
    (spool / "blobs" / SHA[:2] / SHA).symlink_to(target)
    assert blobs.store_bytes(spool, CONTENT) == (SHA, len(CONTENT))
    final = blobs.blob_path(spool, SHA)
    assert not final.is_symlink() and final.read_bytes() == CONTENT
    assert target.read_bytes() == b"must stay"


def test_store_still_deduplicates_and_keeps_modes(tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(CONTENT)
    assert blobs.store_file(tmp_path / "spool", src) == (SHA, len(CONTENT))
    assert blobs.store_bytes(tmp_path / "spool", CONTENT) == (SHA, len(CONTENT))
    final = blobs.blob_path(tmp_path / "spool", SHA)
    assert final.read_bytes() == CONTENT and (final.stat().st_mode & 0o777) == 0o600
    assert (os.stat(final.parent).st_mode & 0o077) == 0  # fan-out dir private
    assert sorted(p.name for p in (tmp_path / "spool" / "blobs").iterdir()) == [SHA[:2]]


def test_blob_store_error_is_an_oserror(tmp_path: Path) -> None:
    """Callers that handle ``OSError`` (``log_artifact``, the import sink) handle it."""
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / SHA[:2]).symlink_to(tmp_path)
    with pytest.raises(OSError, match="symlink"):
        blobs.store_bytes(tmp_path, CONTENT)
    assert issubclass(blobs.UnsafeBlobStore, OSError)
