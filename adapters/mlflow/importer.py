"""MLflow source: a tracking server, a database store (``sqlite:///…``) or a file store.

Only ``mlflow.MlflowClient`` is used (no fluent API), so an import never touches the
process's active run. Metric histories are read one key at a time, page by page, so a run
with millions of points imports in bounded memory. The same reader serves ``bridge verify``
for runs bridge's MLflow adapter wrote: it recognizes that adapter's bookkeeping
(``summary.<k>`` tags, ``bridge.group``, ``bridge/events.jsonl``) and gives back the original
events. The mapping is documented in ``docs/importers.md``; the names and formats are the
adapter's own (``names``).

No process-wide setting is changed: MLflow opens a file store only when
``MLFLOW_ALLOW_FILE_STORE`` is true and draws a progress bar per downloaded file unless
``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is false, and reads both only from the
environment; every call this importer makes to ``MlflowClient`` runs inside
``sdk_env.scoped_env``, which sets them when the user has not and removes them again when the
call returns. An import is the job of the process that asks for it, so the scope applies
even beside an in-process background sync.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sqlite3
import tempfile
import urllib.parse
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Any, Iterable, Iterator

from bridge.adapters.mlflow import names
from bridge.adapters.mlflow.media_import import media_events
from bridge.adapters.mlflow.names import GROUP_TAG, MLFLOW_PARENT_TAG, NOTE_TAG, RUN_NAME_TAG
from bridge.adapters.mlflow.sdk_env import ScopedClient, scoped_env
from bridge.spool.schema import read_only_uri
from bridge.adapters.importing import (
    ImportError_,
    ImportEvent,
    SourceRun,
    SqlPoints,
    artifact_event,
    expand,
    resolve_source,
)

__all__ = ["MlflowImporter", "tracking_uri"]

_RUN_PAGE = 1000  # runs per search_runs request (MLflow's server caps pages at 1000 here)
_EXPERIMENT_PAGE = 1000
# MLflow settings read from the environment only, given to each call (see the docstring).
_FILE_STORE_ENV = {"MLFLOW_ALLOW_FILE_STORE": "true"}  # reading one to move away from it
_QUIET_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # one bar per file otherwise

log = logging.getLogger("bridge.importers.mlflow")


def _mlflow() -> Any:
    try:
        return importlib.import_module("mlflow")
    except ImportError as exc:
        raise ImportError_(
            "importing from MLflow needs 'mlflow': pip install 'tracking-bridge[mlflow]'"
        ) from exc


def tracking_uri(location: str | Path | None) -> str:
    """A tracking URI from what the user typed: a URI as is, a bare path as a file store."""
    if location is None or str(location) == "":
        raise ImportError_(
            "mlflow: give a tracking URI (http://…, sqlite:///…, file:…) or a path")
    text = str(location)
    if "://" in text or text.startswith(("file:", "databricks")):
        return text
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ImportError_(f"mlflow: {text!r} is neither a URI nor an MLflow file store directory")
    return path.resolve().as_uri()


def _local_path(uri: str) -> Path | None:
    """The directory a ``file:`` URI or a bare path names; None for a remote URI."""
    parts = urllib.parse.urlparse(uri)
    if parts.scheme not in ("", "file") or parts.netloc not in ("", "localhost"):
        return None
    return Path(urllib.request.url2pathname(parts.path))


class MlflowImporter:
    """Runs of an MLflow tracking store, with every metric point, param, tag and artifact.

    ``experiments``: names or ids (default: every active experiment); ``filter``: an MLflow
    search filter (``"metrics.acc > 0.9 and tags.team = 'x'"``); ``page_size``: metric points
    per request; ``trusted_roots``: directories besides a file store where its runs may keep
    artifacts. Artifacts MLflow keeps on this disk are read where they are, and only inside
    the run's artifact directory, which for a file store must lie inside the store (see
    :func:`resolve_source`); refusals are listed in ``warnings``.
    """

    name = "mlflow"

    def __init__(self, location: str | Path | None, experiments: Iterable[str] | None = None,
                 filter: str | None = None, page_size: int = 25_000,
                 artifacts: bool = True, trusted_roots: Iterable[str | Path] = ()) -> None:
        mlflow = _mlflow()
        self.uri = tracking_uri(location)
        # MLflow 3 refuses to open a file store unless allowed; reading one to move away
        # from it is what an import is for. One tqdm bar per downloaded file would bury the
        # import's own progress display.
        self._env = {**(_FILE_STORE_ENV if self.uri.startswith("file:") else {}), **_QUIET_ENV}
        uri = self.uri
        self.client = ScopedClient.create(lambda: mlflow.MlflowClient(tracking_uri=uri),
                                          self._env, force=True)
        self._view = importlib.import_module("mlflow.entities").ViewType
        if isinstance(experiments, str):
            experiments = [experiments]  # one name, not its characters
        self.experiments = list(experiments) if experiments is not None else None
        self.filter = filter or ""
        if page_size <= 0:
            raise ImportError_("mlflow: page_size must be a positive number of points")
        self.page_size = int(page_size)
        self._selects: dict[Path, str] = {}  # _points_select() of each store file
        self.artifacts = bool(artifacts)
        store = _local_path(self.uri) if self.uri.startswith("file:") else None
        self.roots: list[Path] = ([store] if store else []) + [Path(r) for r in trusted_roots]
        self.warnings: list[str] = []  # artifacts skipped, with the reason

    # -- runs ------------------------------------------------------------------------------
    def _experiment_list(self) -> list[Any]:
        if self.experiments is None:
            found, token = [], None
            while True:
                page = self.client.search_experiments(
                    view_type=self._view.ACTIVE_ONLY, max_results=_EXPERIMENT_PAGE,
                    page_token=token)
                found.extend(page)
                token = page.token
                if not token:
                    return found
        out = []
        for ref in self.experiments:
            exp = self.client.get_experiment_by_name(str(ref))
            if exp is None:
                try:
                    exp = self.client.get_experiment(str(ref))
                except Exception as exc:  # MlflowException: not an id either
                    raise ImportError_(f"mlflow: no experiment named or numbered {ref!r}") from exc
            out.append(exp)
        return out

    def runs(self) -> Iterator[SourceRun]:
        """Every active run of the chosen experiments, oldest first (parents before children)."""
        for exp in self._experiment_list():
            token = None
            while True:
                page = self.client.search_runs(
                    [exp.experiment_id], filter_string=self.filter,
                    run_view_type=self._view.ACTIVE_ONLY, max_results=_RUN_PAGE,
                    order_by=["attributes.start_time ASC"], page_token=token)
                for run in page:
                    yield self._source_run(exp.name, run)
                token = page.token
                if not token:
                    break

    def _source_run(self, experiment: str, run: Any) -> SourceRun:
        info, tags = run.info, run.data.tags
        return SourceRun(
            source=self.name,
            source_id=info.run_id,
            project=experiment,
            name=info.run_name or tags.get(RUN_NAME_TAG),
            notes=tags.get(NOTE_TAG) or None,
            group=tags.get(GROUP_TAG) or None,
            start_ms=int(info.start_time or 0),
            end_ms=int(info.end_time) if info.end_time else None,
            status=names.import_status(info.status),
            parent_id=tags.get(MLFLOW_PARENT_TAG) or None,
            handle=run,
        )

    # -- events ----------------------------------------------------------------------------
    def events(self, run: SourceRun) -> Iterator[ImportEvent]:
        """Params, tags, summaries, every metric point (key by key), then media (step images,
        tables: ``media_import``) and artifacts."""
        return expand(self.stream(run))

    def stream(self, run: SourceRun) -> Iterator[ImportEvent | SqlPoints]:
        """:meth:`events`, the points of a ``sqlite:///`` store as :class:`SqlPoints` of
        the ``metrics`` table (read a block at a time and packed: no Python work a point)."""
        mrun = run.handle if run.handle is not None else self.client.get_run(run.source_id)
        at = int(run.start_ms)
        for key, value in sorted(mrun.data.params.items()):
            yield ImportEvent("param", key, at, payload=value)  # a string, as MLflow holds it
        for key, value in sorted(mrun.data.tags.items()):
            if key in (NOTE_TAG, GROUP_TAG):
                continue  # carried by the run's notes and group
            summary = names.summary_key(key)
            if summary is not None:
                yield ImportEvent("summary", summary, at, payload=names.decode_summary(value))
            else:
                yield ImportEvent("tag", key, at, payload=value)
        keys = sorted(mrun.data.metrics)
        db = self._sqlite_file() if keys else None
        select = self._points_select(db) if db is not None else ""
        for key in keys:
            if db is not None:  # the bulk of a run: straight from the table, no extra layer
                yield SqlPoints(db, key, select, (run.source_id, key))
            else:
                yield from self._metric_points(run.source_id, key)
        if self.artifacts:
            yield from self._artifacts(run, mrun)

    def _metric_points(self, run_id: str, key: str) -> Iterator[ImportEvent]:
        for m in self._history(run_id, key):
            yield ImportEvent("metric", key, int(m.timestamp), step=int(m.step),
                              value=float(m.value))

    def _sqlite_file(self) -> Path | None:
        """The SQLite file of a ``sqlite:///`` store, whose ``metrics`` table is read
        directly: MLflow's store builds an ORM object and an entity per point (30x slower)."""
        if not self.uri.startswith("sqlite:///"):
            return None
        path = Path(self.uri[len("sqlite:///"):])
        return path if path.is_file() else None

    def _points_select(self, db: Path) -> str:
        """:data:`_POINTS_SELECT` for ``db``: in a store of several runs, through its index
        on ``(run_uuid, key)`` where it has one (MLflow's ``index_metrics_run_uuid_key_step``).
        SQLite's planner, with no statistics, picks the primary key's ``key`` prefix, which
        reads that key's points of every run in the store for each run imported; in a store
        of one run that is the faster way (its order needs no sort)."""
        if db not in self._selects:
            index = None
            with closing(sqlite3.connect(read_only_uri(db), uri=True)) as conn:
                runs = conn.execute(f"SELECT count(*) FROM {names.RUNS_TABLE}").fetchone()[0]
                indexes = conn.execute(f"PRAGMA index_list({names.METRICS_TABLE})").fetchall()
                for row in indexes if runs > 1 else []:
                    cols = [c[2] for c in conn.execute(f"PRAGMA index_info({_quoted(row[1])})")]
                    if cols[:2] == ["run_uuid", "key"]:
                        index = row[1]
                        break
            self._selects[db] = _POINTS_SELECT.format(
                indexed=f" INDEXED BY {_quoted(index)}" if index else "")
        return self._selects[db]

    def _history(self, run_id: str, key: str) -> Iterator[Any]:
        """One key's points, a page at a time where the store paginates (all three do)."""
        with scoped_env(self._env, force=True):
            store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        if store is None or not hasattr(store, "get_metric_history"):
            yield from self.client.get_metric_history(run_id, key)
            return
        token = None
        while True:
            with scoped_env(self._env, force=True):
                page = store.get_metric_history(run_id, key, max_results=self.page_size,
                                                page_token=token)
            yield from page
            token = getattr(page, "token", None)
            if not token:
                return

    def _local_root(self, mrun: Any) -> Path | None:
        """The run's artifact directory when it is on this disk (None: read through MLflow).

        A file store's ``meta.yaml`` names ``artifact_uri`` and a hostile store can name any
        directory, so it must lie inside the store (or a trusted root); a database or a server
        is trusted with its own artifact location, and files stay inside that directory."""
        local = _local_path(str(getattr(mrun.info, "artifact_uri", "") or ""))
        if local is None or not os.path.lexists(local):
            return local
        if not self.uri.startswith("file:"):
            return resolve_source(local, [local])
        return resolve_source(local, self.roots)

    def _checked(self, run_id: str, infos: Iterable[Any], root: Path | None) -> Iterator[Any]:
        """``infos`` without the entries that resolve outside the run's artifact directory
        on this disk (a planted symlink), refused before MLflow lists or copies them."""
        for info in infos:
            if root is not None:
                try:
                    resolve_source(root / info.path, [root])
                except ImportError_ as exc:
                    self._warn(f"run {run_id}: artifact {info.path!r} refused: {exc}")
                    continue
            yield info

    def _listing(self, run_id: str, path: str, root: Path | None) -> Iterator[Any]:
        for info in self._checked(run_id, self.client.list_artifacts(run_id, path), root):
            if info.is_dir:
                yield from self._listing(run_id, info.path, root)
            else:
                yield info

    def _fetch(self, run_id: str, path: str, root: Path | None, dest: Path) -> Path:
        """The real path of one artifact file: read in place on this disk, else downloaded
        into ``dest`` (and checked to be there)."""
        if root is not None:
            return resolve_source(root / path, [root])
        return resolve_source(self.client.download_artifacts(run_id, path, str(dest)), [dest])

    def _artifacts(self, run: SourceRun, mrun: Any) -> Iterator[ImportEvent]:
        """One artifact per top-level path; files stay on disk until the run is consumed."""
        at = int(run.end_ms or run.start_ms)
        try:
            root = self._local_root(mrun)
        except ImportError_ as exc:
            self._warn(f"run {run.source_id}: artifacts refused: {exc}")
            return
        if root is not None and not root.exists():
            return  # a run that logged no artifact has no directory
        rid = run.source_id
        with tempfile.TemporaryDirectory(prefix="bridge-import-mlflow-") as tmp:
            tops: list[tuple[str, list[tuple[str, str, Path]]]] = []  # (top, [(path, rel, local)])
            for n, top in enumerate(self._checked(rid, self.client.list_artifacts(rid), root)):
                dest = Path(os.path.realpath(tmp)) / str(n)
                dest.mkdir()
                files: list[tuple[str, str, Path]] = []
                listing = self._listing(rid, top.path, root) if top.is_dir else [top]
                for info in listing:
                    try:
                        local = self._fetch(rid, info.path, root, dest)
                    except ImportError_ as exc:
                        self._warn(f"run {rid}: artifact {info.path!r} refused: {exc}")
                        continue
                    if top.is_dir and info.path == names.EVENTS_FILE:
                        yield from _logged_events(local)
                        continue
                    rel = info.path[len(top.path) + 1:] if top.is_dir else info.path
                    files.append((info.path, rel, local))
                tops.append((top.path, files))
            # Step images, log_table tables and bridge's media layout become media events.
            media, claimed = media_events(
                [(path, local) for _, files in tops for path, _, local in files],
                mrun.data.tags, at, lambda why: self._warn(f"run {rid}: {why}"))
            yield from media
            for top_path, files in tops:
                rest = [(rel, local) for path, rel, local in files if path not in claimed]
                if rest:
                    try:
                        yield artifact_event(top_path, rest, at)
                    except ImportError_ as exc:
                        self._warn(f"run {rid}: artifact {top_path!r} refused: {exc}")

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("mlflow import: %s", message)


def _logged_events(path: Path) -> Iterator[ImportEvent]:
    """``bridge/events.jsonl`` (bridge's event log in MLflow) back into ``event`` events."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            step = rec.get("step")
            yield ImportEvent("event", rec.get("name"), int(rec.get("ts_ms") or 0),
                              step=int(step) if step is not None else None,
                              payload=rec.get("payload"))


# One key's points in MLflow's ``metrics`` table, in the order and with the values MLflow's
# own ``get_metric_history`` gives (``is_nan`` rows are NaN): columns as SqlPoints reads them.
# The ORDER BY names the table's columns (m.value), not the output's (NaN's NULL).
# {indexed}: see MlflowImporter._points_select.
_POINTS_SELECT = (
    "SELECT CAST(m.step AS INTEGER) AS step, CAST(m.timestamp AS INTEGER) AS ts_ms, "
    "CASE WHEN m.is_nan THEN NULL ELSE CAST(m.value AS REAL) END AS value "
    f"FROM {SqlPoints.SCHEMA}.{names.METRICS_TABLE} AS m{{indexed}} "
    "WHERE m.run_uuid = ? AND m.key = ? ORDER BY m.timestamp, m.step, m.value")


def _quoted(name: str) -> str:
    """An SQL identifier, quoted (an index name read from the store)."""
    return '"' + name.replace('"', '""') + '"'
