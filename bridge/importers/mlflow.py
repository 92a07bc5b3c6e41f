"""MLflow source: a tracking server, a database store (``sqlite:///…``) or a file store.

Only ``mlflow.MlflowClient`` is used (no fluent API), so an import never touches the
process's active run. Metric histories are read one key at a time, page by page, so a run
with millions of points imports in bounded memory. The same reader serves ``bridge verify``
for runs bridge's MLflow adapter wrote: it recognizes that adapter's bookkeeping
(``summary.<k>`` tags, ``bridge.group``, ``bridge/events.jsonl``) and gives back the original
events. The mapping is documented in ``docs/importers.md``.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from bridge.importers.base import ImportError_, ImportEvent, SourceRun, artifact_event

__all__ = ["MlflowImporter", "tracking_uri"]

NOTE_TAG = "mlflow.note.content"
PARENT_TAG = "mlflow.parentRunId"
GROUP_TAG = "bridge.group"
SUMMARY_PREFIX = "summary."
EVENTS_FILE = "bridge/events.jsonl"

_STATUS = {"FINISHED": "FINISHED", "FAILED": "FAILED", "KILLED": "KILLED",
           "RUNNING": "RUNNING", "SCHEDULED": "RUNNING"}
_RUN_PAGE = 1000  # runs per search_runs request (MLflow's server caps pages at 1000 here)
_EXPERIMENT_PAGE = 1000


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


def _summary_value(text: str) -> Any:
    """The adapter writes strings as is and other values as JSON: decode what is JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class MlflowImporter:
    """Runs of an MLflow tracking store, with every metric point, param, tag and artifact.

    ``experiments``: names or ids (default: every active experiment); ``filter``: an MLflow
    search filter (``"metrics.acc > 0.9 and tags.team = 'x'"``); ``page_size``: metric points
    per request.
    """

    name = "mlflow"

    def __init__(self, location: str | Path | None, experiments: Iterable[str] | None = None,
                 filter: str | None = None, page_size: int = 25_000,
                 artifacts: bool = True) -> None:
        mlflow = _mlflow()
        self.uri = tracking_uri(location)
        if self.uri.startswith("file:"):
            # MLflow 3 refuses to open a file store unless allowed; reading one to move
            # away from it is what an import is for. Only set when the user has not.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # One tqdm bar per downloaded file would bury the import's own progress display.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        self._view = importlib.import_module("mlflow.entities").ViewType
        if isinstance(experiments, str):
            experiments = [experiments]  # one name, not its characters
        self.experiments = list(experiments) if experiments is not None else None
        self.filter = filter or ""
        if page_size <= 0:
            raise ImportError_("mlflow: page_size must be a positive number of points")
        self.page_size = int(page_size)
        self.artifacts = bool(artifacts)

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
            name=info.run_name or tags.get("mlflow.runName"),
            notes=tags.get(NOTE_TAG) or None,
            group=tags.get(GROUP_TAG) or None,
            start_ms=int(info.start_time or 0),
            end_ms=int(info.end_time) if info.end_time else None,
            status=_STATUS.get(str(info.status), "FINISHED"),
            parent_id=tags.get(PARENT_TAG) or None,
            handle=run,
        )

    # -- events ----------------------------------------------------------------------------
    def events(self, run: SourceRun) -> Iterator[ImportEvent]:
        """Params, tags, summaries, every metric point (key by key), then artifacts."""
        mrun = run.handle if run.handle is not None else self.client.get_run(run.source_id)
        at = int(run.start_ms)
        for key, value in sorted(mrun.data.params.items()):
            yield ImportEvent("param", key, at, payload=value)  # a string, as MLflow holds it
        for key, value in sorted(mrun.data.tags.items()):
            if key in (NOTE_TAG, GROUP_TAG):
                continue  # carried by the run's notes and group
            if key.startswith(SUMMARY_PREFIX) and len(key) > len(SUMMARY_PREFIX):
                yield ImportEvent("summary", key[len(SUMMARY_PREFIX):], at,
                                  payload=_summary_value(value))
            else:
                yield ImportEvent("tag", key, at, payload=value)
        for key in sorted(mrun.data.metrics):
            yield from self._metric_points(run.source_id, key)
        if self.artifacts:
            yield from self._artifacts(run)

    def _metric_points(self, run_id: str, key: str) -> Iterator[ImportEvent]:
        for m in self._history(run_id, key):
            yield ImportEvent("metric", key, int(m.timestamp), step=int(m.step),
                              value=float(m.value))

    def _history(self, run_id: str, key: str) -> Iterator[Any]:
        """One key's points, a page at a time where the store paginates (all three do)."""
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        if store is None or not hasattr(store, "get_metric_history"):
            yield from self.client.get_metric_history(run_id, key)
            return
        token = None
        while True:
            page = store.get_metric_history(run_id, key, max_results=self.page_size,
                                            page_token=token)
            yield from page
            token = getattr(page, "token", None)
            if not token:
                return

    def _listing(self, run_id: str, path: str | None) -> Iterator[Any]:
        for info in self.client.list_artifacts(run_id, path):
            if info.is_dir:
                yield from self._listing(run_id, info.path)
            else:
                yield info

    def _artifacts(self, run: SourceRun) -> Iterator[ImportEvent]:
        """One artifact per top-level path; files stay on disk until the run is consumed."""
        at = int(run.end_ms or run.start_ms)
        with tempfile.TemporaryDirectory(prefix="bridge-import-mlflow-") as tmp:
            for n, top in enumerate(self.client.list_artifacts(run.source_id)):
                dest = Path(tmp) / str(n)
                dest.mkdir()
                files: list[tuple[str, Path]] = []
                listing = self._listing(run.source_id, top.path) if top.is_dir else [top]
                for info in listing:
                    local = Path(self.client.download_artifacts(run.source_id, info.path,
                                                                str(dest)))
                    if top.is_dir and info.path == EVENTS_FILE:
                        yield from _logged_events(local)
                        continue
                    rel = info.path[len(top.path) + 1:] if top.is_dir else info.path
                    files.append((rel, local))
                if files:
                    yield artifact_event(top.path, files, at)


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
