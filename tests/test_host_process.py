"""A library never changes its host's process settings: a training process that logs with
background sync to every backend leaves ``os.environ`` and the root logger as it found them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CODE = textwrap.dedent("""
    import json, logging, os, sys
    before_env = dict(os.environ)
    root = logging.getLogger()
    before_log = (root.level, [type(h).__name__ for h in root.handlers])
    import bridge
    out = sys.argv[1]
    backends = [
        {"name": "mlflow", "tracking_uri": f"sqlite:///{out}/mlflow.db"},
        {"name": "wandb", "mode": "offline", "dir": f"{out}/wandb"},
        {"name": "comet", "mode": "offline", "offline_directory": f"{out}/comet"},
        {"name": "neptune", "mode": "offline", "data_dir": f"{out}/neptune"},
    ]
    run = bridge.init(project="host", dir=f"{out}/spool", backends=backends,
                      sync="background", agent={"session_interval": 0})
    for i in range(50):
        run.log({"loss": 1.0 / (i + 1)}, step=i)
    run.finish(timeout=120)
    after_env = dict(os.environ)
    changed = {k: (before_env.get(k), after_env.get(k))
               for k in set(before_env) | set(after_env) if before_env.get(k) != after_env.get(k)}
    after_log = (root.level, [type(h).__name__ for h in root.handlers])
    print(json.dumps({"env": changed, "log": [before_log, after_log]}))
""")


def test_background_sync_leaves_the_environment_as_it_found_it(tmp_path):
    for sdk in ("mlflow", "wandb", "comet_ml", "neptune"):
        pytest.importorskip(sdk)
    out = subprocess.run([sys.executable, "-c", CODE, str(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["env"] == {}, report["env"]
    before, after = report["log"]
    assert before == after, report["log"]
    # The SDKs were really driven in that process: everything was delivered by it.
    from bridge.agent.status import spool_status

    [status] = spool_status(tmp_path / "spool")
    assert {b.backend: b.pending for b in status.backends} == dict.fromkeys(
        ("mlflow", "wandb", "comet", "neptune"), 0), status
