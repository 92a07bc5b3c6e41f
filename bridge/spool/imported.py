"""The spool writer for imported runs: one file per run, complete or absent.

A run is written to ``<target>.partial`` and renamed to ``<target>`` only when every event
is in, so readers and the agent never see half a run; ``abort()`` (or an exception inside
the ``with`` block) removes the partial file. Rows are inserted in chunks, so memory stays
bounded whatever the run's size. Events are encoded with :mod:`bridge.spool.events`, as the
live writer encodes them.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

from bridge.spool import blobs
from bridge.spool.events import INSERT_EVENT, Kind, artifact_payload, encode_payload, metric_row
from bridge.spool.media import resolve_files
from bridge.spool.schema import create_schema

__all__ = ["ImportedRunWriter", "RUN_STATUSES"]

RUN_STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")


class ImportedRunWriter:
    """Writes one imported run; use as a context manager, then :meth:`commit`."""

    def __init__(self, spool_dir: Path, target: Path, meta: dict[str, str],
                 chunk: int = 10_000) -> None:
        self.spool_dir = Path(spool_dir)
        self.target = target
        self.partial = target.with_name(target.name + ".partial")
        self.partial.unlink(missing_ok=True)
        self._chunk = chunk
        self._rows: list[tuple] = []
        self.written = 0
        old = os.umask(0o077)
        try:
            self._conn = sqlite3.connect(self.partial, isolation_level=None)
        finally:
            os.umask(old)
        self._conn.execute("PRAGMA journal_mode=DELETE")
        self._conn.execute("PRAGMA synchronous=OFF")  # the rename in commit() is the commit point
        create_schema(self._conn, {"file_id": target.stem, "host": os.uname().nodename,
                                   "pid": str(os.getpid()),
                                   "created_ms": str(int(time.time() * 1000)),
                                   "journal": "delete", **meta})
        self._conn.execute("BEGIN")

    def __enter__(self) -> "ImportedRunWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()

    def run_row(self, run_id: str, project: str, name: str | None, notes: str | None,
                group: str | None, backends_json: str, start_ms: int, end_ms: int | None,
                status: str) -> None:
        self._conn.execute(
            "INSERT INTO runs (run_id, project, name, notes, group_name, backends, start_ms, "
            "end_ms, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, project, name, notes, group, backends_json, int(start_ms), end_ms,
             status if status in RUN_STATUSES else "FINISHED"))

    def metric(self, run_id: str, key: str, step: int | None, ts_ms: int,
               value: float | None) -> None:
        self._add(metric_row(run_id, key, step, int(ts_ms),
                             float(value) if value is not None else float("nan")))

    def event(self, run_id: str, kind: str, key: str | None, step: int | None, ts_ms: int,
              payload: Any) -> None:
        self._add((run_id, str(kind), key, step, int(ts_ms), None, encode_payload(payload)))

    def artifact(self, run_id: str, name: str, step: int | None, ts_ms: int,
                 files: Iterable[tuple[str, Path]], type: str, source: str) -> None:
        """Copy each ``(relative path, local file)`` into the blob store and record them."""
        stored = []
        for rel, local in files:
            sha, size = blobs.store_file(self.spool_dir, local)
            stored.append({"path": rel, "sha256": sha, "size": size})
        self.event(run_id, Kind.ARTIFACT, name, step, ts_ms,
                   artifact_payload(name, stored, type=type, source=source))

    def media(self, run_id: str, key: str, step: int | None, ts_ms: int, payload: dict,
              files: Iterable[tuple[str, Path | bytes]]) -> None:
        """Copy each ``(reference, local file or bytes)`` into the blob store and record the
        media event, each item's ``{"file": reference}`` replaced by its sha256 and size."""
        stored: dict[str, tuple[str, int]] = {}
        for ref, content in files:
            if isinstance(content, (bytes, bytearray)):
                stored[ref] = blobs.store_bytes(self.spool_dir, bytes(content))
            else:
                stored[ref] = blobs.store_file(self.spool_dir, Path(content))
        self.event(run_id, Kind.MEDIA, key, step, ts_ms, resolve_files(payload, stored))

    def _add(self, row: tuple) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._chunk:
            self.flush_rows()

    def flush_rows(self) -> int:
        """Insert the buffered rows (still inside the file's one transaction)."""
        if self._rows:
            self._conn.executemany(INSERT_EVENT, self._rows)
            self.written += len(self._rows)
            self._rows.clear()
        return self.written

    def commit(self) -> Path:
        """Make the run visible: commit, fsync, 0600, rename to the target."""
        self.flush_rows()
        self._conn.execute("COMMIT")
        self._conn.close()
        with open(self.partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(self.partial, 0o600)
        os.replace(self.partial, self.target)
        return self.target

    def abort(self) -> None:
        try:
            self._conn.close()
        finally:
            self.partial.unlink(missing_ok=True)
