"""The embedded MLflow store's database, created whole or not at all.

MLflow creates a new sqlite store table by table and migration by migration, each in a
transaction of its own: a process killed in between (a ``bridge sync`` stopped while it
opened the store for the first time) leaves a file that every later open refuses ("table …
already exists"), and nothing could be delivered to the embedded store again. So bridge lets
MLflow create it in a file beside it and moves that into place only once MLflow is done,
under a lock (two agents may open it at once); a file a killed creation left is removed.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from bridge.adapters.mlflow.names import sqlite_uri

__all__ = ["create_whole", "store_exists"]

_CREATING = ".creating"  # <db>.creating: MLflow's creation in progress (or killed)


def create_whole(db: Path, mlflow: Any) -> None:
    """Make sure MLflow's store at ``db`` exists, complete (``mlflow``: the module). An
    empty file (a plain ``sqlite3.connect`` leaves one) is taken for no store."""
    if store_exists(db):
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if store_exists(db):  # another process created it meanwhile
            return
        tmp = db.with_name(db.name + _CREATING)
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)  # a killed creation's: no one else holds the lock
        mlflow.MlflowClient(tracking_uri=sqlite_uri(tmp)).search_experiments(max_results=1)
        os.replace(tmp, db)


def store_exists(db: Path) -> bool:
    """Whether MLflow's store at ``db`` is there (an empty file is none)."""
    try:
        return db.stat().st_size > 0
    except FileNotFoundError:
        return False
