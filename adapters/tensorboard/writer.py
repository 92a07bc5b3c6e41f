"""TensorBoard's own protos and record writer, without TensorFlow: summaries and event files.

Every summary is a tensor value with its plugin's metadata, in the form TensorBoard's
plugins (and bridge's importer, :mod:`bridge.adapters.tensorboard.media`) read: scalars as
float64 (a float32 ``simple_value`` would change the spool's values), text as a string
tensor, images as ``[width, height, encoded, ...]``, histograms as ``[k, 3]`` float64
(left edge, right edge, count), audio as ``[k, 2]`` (WAV clip, label).

An event file is written under a temporary name, synced, then renamed into place
(:class:`EventFile`): a reader sees either the old file or the new one, never half a
batch, and writing the same name again replaces it.
"""

from __future__ import annotations

import os
import struct
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

from bridge.adapters.base import require
from bridge.adapters.tensorboard.names import FILE_VERSION

__all__ = ["EventFile", "Protos", "TMP_PREFIX", "TMP_SUFFIX", "image_size", "remove_torn",
           "write_event_file"]

TMP_PREFIX = ".bridge-writing-"  # a file being written; left behind only by a killed sync
TMP_SUFFIX = ".tmp"


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG, GIF or JPEG header; (0, 0) when unknown (TensorBoard
    shows the image either way: the sizes are informational)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:4] == b"GIF8" and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:3] == b"\xff\xd8\xff":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                break
            marker, size = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                          0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return int(w), int(h)
            i += 2 + size
    return 0, 0


class Protos:
    """Builds TensorBoard ``Event`` and ``Summary`` protos with the tensorboard package."""

    def __init__(self) -> None:
        self.event_pb2 = require("tensorboard.compat.proto.event_pb2", "tensorboard")
        self.summary_pb2 = require("tensorboard.compat.proto.summary_pb2", "tensorboard")
        self.tensor_util = require("tensorboard.util.tensor_util", "tensorboard")
        self.record_writer = require("tensorboard.summary.writer.record_writer", "tensorboard")
        self.scalar_meta = require("tensorboard.plugins.scalar.metadata", "tensorboard")
        self.text_meta = require("tensorboard.plugins.text.metadata", "tensorboard")
        self.image_meta = require("tensorboard.plugins.image.metadata", "tensorboard")
        self.histo_meta = require("tensorboard.plugins.histogram.metadata", "tensorboard")
        self.audio_meta = require("tensorboard.plugins.audio.metadata", "tensorboard")
        self.np = require("numpy", "tensorboard")

    # -- summary values --------------------------------------------------------------------
    def _value(self, tag: str, metadata: Any, tensor: Any) -> Any:
        return self.summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)

    def scalar(self, tag: str, value: float) -> Any:
        meta = self.scalar_meta.create_summary_metadata(display_name=tag, description="")
        tensor = self.tensor_util.make_tensor_proto(float(value), dtype="float64")
        return self._value(tag, meta, tensor)

    def text(self, tag: str, text: str) -> Any:
        meta = self.text_meta.create_summary_metadata(display_name=tag, description="")
        tensor = self.tensor_util.make_tensor_proto(text.encode("utf-8"))
        return self._value(tag, meta, tensor)

    def images(self, tag: str, blobs: Sequence[bytes], width: int, height: int) -> Any:
        meta = self.image_meta.create_summary_metadata(display_name=tag, description="")
        flat = [str(width).encode(), str(height).encode(), *blobs]
        tensor = self.tensor_util.make_tensor_proto(self.np.array(flat, dtype=object))
        return self._value(tag, meta, tensor)

    def histogram(self, tag: str, edges: Sequence[float], counts: Sequence[float]) -> Any:
        meta = self.histo_meta.create_summary_metadata(display_name=tag, description="")
        rows = [[float(edges[i]), float(edges[i + 1]), float(c)] for i, c in enumerate(counts)]
        tensor = self.tensor_util.make_tensor_proto(self.np.array(rows, dtype=self.np.float64))
        return self._value(tag, meta, tensor)

    def audio(self, tag: str, clips: Sequence[tuple[bytes, str]]) -> Any:
        wav = self.audio_meta.Encoding.Value("WAV")
        meta = self.audio_meta.create_summary_metadata(display_name=tag, description="",
                                                       encoding=wav)
        rows = [[clip, label.encode("utf-8")] for clip, label in clips]
        tensor = self.tensor_util.make_tensor_proto(self.np.array(rows, dtype=object))
        return self._value(tag, meta, tensor)

    # -- events ----------------------------------------------------------------------------
    def event(self, wall_ms: int, step: int, values: Iterable[Any]) -> Any:
        """An event at the spool point's own wall time (seconds, a float, as TensorBoard)."""
        summary = self.summary_pb2.Summary(value=list(values))
        return self.event_pb2.Event(wall_time=wall_ms / 1000.0, step=int(step), summary=summary)

    def file_version(self, wall_ms: int) -> Any:
        return self.event_pb2.Event(wall_time=wall_ms / 1000.0, file_version=FILE_VERSION)


class EventFile:
    """One event file written record by record (media bytes are never all in memory), under
    a temporary name: :meth:`commit` syncs it and renames it into place, :meth:`discard`
    removes it. The file is readable by its owner only, as the spool is."""

    def __init__(self, protos: Protos, path: Path) -> None:
        self.path = path
        self.records = 0
        # The temporary name holds no event-file mark (names.EVENT_MARK): a reader would
        # take a torn file for a run's.
        self._tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}{TMP_SUFFIX}")
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fh = os.fdopen(fd, "wb")
        self._writer = protos.record_writer.RecordWriter(self._fh)

    def write(self, event: Any) -> None:
        self._writer.write(event.SerializeToString())
        self.records += 1

    def commit(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)
        _sync_dir(self.path.parent)

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        try:
            os.unlink(self._tmp)
        except OSError:
            pass


def write_event_file(protos: Protos, path: Path, events: Sequence[Any]) -> None:
    """Write ``events`` as one event file at ``path``, atomically (see :class:`EventFile`)."""
    out = EventFile(protos, path)
    try:
        for event in events:
            out.write(event)
        out.commit()
    except BaseException:
        out.discard()
        raise


def _sync_dir(directory: Path) -> None:
    """Make a rename durable (a crash right after it must not bring the old name back)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_torn(directory: Path) -> None:
    """Remove what a killed sync left half written in a run directory (never read: its
    name is not an event file's)."""
    for path in directory.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
        try:
            path.unlink()
        except OSError:
            pass
