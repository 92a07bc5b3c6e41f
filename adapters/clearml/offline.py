"""Reading ClearML offline sessions (a folder or its zip) without the clearml SDK.

A session is opened as :class:`Session`: its ``task.json``, its event lines (``metrics.jsonl``,
``log.jsonl``: one JSON list of events per line) and its ``data/`` files. Files of a folder
are read only through :func:`resolve_source` (a symlink out of the session is refused);
members of a zip are copied out under names chosen here, after their names are checked.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from bridge.adapters.clearml import names as N
from bridge.adapters.importing import resolve_source, safe_relative_path

__all__ = ["Session", "find_sessions", "open_session"]

Warn = Callable[[str], None]


@dataclass
class Session:
    """One offline session: ``path`` is its folder or its zip."""

    path: Path
    task: dict[str, Any]
    is_zip: bool
    # The folder's task.json was cut short (its process died writing it at exit): the task
    # was read from this zip the SDK made of the folder, the events and files from the folder.
    task_from: Path | None = None

    @property
    def task_id(self) -> str:
        return str(self.task.get(N.ID) or self.path.name.removesuffix(N.ZIP_SUFFIX))

    def events(self, name: str, warn: Warn) -> Iterator[dict[str, Any]]:
        """The events of ``metrics.jsonl`` or ``log.jsonl`` in write order; a line that is
        not a JSON list (a crash mid-write) is a warning, the rest is read."""
        for n, line in enumerate(self._lines(name), 1):
            if not line.strip():
                continue
            try:
                batch = json.loads(line)
            except ValueError as exc:
                warn(f"{self.path.name}/{name} line {n} is not JSON ({exc}); skipped")
                continue
            if not isinstance(batch, list):
                batch = [batch]
            for ev in batch:
                if isinstance(ev, dict):
                    yield ev
                else:
                    warn(f"{self.path.name}/{name} line {n}: an entry is not an event; skipped")

    def _lines(self, name: str) -> Iterator[str]:
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf:
                if name not in zf.namelist():
                    return
                with zf.open(name) as fh:
                    for raw in fh:
                        yield raw.decode("utf-8", "replace")
            return
        if not os.path.lexists(self.path / name):
            return
        real = resolve_source(self.path / name, [self.path])
        with open(real, encoding="utf-8", errors="replace") as fh:
            yield from fh

    def data_file(self, rel: str, tmp: Path, n: int) -> Path | None:
        """The real path of ``data/<rel>`` (copied into ``tmp`` for a zip); None when the
        session does not hold it; ImportError_ for a name or link that leaves the session."""
        rel = safe_relative_path(rel)
        member = f"{N.DATA_DIR}/{rel}"
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf:
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    return None
                out = tmp / f"member-{n}{Path(rel).suffix}"
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                return out
        local = self.path / N.DATA_DIR / rel
        if not os.path.lexists(local):
            return None
        real = resolve_source(local, [self.path])
        return real if real.is_file() else None


def open_session(path: Path) -> Session:
    """A session folder or zip with its ``task.json``; ValueError/OSError when it is not one.

    A folder whose ``task.json`` does not parse, beside the zip the SDK made of it, takes
    the zip's (``Session.task_from``): a process killed at exit can leave the folder's cut
    short, and the zip holds no ``metrics.jsonl``, so neither alone has the whole session."""
    task_from = None
    if path.is_dir():
        real = resolve_source(path / N.TASK_FILE, [path])
        try:
            task = json.loads(real.read_text(encoding="utf-8"))
        except ValueError:
            twin = path.with_name(path.name + N.ZIP_SUFFIX)
            if not _is_session_zip(twin):
                raise
            task, task_from = _zip_task(twin), twin
        is_zip = False
    else:
        task = _zip_task(path)
        is_zip = True
    if not isinstance(task, dict):
        raise ValueError(f"{N.TASK_FILE} is not a JSON object")
    return Session(path, task, is_zip, task_from)


def _zip_task(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(N.TASK_FILE).decode("utf-8"))


def _is_session_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return N.TASK_FILE in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def find_sessions(location: Path) -> list[Path]:
    """Session folders and zips at ``location``: a session itself, or any folder below it
    (a cache dir's ``offline/``). A session's own ``data/`` is not searched."""
    if location.is_file():
        return [location] if _is_session_zip(location) else []
    found: list[Path] = []
    for root, dirs, files in os.walk(location):
        here = Path(root)
        if N.TASK_FILE in files:
            found.append(here)
            dirs[:] = []
            continue
        dirs.sort()
        for name in sorted(files):
            if name.endswith(N.ZIP_SUFFIX) and _is_session_zip(here / name):
                found.append(here / name)
    return found

