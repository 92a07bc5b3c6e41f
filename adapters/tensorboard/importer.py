"""TensorBoard source: a log directory of ``events.out.tfevents.*`` files.

Each directory holding event files is one run (TensorBoard's own notion of a run). Files are
read record by record with TensorBoard's ``LegacyEventFileLoader``, which parses records
without upgrading them, so the legacy values torch's ``SummaryWriter`` writes (``simple_value``
scalars, ``image``, ``histo``, ``audio``) keep every field they have (an audio clip's sample
rate, a histogram's sum), and the tensor values of ``tf.summary`` v2 arrive as written.
Scalars become metric points (step and wall time kept), hparams session info params;
images, histograms, audio, video, text, PR curves and other tensors become media events
(:mod:`bridge.adapters.tensorboard.media`), and the projector's embeddings (files beside
the event files) tables (:mod:`bridge.adapters.tensorboard.projector`). What is not imported
(graphs, run metadata, a custom-scalars layout, an unreadable summary) is counted per
plugin: the counts are the run's ``tensorboard.skipped`` tag and an importer warning, never
dropped unsaid.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import struct
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from bridge.adapters.tensorboard.media import Skipped, legacy_media, tensor_media
from bridge.adapters.tensorboard.projector import embeddings
from bridge.adapters.tensorboard.names import (
    ARTIFACTS_DIR,
    EVENT_MARK,
    HPARAMS_START,
    LEGACY_AUDIO,
    LEGACY_HISTO,
    LEGACY_IMAGE,
    LOGDIR_TAG,
    NOT_SUMMARIES,
    PLUGIN_CUSTOM_SCALARS,
    PLUGIN_HPARAMS,
    PLUGIN_SCALARS,
    SKIPPED_TAG,
    SUMMARY_PREFIX,
    integer_params,
    read_run_marker,
    tag_of_text,
)
from bridge.adapters.importing import (ImportError_, ImportEvent, SourceRun, artifact_event,
                                      resolve_source)

__all__ = ["TensorboardImporter", "event_files", "find_runs", "last_record"]

log = logging.getLogger("bridge.importers.tensorboard")


def _tb(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError_(
            "importing TensorBoard logs needs 'tensorboard': "
            "pip install 'tracking-bridge[tensorboard]'"
        ) from exc


def event_files(directory: Path) -> list[Path]:
    """A run's event files in write order (their names start with the creation time)."""
    return sorted(p for p in directory.iterdir() if EVENT_MARK in p.name and p.is_file())


def find_runs(logdir: Path) -> Iterator[Path]:
    """Every directory under ``logdir`` (itself included) that holds event files."""
    for root, dirs, files in os.walk(logdir):
        dirs.sort()
        if any(EVENT_MARK in f for f in files):
            yield Path(root)


def last_record(path: Path) -> bytes | None:
    """The last complete TFRecord of a file, found by hopping over record headers only
    (cheap even for a large file: no payload is parsed). A torn tail is ignored."""
    size = path.stat().st_size
    last: tuple[int, int] | None = None
    with open(path, "rb") as fh:
        offset = 0
        while offset + 12 <= size:
            fh.seek(offset)
            (length,) = struct.unpack("<Q", fh.read(8))
            end = offset + 12 + length + 4
            if end > size:
                break
            last = (offset + 12, length)
            offset = end
        if last is None:
            return None
        fh.seek(last[0])
        return fh.read(last[1])


def _ms(wall_time: float) -> int:
    return int(round(wall_time * 1000))


class TensorboardImporter:
    """Runs of a TensorBoard log directory: scalars, hparams and media."""

    name = "tensorboard"

    def __init__(self, location: str | Path | None, project: str = "tensorboard") -> None:
        if location is None or not Path(location).expanduser().is_dir():
            raise ImportError_(f"tensorboard: {location!r} is not a log directory")
        self.logdir = Path(location).expanduser().resolve()
        self.project = project
        self.warnings: list[str] = []  # event files skipped, with the reason
        loader = _tb("tensorboard.backend.event_processing.event_file_loader")
        self._loader = loader.LegacyEventFileLoader  # records as written: see the docstring
        self._event_pb2 = _tb("tensorboard.compat.proto.event_pb2")
        self._tensor_util = _tb("tensorboard.util.tensor_util")
        self._plugin_data = _tb("tensorboard.plugins.hparams.plugin_data_pb2")
        self._json_format = _tb("google.protobuf.json_format")

    # -- runs ------------------------------------------------------------------------------
    def runs(self) -> Iterator[SourceRun]:
        """One run per directory with event files, named by its path inside the log dir; its
        id comes from the directory's absolute path, so two log dirs with the same layout
        (``train/``, ``validation/``) never collide (re-importing the same path finds the
        same runs)."""
        for directory in find_runs(self.logdir):
            files = self._inside(event_files(directory))
            if not files:
                continue  # only directories named like event files
            rel = directory.relative_to(self.logdir).as_posix()
            if rel == ".":
                rel = self.logdir.name  # the log dir itself is a run: name it after itself
            start = self._first_wall_time(files[0])
            end = self._last_wall_time(files)
            marker = read_run_marker(directory) or {}  # a run bridge's destination wrote
            yield SourceRun(
                source=self.name, source_id=marker.get("run_id") or str(directory.resolve()),
                project=self.project, name=marker.get("name") or rel,
                start_ms=min(start, end) if start is not None else end, end_ms=end,
                status=marker.get("status") or "FINISHED",
                handle=files, extra_tags={LOGDIR_TAG: str(directory)},
            )

    def _inside(self, files: list[Path]) -> list[Path]:
        """Event files whose real path is inside the log dir: one symlinked out of it would
        import another run's scalars and images from anywhere on the disk."""
        kept = []
        for path in files:
            try:
                kept.append(resolve_source(path, [self.logdir]))
            except ImportError_ as exc:
                self.warnings.append(f"event file {path.name} refused: {exc}")
                log.warning("tensorboard import: %s", self.warnings[-1])
        return kept

    def _first_wall_time(self, path: Path) -> int | None:
        for event in self._loader(str(path)).Load():
            return _ms(event.wall_time)
        return None

    def _last_wall_time(self, files: list[Path]) -> int:
        """The wall time of the run's last record (file times change when logs are copied)."""
        for path in reversed(files):
            record = last_record(path)
            if record is not None:
                try:
                    return _ms(self._event_pb2.Event.FromString(record).wall_time)
                except Exception:  # a corrupt tail record: fall back to an earlier file
                    continue
        return max(_ms(p.stat().st_mtime) for p in files)

    # -- events ----------------------------------------------------------------------------
    def events(self, run: SourceRun) -> Iterator[ImportEvent]:
        """Every scalar point, hparams summary and media summary, file by file, record by
        record; what is not imported is counted (``tensorboard.skipped``, a warning)."""
        files = run.handle or self._inside(event_files(Path(run.extra_tags[LOGDIR_TAG])))
        plugins: dict[str, str] = {}  # tag -> plugin; v2 writers put metadata on the first
        skipped: Counter[str] = Counter()
        marker = read_run_marker(Path(run.extra_tags[LOGDIR_TAG]))  # a run bridge wrote
        ints = integer_params(marker)
        last_ms = int(run.start_ms)
        for path in files:
            for event in self._loader(str(path)).Load():
                ts = _ms(event.wall_time)
                last_ms = max(last_ms, ts)
                what = event.WhichOneof("what")
                if what != "summary":
                    if what in NOT_SUMMARIES:
                        skipped[NOT_SUMMARIES[what]] += 1
                    continue
                for value in event.summary.value:
                    for ev in self._value(value, int(event.step), ts, plugins, skipped):
                        if marker is not None:
                            ev = self._bridge_form(ev, ints)
                        yield ev
        yield from embeddings(Path(run.extra_tags[LOGDIR_TAG]), [self.logdir], skipped)
        if marker is not None:
            yield from self._artifacts(Path(run.extra_tags[LOGDIR_TAG]), last_ms, skipped)
        if skipped:
            counts = ",".join(f"{k}:{n}" for k, n in sorted(skipped.items()))
            self.warnings.append(f"run {run.name}: not imported ({counts}): no bridge form, "
                                 f"empty or unreadable; counted in tag {SKIPPED_TAG}")
            log.warning("tensorboard import: %s", self.warnings[-1])
            yield ImportEvent("tag", SKIPPED_TAG, last_ms, payload=counts)

    def _value(self, value: Any, step: int, ts: int, plugins: dict[str, str],
               skipped: Counter[str]) -> Iterator[ImportEvent]:
        tag = value.tag
        if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
            plugins[tag] = value.metadata.plugin_data.plugin_name
        plugin = plugins.get(tag, "")
        kind = value.WhichOneof("value")
        try:
            if kind == "simple_value":
                yield ImportEvent("metric", tag, ts, step=step, value=float(value.simple_value))
            elif kind in (LEGACY_IMAGE, LEGACY_HISTO, LEGACY_AUDIO):
                yield legacy_media(value, step, ts)
            elif plugin == PLUGIN_HPARAMS:
                if tag == HPARAMS_START:
                    yield from self._hparams(value.metadata.plugin_data.content, ts)
            elif plugin == PLUGIN_CUSTOM_SCALARS or kind != "tensor":
                skipped[plugin or kind or "unknown"] += 1
            elif plugin == PLUGIN_SCALARS:
                array = self._tensor_util.make_ndarray(value.tensor)
                if array.size == 1:
                    yield ImportEvent("metric", tag, ts, step=step,
                                      value=float(array.reshape(-1)[0]))
                else:
                    skipped["scalars(non-scalar)"] += 1
            else:
                array = self._tensor_util.make_ndarray(value.tensor)
                yield tensor_media(plugin, value, array, step, ts)
        except Skipped as why:
            skipped[str(why)] += 1
        except (ImportError_, ValueError, TypeError, IndexError, KeyError, OverflowError) as exc:
            # a summary whose bytes do not parse: counted, the rest of the run imports
            log.debug("tensorboard import: %s at step %s: %s", tag, step, exc)
            skipped[f"{plugin or kind or 'unknown'}(unreadable)"] += 1

    @staticmethod
    def _artifacts(directory: Path, ts: int, skipped: Counter[str]) -> Iterator[ImportEvent]:
        """The files bridge's destination copied to ``artifacts/<name>/<path>``: one
        artifact per name (TensorBoard itself shows none of them)."""
        root = directory / ARTIFACTS_DIR
        if not root.is_dir() or root.is_symlink():
            return
        for named in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
            files = [(f.relative_to(named).as_posix(), f) for f in sorted(named.rglob("*"))
                     if f.is_file() and not f.name.startswith(".")]
            try:
                yield artifact_event(named.name, files, ts)
            except ImportError_:
                skipped["artifacts(refused)"] += 1

    @staticmethod
    def _bridge_form(ev: ImportEvent, ints: frozenset[str]) -> ImportEvent:
        """An event of a run bridge's TensorBoard destination wrote, as bridge logged it:
        an integer param, a tag (a ``tags/<key>`` text summary), a summary value
        (``summary/<key>``, a scalar or text)."""
        if ev.kind == "param" and ev.key in ints and isinstance(ev.payload, float):
            return replace(ev, payload=int(ev.payload))
        key = ev.key or ""
        if key.startswith(SUMMARY_PREFIX) and len(key) > len(SUMMARY_PREFIX):
            if ev.kind == "metric":
                return ImportEvent("summary", key[len(SUMMARY_PREFIX):], ev.ts_ms,
                                   payload=ev.value)
            payload = ev.payload if isinstance(ev.payload, dict) else {}
            if ev.kind == "media" and payload.get("type") == "text":
                return ImportEvent("summary", key[len(SUMMARY_PREFIX):], ev.ts_ms,
                                   payload=_summary_text((payload.get("data") or {}).get("text")))
        tag = tag_of_text(ev.key or "") if ev.kind == "media" else None
        if tag is not None and isinstance(ev.payload, dict) and ev.payload.get("type") == "text":
            text = (ev.payload.get("data") or {}).get("text")
            return ImportEvent("tag", tag, ev.ts_ms, payload=text)
        return ev

    def _hparams(self, content: bytes, ts: int) -> Iterator[ImportEvent]:
        data = self._plugin_data.HParamsPluginData.FromString(content)
        for key in sorted(data.session_start_info.hparams):
            hp = data.session_start_info.hparams[key]
            py = self._json_format.MessageToDict(hp)
            if isinstance(py, float) and not math.isfinite(py):
                py = str(py)
            yield ImportEvent("param", key, ts, payload=py)


def _summary_text(text: Any) -> Any:
    """A summary value the destination wrote as text: JSON for lists, dicts, booleans and
    null (``json.dumps``), the string itself otherwise."""
    if not isinstance(text, str):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (list, dict, bool)) or value is None else text
