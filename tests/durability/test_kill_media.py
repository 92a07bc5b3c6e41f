"""SIGKILL a process logging images at random points: every media event in the spool has
its blobs, whole, and every image acknowledged by flush() survives.

Each kill point is drawn from a seed printed on failure; BRIDGE_TEST_KILLS sets the rounds
and BRIDGE_TEST_SEED replays one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

np = pytest.importorskip("numpy")
PIL = pytest.importorskip("PIL.Image")

CHILD = textwrap.dedent("""
    import sys, numpy as np, bridge
    run = bridge.init(project="kill", dir=sys.argv[1], sync="offline")
    print("RUN", run.id, flush=True)
    step = 0
    while True:
        img = np.full((16, 16, 3), step % 256, np.uint8)
        img[0, 0] = [step // 256 % 256, 7, 7]  # distinct content per step: one blob each
        run.log({"loss": 1.0 / (step + 1), "sample": bridge.Image(img),
                 "h": bridge.Histogram(np.arange(step + 1.0), bins=4)}, step=step)
        if step % 13 == 0:
            run.flush()
            print("FLUSHED", step, flush=True)
        step += 1
""")

ROUNDS = int(os.environ.get("BRIDGE_TEST_KILLS", "10"))
BASE_SEED = int(os.environ.get("BRIDGE_TEST_SEED", random.SystemRandom().randrange(1 << 30)))


def _kill_once(tmp_path, seed: int) -> None:
    rng = random.Random(seed)
    spool = tmp_path / f"spool-{seed}"
    wait_for = rng.randint(1, 25)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(spool)], stdout=subprocess.PIPE,
                            text=True)
    acked = -1
    seen = 0
    try:
        for line in proc.stdout:
            word, value = line.split()
            if word == "FLUSHED":
                acked, seen = int(value), seen + 1
                if seen >= wait_for:
                    break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    (db,) = sorted((spool / "spool").glob("*.db"))
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT step, payload FROM events WHERE kind='media' AND key='sample' "
                        "ORDER BY step").fetchall()
    registered = {r[0] for r in conn.execute("SELECT sha256 FROM blobs")}
    conn.close()
    steps = [s for s, _ in rows]
    assert steps and steps[-1] >= acked, f"acknowledged image at step {acked} lost"
    for step, payload in rows:
        (item,) = json.loads(payload)["items"]
        blob = spool / "blobs" / item["sha256"][:2] / item["sha256"]
        data = blob.read_bytes()  # committed event => durable blob
        assert hashlib.sha256(data).hexdigest() == item["sha256"]
        assert item["sha256"] in registered
        pixels = np.asarray(PIL.open(io.BytesIO(data)))
        assert pixels[1, 1, 0] == step % 256 and pixels[0, 0, 0] == step // 256 % 256


def test_sigkill_while_logging_images_never_commits_an_event_without_its_blob(tmp_path):
    for n in range(ROUNDS):
        seed = BASE_SEED + n
        try:
            _kill_once(tmp_path, seed)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (replay with BRIDGE_TEST_SEED={seed} "
                                 "BRIDGE_TEST_KILLS=1)") from exc
