"""One spool directory as the plugin sees it: its URI, the runs open in this process, the
experiments file.

``bridge:`` is the default spool (``BRIDGE_DIR``, the config file, ``~/.bridge``);
``bridge:///absolute/dir`` names one. Artifact locations are ``bridge://<dir>/_bridge/runs/
<run id>/artifacts`` and ``bridge://<dir>/_bridge/models/<model id>/artifacts``: the artifact
repository finds the spool and the owner from them.

Experiments are bridge projects. What a project alone cannot hold (an experiment created
before it has a run, its tags) is kept in ``<dir>/mlflow-plugin/experiments.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

SCHEME = "bridge"
DEFAULT_EXPERIMENT = "Default"
DEFAULT_EXPERIMENT_ID = "0"
_SIDE_DIR = "mlflow-plugin"
_OWNER = re.compile(r"^(?P<dir>.*)/_bridge/(?P<what>runs|models)/(?P<id>[A-Za-z0-9\-]+)"
                    r"/artifacts(?:/(?P<sub>.*))?$")


def spool_dir(uri: str | None) -> Path:
    """The spool directory of a ``bridge:`` tracking URI."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    parsed = urlparse(uri or f"{SCHEME}:")
    if parsed.scheme != SCHEME:
        raise MlflowException(f"not a bridge URI: {uri!r}", INVALID_PARAMETER_VALUE)
    if parsed.netloc:
        raise MlflowException(
            f"bridge URI {uri!r} names a host; use bridge: (the default spool) or "
            "bridge:///absolute/spool/dir", INVALID_PARAMETER_VALUE)
    path = unquote(parsed.path)
    if not path:
        from bridge.config import default_dir

        return Path(default_dir()).expanduser().resolve()
    return Path(path).expanduser().resolve()


def artifact_uri(spool: Path, what: str, owner: str) -> str:
    return f"{SCHEME}://{spool.as_posix()}/_bridge/{what}/{owner}/artifacts"


def parse_artifact_uri(uri: str) -> tuple[Path, str, str, str]:
    """(spool dir, "runs" or "models", owner id, path inside the owner's artifacts)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    parsed = urlparse(uri)
    m = _OWNER.match(unquote(parsed.path)) if parsed.scheme == SCHEME else None
    if m is None or parsed.netloc:
        raise MlflowException(f"not a bridge artifact URI: {uri!r}", INVALID_PARAMETER_VALUE)
    return (Path(m["dir"]), m["what"], m["id"], (m["sub"] or "").strip("/"))


def experiment_id(name: str) -> str:
    """A stable MLflow experiment id for a project name ("0" for Default)."""
    if name == DEFAULT_EXPERIMENT:
        return DEFAULT_EXPERIMENT_ID
    return str(int(hashlib.sha256(name.encode()).hexdigest()[:15], 16))


class Spool:
    """The runs this process writes in one spool directory, and its experiments file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[str, Any] = {}  # run id -> bridge Run open in this process
        self.ended: dict[str, tuple[str, int]] = {}  # run id -> (status, end ms) ended here
        self.params: dict[str, dict[str, str]] = {}  # run id -> params (MLflow's refusal)
        self.models: dict[str, str] = {}  # logged model id -> its source run id
        self.metric_keys: set[str] = set()  # keys MLflow's validator accepted (fast path)
        self.lock = threading.RLock()

    # -- runs ------------------------------------------------------------------------------
    def start(self, project: str, name: str, run_id: str) -> Any:
        import bridge

        run = bridge.init(project=project, name=name, run_id=run_id, dir=self.path)
        self.runs[run_id] = run
        self.params[run_id] = {}
        return run

    def writable(self, run_id: str) -> Any:
        """The bridge run to write to: open here, or resumed (then finished again as it was
        when it was ended before)."""
        with self.lock:
            run = self.runs.get(run_id)
            if run is not None and not run._finished:
                return run
            import bridge

            run = bridge.init(run_id=run_id, resume="must", dir=self.path)
            self.runs[run_id] = run
            return run

    def flush(self) -> None:
        for run in list(self.runs.values()):
            if not run._finished:
                run.flush()

    # -- experiments -----------------------------------------------------------------------
    def _side(self) -> Path:
        return self.path / _SIDE_DIR / "experiments.json"

    def experiments(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self._side().read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def save_experiment(self, name: str, **fields: Any) -> dict[str, Any]:
        with self.lock:
            data = self.experiments()
            now = int(time.time() * 1000)
            entry = data.setdefault(name, {"creation_time": now, "tags": {},
                                           "lifecycle_stage": "active"})
            tags = fields.pop("tags", None)
            if tags:
                entry["tags"].update(tags)
            entry.update(fields)
            entry["last_update_time"] = now
            side = self._side()
            side.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = side.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, side)
            return entry


_spools: dict[Path, Spool] = {}
_lock = threading.Lock()


def spool(path: Path) -> Spool:
    with _lock:
        found = _spools.get(path)
        if found is None:
            found = _spools[path] = Spool(path)
        return found


def not_supported(what: str, instead: str) -> Exception:
    """MLflow's own "not supported by this store" refusal (NOT_IMPLEMENTED), naming the
    alternative; also a ``NotImplementedError``, which MLflow's callers of optional store
    features already catch as "this store does not have it"."""
    from mlflow.exceptions import MlflowNotImplementedException

    class NotSupported(MlflowNotImplementedException, NotImplementedError):
        pass

    return NotSupported(f"{what} is not supported by the bridge tracking store (bridge:). "
                        f"{instead}")
