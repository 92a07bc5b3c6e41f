"""TensorBoard backend: each bridge run becomes a run directory of event files.

Layout: ``<logdir>/<project>/<run name>_<run id[:8]>/`` (the run id alone when the run has
no name), so ``tensorboard --logdir <logdir>`` groups the runs by project. ``logdir`` is the
backend option (default: ``tensorboard`` inside the spool directory). The directory is
fixed when the run is first opened (the agent keeps it as the remote id), so renaming a run
later does not split it.

Each ``export`` writes its whole batch as ONE new event file, written under a temporary
name and renamed into place (:mod:`bridge.adapters.tensorboard.writer`), numbered by the
adapter's state: the number is saved with the agent's cursor only once the batch is
confirmed, so a sync killed before that hands the same events over again under the same
number, and the new file replaces the old one: no point is written twice. Dead letters
redelivered later get a new number (the confirmed batches moved it on), never replacing a
batch. A marker file (``names.RUN_MARKER``) names the bridge run a directory holds, so
``bridge verify`` finds it with the TensorBoard importer.

- metric points (system metrics too) are float64 scalars with their step and their own
  wall time; a point without a step is numbered per key (TensorBoard needs a step);
- params are the HParams plugin's session (:mod:`bridge.adapters.tensorboard.hparams`),
  rewritten whole when params change; ``close_run`` writes the session end (status, end
  time) in a file that sorts after every batch;
- tags, notes, text, dict and event events and the platform facts are text summaries
  (``names.TEXT_TAG``); the run summary is scalars (numbers) or text under ``summary/``;
- media: images (and GIF videos) as images, histograms, WAV audio and text in TensorBoard's
  own summary forms; other media are refused, with the reason (dead letters);
- artifacts are copied to ``<run dir>/artifacts/<name>/<path>`` (TensorBoard has no
  artifact store); models and datasets are refused.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, ClassVar, Sequence

from bridge.adapters.base import (
    AdapterError,
    BaseAdapter,
    Event,
    ExportResult,
    Kind,
    Limits,
    RunInfo,
)
from bridge.adapters.importing import ImportError_, safe_relative_path
from bridge.adapters.tensorboard import names as N
from bridge.adapters.tensorboard.hparams import HParams, encode_params
from bridge.adapters.tensorboard.writer import (
    TMP_PREFIX,
    EventFile,
    TMP_SUFFIX,
    Protos,
    image_size,
    remove_torn,
    write_event_file,
)

__all__ = ["TensorboardAdapter"]

_OPTIONS = frozenset({"logdir", "spool_dir"})
_WAV = frozenset({"audio/wav", "audio/x-wav", "audio/wave"})


class _Refused(Exception):
    """An event TensorBoard cannot hold; ``str(exc)`` is the dead letter's reason."""


class TensorboardAdapter(BaseAdapter):
    """Writes bridge runs as TensorBoard event files (see the module docstring)."""

    name: ClassVar[str] = "tensorboard"
    limits: ClassVar[Limits] = Limits(max_events=1000)

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise AdapterError(f"tensorboard: unknown option(s) {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(sorted(_OPTIONS))}")
        logdir = options.get("logdir")
        if not logdir:
            if not options.get("spool_dir"):
                raise AdapterError("tensorboard: needs a logdir (or a spool_dir to put it in)")
            logdir = Path(options["spool_dir"]) / N.DEFAULT_LOGDIR
        self.logdir = Path(logdir).expanduser().resolve()
        self.protos = Protos()
        self.hparams = HParams()

    # -- where a run lives -----------------------------------------------------------------
    def _relative(self, run: RunInfo) -> str:
        if run.remote_id:
            return run.remote_id
        return f"{N.project_dir_name(run.project)}/{N.run_dir_name(run.name, run.run_id)}"

    def _run_dir(self, run: RunInfo) -> Path:
        try:
            return self.logdir / safe_relative_path(self._relative(run))
        except ImportError_ as exc:  # a remote id that is not a path inside the log dir
            raise AdapterError(f"tensorboard: {exc}") from exc

    def run_url(self, run: RunInfo, remote_id: str) -> str | None:
        return str(self.logdir / remote_id)

    def _write_marker(self, run: RunInfo, directory: Path, status: str,
                      end_ms: int | None) -> None:
        """The run marker (``names.RUN_MARKER``), atomically: the importer reads the bridge
        run id, name, status and integer params from it."""
        ints = [k for k, (form, v) in run.state.get("params", {}).items()
                if form == "number" and isinstance(v, int)]
        marker = N.make_run_marker(run.run_id, run.project, run.name, run.group,
                                   run.start_ms, status, end_ms, ints)
        tmp = directory / f"{TMP_PREFIX}{uuid.uuid4().hex}{TMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(marker, fh, sort_keys=True)
        os.replace(tmp, directory / N.RUN_MARKER)

    # -- contract --------------------------------------------------------------------------
    def open_run(self, run: RunInfo) -> str:
        """Create (or find) the run directory and its marker; returns the directory's path
        under the log dir, the remote id."""
        directory = self._run_dir(run)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        remove_torn(directory)
        marker = N.read_run_marker(directory)
        if marker is not None and marker["run_id"] != run.run_id:
            raise AdapterError(f"tensorboard: {directory} holds run {marker['run_id']}, "
                               f"not {run.run_id}")
        if marker is None:  # the status is the session's: RUNNING until close_run
            self._write_marker(run, directory, "RUNNING", None)
        return self._relative(run)

    def export(self, run: RunInfo, batch: Sequence[Event]) -> ExportResult:
        directory = self._run_dir(run)
        if not directory.is_dir():
            self.open_run(run)
        number = int(run.state.get("next_file", 0))
        auto = dict(run.state.get("auto_step", {}))
        params = dict(run.state.get("params", {}))
        rejected: dict[tuple[str, int], str] = {}
        params_ms: int | None = None
        out = EventFile(self.protos, directory / N.batch_file_name(run.start_ms, number))
        try:
            out.write(self.protos.file_version(run.start_ms))
            for ev in batch:
                try:
                    if ev.kind == Kind.PARAM and ev.key is not None:
                        params.update(encode_params(ev.key, ev.payload))
                        params_ms = max(params_ms or ev.ts_ms, ev.ts_ms)
                    elif ev.kind == Kind.ARTIFACT:
                        self._artifact(run, directory, ev)
                    else:
                        out.write(self._record(run, ev, auto))
                except _Refused as why:
                    rejected[ev.uid] = str(why)
            if params_ms is not None:
                start = self.hparams.start(params, run.start_ms)
                out.write(self.protos.event(params_ms, 0, [start]))
            if out.records > 1:
                out.commit()
                run.state["next_file"] = number + 1
            else:  # nothing but artifacts or refusals: no file
                out.discard()
        except BaseException:
            out.discard()
            raise
        run.state["auto_step"] = auto
        run.state["params"] = params
        if params_ms is not None:  # the marker names the integer params
            marker = N.read_run_marker(directory) or {}
            self._write_marker(run, directory, marker.get("status") or run.status,
                               marker.get("end_ms"))
        return ExportResult.success(rejected)

    def close_run(self, run: RunInfo, status: str, end_time_ms: int) -> None:
        """The HParams session end (status, end time) with the session start (so a run
        without params is a session too), in a file of its own: writing it again replaces
        it. The marker records the status."""
        directory = self._run_dir(run)
        if not directory.is_dir():
            self.open_run(run)
        start = self.hparams.start(dict(run.state.get("params", {})), run.start_ms)
        end = self.hparams.end(status, end_time_ms)
        records = [self.protos.file_version(run.start_ms),
                   self.protos.event(end_time_ms, 0, [start]),
                   self.protos.event(end_time_ms, 0, [end])]
        write_event_file(self.protos, directory / N.batch_file_name(run.start_ms,
                                                                    N.CLOSE_FILE_KEY), records)
        self._write_marker(run, directory, status, end_time_ms)

    # -- events ----------------------------------------------------------------------------
    def _record(self, run: RunInfo, ev: Event, auto: dict[str, int]) -> Any:
        """The TensorBoard event of a spool event, or :class:`_Refused`."""
        kind = ev.kind
        if kind == Kind.METRIC and ev.key is not None:
            value = ev.value if ev.value is not None else math.nan
            return self.protos.event(ev.ts_ms, self._step(ev, auto),
                                    [self.protos.scalar(ev.key, value)])
        if kind in N.TEXT_TAG:
            prefix = N.TEXT_TAG[kind]
            tag = prefix + ev.key if prefix.endswith("/") and ev.key else prefix
            text = ev.payload if isinstance(ev.payload, str) else json.dumps(
                ev.payload, sort_keys=True, ensure_ascii=False)
            return self.protos.event(ev.ts_ms, ev.step or 0, [self.protos.text(tag, text)])
        if kind == Kind.SUMMARY and ev.key is not None:
            tag = N.SUMMARY_PREFIX + ev.key
            v = ev.payload
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                value = self.protos.scalar(tag, float(v))
            else:
                value = self.protos.text(tag, v if isinstance(v, str) else json.dumps(v))
            return self.protos.event(ev.ts_ms, ev.step or 0, [value])
        if kind == Kind.MEDIA and ev.key is not None:
            return self.protos.event(ev.ts_ms, self._step(ev, auto),
                                    [self._media(run, ev.key, ev.payload or {})])
        reason = N.REFUSED.get(str(kind))
        raise _Refused(reason or N.REFUSED["kind"].format(kind=kind))

    @staticmethod
    def _step(ev: Event, auto: dict[str, int]) -> int:
        """The point's step; a stepless point gets the next number of its key, 0, 1, ...
        (the count is saved with the cursor, so a replayed batch numbers its points the
        same)."""
        if ev.step is not None:
            return int(ev.step)
        n = auto.get(ev.key or "", 0)
        auto[ev.key or ""] = n + 1
        return n

    def _blob(self, run: RunInfo, item: dict[str, Any]) -> bytes:
        try:
            return run.blob_path(item["sha256"]).read_bytes()
        except (OSError, AdapterError, KeyError) as exc:
            raise _Refused(N.REFUSED["blob"].format(sha256=item.get("sha256"))) from exc

    def _media(self, run: RunInfo, key: str, payload: dict[str, Any]) -> Any:
        mtype = payload.get("type")
        items = [i for i in payload.get("items") or () if isinstance(i, dict)]
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        if mtype == "video":
            bad = [i.get("mime") for i in items if i.get("mime") != "image/gif"]
            if bad or not items:
                raise _Refused(N.REFUSED["video"].format(mime=bad[0] if bad else "nothing"))
            mtype = "image"
        if mtype == "image" and items:
            blobs = [self._blob(run, i) for i in items]
            width = int(items[0].get("width") or 0)
            height = int(items[0].get("height") or 0)
            if not (width and height):
                width, height = image_size(blobs[0])
            return self.protos.images(key, blobs, width, height)
        if mtype == "histogram" and isinstance(data.get("edges"), list) \
                and isinstance(data.get("counts"), list) \
                and len(data["edges"]) == len(data["counts"]) + 1 and data["counts"]:
            return self.protos.histogram(key, data["edges"], data["counts"])
        if mtype == "audio" and items:
            bad = [i.get("mime") for i in items if i.get("mime") not in _WAV]
            if bad:
                raise _Refused(N.REFUSED["audio"].format(mime=bad[0]))
            return self.protos.audio(key, [(self._blob(run, i), str(i.get("caption") or ""))
                                           for i in items])
        if mtype == "text" and isinstance(data.get("text"), str):
            return self.protos.text(key, data["text"])
        raise _Refused(N.REFUSED["media"].format(type=mtype))

    def _artifact(self, run: RunInfo, directory: Path, ev: Event) -> None:
        """Each file to ``<run dir>/artifacts/<name>/<path>``, atomically (a replay
        replaces it with the same bytes)."""
        payload = ev.payload if isinstance(ev.payload, dict) else {}
        name = str(payload.get("name") or ev.key or "artifact")
        for f in payload.get("files") or ():
            try:
                rel = safe_relative_path(f"{name}/{f['path']}")
            except (ImportError_, KeyError) as exc:
                raise _Refused(N.REFUSED["path"].format(path=f.get("path"))) from exc
            try:
                source = run.blob_path(f["sha256"])
            except (AdapterError, KeyError) as exc:
                raise _Refused(N.REFUSED["blob"].format(sha256=f.get("sha256"))) from exc
            if not source.is_file():
                raise _Refused(N.REFUSED["blob"].format(sha256=f.get("sha256")))
            target = directory / N.ARTIFACTS_DIR / rel
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = target.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}{TMP_SUFFIX}"
            shutil.copyfile(source, tmp)
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
