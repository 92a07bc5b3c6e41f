"""A sync through the Comet adapter leaves the host process's environment as it found it.

comet_ml reads a few settings only while it is imported, and only from the environment
(``names.IMPORT_ENV``). Bridge sets them for that import alone in a process of its own, and
not at all in a user's process running an in-process background sync, where comet_ml must
come out exactly as the user's own ``import comet_ml`` would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

comet_ml = pytest.importorskip("comet_ml")

from bridge.adapters.base import Event, Outcome, RunInfo  # noqa: E402
from bridge.adapters.comet import CometAdapter, names  # noqa: E402
from bridge.adapters.comet.sdk import BACKGROUND_SYNC_THREAD, scoped_env  # noqa: E402

RUN_ID = "0123456789abcdef0123456789abcdef"

# Syncs one run offline, recording every write to os.environ. ``host`` runs the sync in a
# thread named like bridge's in-process background sync (a user's training process).
_SCRIPT = """
import os, sys, threading
from bridge.adapters.base import Event, RunInfo
from bridge.adapters.comet import CometAdapter

writes = []
real_set, real_del = os._Environ.__setitem__, os._Environ.__delitem__
os._Environ.__setitem__ = lambda self, k, v: (writes.append(k), real_set(self, k, v))[1]
os._Environ.__delitem__ = lambda self, k: (writes.append(k), real_del(self, k))[1]
before = dict(os.environ)

def sync():
    run = RunInfo(run_id={run_id!r}, project="vision", status="FINISHED")
    a = CometAdapter(mode="offline", offline_directory={out!r})
    a.open_run(run)
    r = a.export(run, [Event("f", 1, run.run_id, "metric", "loss", 0, 1, value=0.5)])
    assert r.outcome.value == "success", r
    a.close_run(run, "FINISHED", 2)
    a.shutdown()

if {host!r}:
    t = threading.Thread(target=sync, name={thread!r})
    t.start(); t.join()
else:
    sync()
import comet_ml
assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
print("writes", sorted(set(writes)))
print("hooks", hasattr(comet_ml, "MODULE_FINDER"))
"""


def _run(tmp_path: Path, host: bool) -> list[str]:
    script = _SCRIPT.format(run_id=RUN_ID, out=str(tmp_path / "comet"), host=host,
                            thread=BACKGROUND_SYNC_THREAD)
    env = {k: v for k, v in os.environ.items() if k not in names.IMPORT_ENV}
    env["COMET_API_KEY"] = "dummy"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert list((tmp_path / "comet").glob("*.zip"))
    return proc.stdout.decode().splitlines()[-2:]


def test_a_sync_in_a_process_of_its_own_imports_comet_ml_quietly_and_restores_os_environ(
        tmp_path: Path) -> None:
    writes, hooks = _run(tmp_path, host=False)
    assert writes == f"writes {sorted(names.IMPORT_ENV)}"  # set for the import, then removed
    assert hooks == "hooks False"  # COMET_DISABLE_AUTO_LOGGING was seen by the import


def test_a_background_sync_in_a_users_process_never_touches_os_environ(tmp_path: Path) -> None:
    writes, hooks = _run(tmp_path, host=True)
    assert writes == "writes []"
    assert hooks == "hooks True"  # comet_ml as the user's own import would set it up


def test_an_offline_sync_leaves_os_environ_exactly_as_before(tmp_path: Path) -> None:
    before = dict(os.environ)
    run = RunInfo(run_id=RUN_ID, project="vision", status="FAILED")
    a = CometAdapter(mode="offline", offline_directory=str(tmp_path / "comet"))
    a.open_run(run)
    assert a.export(run, [Event("f", 1, RUN_ID, "metric", "loss", 0, 1, value=0.5)]).outcome \
        is Outcome.SUCCESS
    a.close_run(run, "FAILED", 2)
    a.shutdown()
    assert dict(os.environ) == before


def test_scoped_env_keeps_the_users_values_and_restores_exactly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_TEST_MINE", "user")
    monkeypatch.delenv("BRIDGE_TEST_NEW", raising=False)
    monkeypatch.delenv("BRIDGE_TEST_LATER", raising=False)
    before = dict(os.environ)
    defaults = {"BRIDGE_TEST_MINE": "bridge", "BRIDGE_TEST_NEW": "bridge",
                "BRIDGE_TEST_LATER": "bridge"}
    with scoped_env(defaults):
        assert os.environ["BRIDGE_TEST_MINE"] == "user"
        assert os.environ["BRIDGE_TEST_NEW"] == "bridge"
        os.environ["BRIDGE_TEST_LATER"] = "set meanwhile"  # someone else's write stays
    assert os.environ.pop("BRIDGE_TEST_LATER") == "set meanwhile"
    assert dict(os.environ) == before
