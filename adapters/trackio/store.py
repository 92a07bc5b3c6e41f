"""Writing into a trackio directory through trackio's own storage API, in a child process.

Why a child process: trackio resolves its directory once, at import, into module globals
(``trackio.utils.TRACKIO_DIR``, ``MEDIA_DIR``) that every ``SQLiteStorage`` call reads.
Pointing them at the adapter's ``dir`` inside the host process would redirect the host's own
trackio logging meanwhile (background sync runs in the training process, which may use
trackio itself); and trackio downloads from or uploads to the Hugging Face Hub when some
variables are set. The child gets ``TRACKIO_DIR`` = the adapter's directory and none of those
variables (``names.SCRUBBED_ENV``), so nothing leaves the machine and the host is untouched.

The child writes metric rows with ``SQLiteStorage.bulk_log`` (explicit steps, ISO timestamps
and log ids: its INSERT OR IGNORE on the unique ``log_id`` makes a replay write nothing),
system rows with ``bulk_log_system``, alerts with ``bulk_alert`` (unique ``alert_id``),
artifacts with ``commit_artifact_version`` (deduplicated by content), and copies media files
under trackio's ``MEDIA_DIR``. The config is merged into the ``configs``
row with trackio's own statement and serializer: ``bulk_log`` writes a config only together
with metric rows, and replaces it whole.

Run as ``python -m bridge.adapters.trackio`` (``__main__``): a JSON request on stdin, a JSON
answer on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from bridge.adapters.trackio import names as N

__all__ = ["StoreFailed", "call_store", "store_env"]

TIMEOUT_S = 600.0


class StoreFailed(Exception):
    """The store process failed; its message says why (the batch may be retried)."""


def store_env(root: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in (os.environ if environ is None else environ).items()
           if k not in N.SCRUBBED_ENV}
    env.update(N.OFFLINE_ENV)
    env[N.DIR_ENV] = str(root)
    return env


def call_store(root: Path, request: dict[str, Any], timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """Run one request in a child process with ``TRACKIO_DIR=root``."""
    try:
        proc = subprocess.run([sys.executable, "-m", "bridge.adapters.trackio"],
                              input=json.dumps(request), capture_output=True, text=True,
                              env=store_env(root), timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StoreFailed(f"trackio store process: {exc}") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise StoreFailed(f"trackio store process exited {proc.returncode}: {' | '.join(tail)}")
    answer = json.loads(lines[-1])
    if not answer.get("ok"):
        raise StoreFailed(str(answer.get("error")))
    return answer


# --- the child ----------------------------------------------------------------------------------


def _merge_config(old: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, value in new.items():
        if key in (N.CFG_TAGS, N.CFG_SUMMARY) and isinstance(value, dict):
            merged = dict(out.get(key) or {}) if isinstance(out.get(key), dict) else {}
            merged.update(value)
            out[key] = merged
        else:
            out[key] = value
    return out


def _write_config(storage: Any, utils: Any, project: str, run: str, run_id: str,
                  config: Mapping[str, Any], created_at: str) -> None:
    import orjson
    import sqlite3

    db_path = storage.init_db(project)
    lock = getattr(storage, "_get_process_lock", None)
    ctx = lock(project) if lock else None
    if ctx is not None:
        ctx.__enter__()
    try:
        conn = sqlite3.connect(str(db_path), timeout=60)
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(f"SELECT config, created_at FROM {N.CONFIGS} WHERE run_id = ?",
                                   (run_id,)).fetchone()
                old = json.loads(row[0]) if row else {}
                merged = _merge_config(old if isinstance(old, dict) else {}, config)
                conn.execute(
                    f"INSERT OR REPLACE INTO {N.CONFIGS} (run_id, run_name, config, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (run_id, run, orjson.dumps(utils.serialize_values(merged)),
                     row[1] if row else created_at))
        finally:
            conn.close()
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)


def _copy_files(media_dir: Path, files: list[dict[str, Any]]) -> int:
    copied = 0
    for f in files:
        target = media_dir / f["file_path"]
        if target.is_file() and target.stat().st_size == f["size"]:
            continue  # written by an earlier delivery of the same event
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(f["src"], tmp)
        os.replace(tmp, target)
        copied += 1
    return copied


def _commit_artifact(storage: Any, project: str, run: str, run_id: str,
                     art: Mapping[str, Any]) -> None:
    """One artifact version through trackio's own path (``Run.log_artifact``, local): the
    files staged into the project's content-addressed store, the version committed and
    linked to the run. The same content again is the same version (trackio deduplicates by
    manifest digest, and the run link is unique): a replay adds nothing."""
    from trackio.artifact import Artifact

    artifact = Artifact(name=art["name"], type=art["type"], metadata=art.get("metadata"))
    for f in art["files"]:
        artifact.add_file(f["src"], name=f["path"])
    manifest = artifact._build_manifest(project)
    storage.commit_artifact_version(project=project, name=art["name"], type=art["type"],
                                    description=None, manifest=manifest,
                                    metadata=art.get("metadata"), aliases=[], run_name=run,
                                    run_id=run_id)


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    from trackio import utils
    from trackio.sqlite_storage import SQLiteStorage as S

    project, run, run_id = request["project"], request["run"], request["run_id"]
    copied = _copy_files(Path(utils.MEDIA_DIR), request.get("files") or [])
    rows = request.get("rows") or []
    # Stepless rows after the stepped ones: bulk_log numbers them from the run's highest
    # step before its insert, so they follow the batch's steps instead of landing among them.
    stepped = [r for r in rows if r["step"] is not None]
    for part in (stepped, [r for r in rows if r["step"] is None]):
        if part:
            S.bulk_log(project=project, run=run, run_id=run_id,
                       metrics_list=[r["metrics"] for r in part], steps=[r["step"] for r in part],
                       timestamps=[r["ts"] for r in part], log_ids=[r["log_id"] for r in part])
    system = request.get("system") or []
    if system:
        S.bulk_log_system(project=project, run=run, run_id=run_id,
                          metrics_list=[r["metrics"] for r in system],
                          timestamps=[r["ts"] for r in system],
                          log_ids=[r["log_id"] for r in system])
    alerts = request.get("alerts") or []
    if alerts:
        S.bulk_alert(project=project, run=run, run_id=run_id,
                     titles=[a["title"] for a in alerts], texts=[a["text"] for a in alerts],
                     levels=[a["level"] for a in alerts], steps=[a["step"] for a in alerts],
                     timestamps=[a["ts"] for a in alerts],
                     alert_ids=[a["alert_id"] for a in alerts])
    artifacts = request.get("artifacts") or []
    for art in artifacts:
        _commit_artifact(S, project, run, run_id, art)
    if request.get("config"):
        _write_config(S, utils, project, run, run_id, request["config"], request["created_at"])
    return {"ok": True, "rows": len(rows), "system": len(system), "alerts": len(alerts),
            "artifacts": len(artifacts), "files": copied, "db": str(S.get_project_db_path(project))}


def main() -> int:
    try:
        answer = _serve(json.loads(sys.stdin.read()))
    except Exception as exc:  # reported to the adapter, which asks for a retry
        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0
