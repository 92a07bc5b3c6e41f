"""TensorBoard event files written with the ``tensorboard`` package alone (no torch, no TF).

The records are the ones ``torch.utils.tensorboard.SummaryWriter`` writes — legacy
``simple_value`` scalars and the hparams plugin's experiment / session-start / session-end
summaries — built from TensorBoard's own protobufs and written by its ``EventFileWriter``, so
a test of the importer runs wherever ``[dev]`` is installed. ``MediaWriter`` adds the media
records (images, video, histograms, audio, text, PR curves, mesh parts, graphs, projector
files) in torch's forms and the tensor forms of ``tf.summary`` v2.
"""

from __future__ import annotations

import io
import wave
from typing import Any, Sequence

import numpy as np

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

__all__ = ["LegacyWriter", "MediaWriter", "gif_bytes", "png_bytes", "torch_histogram",
           "wav_bytes"]


def _plugin_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
        plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString()))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=meta)])


class LegacyWriter:
    """One run directory written as torch's SummaryWriter writes it."""

    def __init__(self, logdir: str) -> None:
        self._out = EventFileWriter(logdir)

    def add_scalar(self, tag: str, value: float, step: int, walltime: float) -> None:
        ev = event_pb2.Event(wall_time=walltime, step=step)
        ev.summary.value.add(tag=tag, simple_value=value)
        self._out.add_event(ev)

    def add_hparams(self, hparams: dict[str, Any], metrics: list[str], walltime: float) -> None:
        """The three summaries of ``torch.utils.tensorboard.summary.hparams``."""
        start = plugin_data_pb2.SessionStartInfo()
        infos = []
        for name, value in hparams.items():
            if isinstance(value, str):
                start.hparams[name].string_value = value
                kind = api_pb2.DATA_TYPE_STRING
            elif isinstance(value, bool):
                start.hparams[name].bool_value = value
                kind = api_pb2.DATA_TYPE_BOOL
            else:
                start.hparams[name].number_value = value
                kind = api_pb2.DATA_TYPE_FLOAT64
            infos.append(api_pb2.HParamInfo(name=name, type=kind))
        experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=[
            api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics])
        version = metadata.PLUGIN_DATA_VERSION
        for tag, data in (
            (metadata.EXPERIMENT_TAG,
             plugin_data_pb2.HParamsPluginData(experiment=experiment, version=version)),
            (metadata.SESSION_START_INFO_TAG,
             plugin_data_pb2.HParamsPluginData(session_start_info=start, version=version)),
            (metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(
                session_end_info=plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS),
                version=version)),
        ):
            self._out.add_event(event_pb2.Event(wall_time=walltime,
                                                summary=_plugin_summary(tag, data)))

    def close(self) -> None:
        self._out.close()


# -- media: the records torch's SummaryWriter writes, and the tensor forms of tf.summary v2 --

def png_bytes(hwc: np.ndarray) -> bytes:
    """A uint8 HW / HWC array encoded as PNG (what torch's ``make_image`` stores)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(hwc).save(buf, format="PNG")
    return buf.getvalue()


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """Frames (T, H, W, C) uint8 as an animated GIF (what ``add_video`` stores)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(round(1000 / fps)), loop=0)
    return buf.getvalue()


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono float samples in [-1, 1] as 16-bit PCM WAV (what ``add_audio`` stores)."""
    pcm = (np.clip(samples, -1, 1) * np.iinfo(np.int16).max).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def torch_histogram(values: np.ndarray, bins: Any = 10) -> summary_pb2.HistogramProto:
    """A ``HistogramProto`` laid out as torch's ``add_histogram`` lays it out: the buckets
    of ``np.histogram`` from the first to the last non-empty one, each named by its right
    edge, after one empty bucket whose right edge is the first bucket's left edge."""
    values = np.asarray(values, dtype=float).reshape(-1)
    counts, limits = np.histogram(values, bins=bins)
    filled = np.flatnonzero(counts)
    first, last = int(filled[0]), int(filled[-1])
    return summary_pb2.HistogramProto(
        min=values.min(), max=values.max(), num=len(values), sum=values.sum(),
        sum_squares=float(values.dot(values)),
        bucket_limit=limits[first:last + 2].tolist(),
        bucket=[0.0] + counts[first:last + 1].astype(float).tolist())


class MediaWriter(LegacyWriter):
    """Media records in both forms TensorBoard reads: legacy values as torch's
    ``SummaryWriter`` writes them (``add_image``/``add_histogram``/``add_audio``/
    ``add_video`` as ``Summary.Value.image``/``histo``/``audio``; ``add_text`` and
    ``add_pr_curve`` as plugin tensors), and the tensor forms of ``tf.summary`` v2
    (``images``, ``histograms``, ``audio`` plugins) built from TensorBoard's own metadata."""

    def _event(self, walltime: float, step: int) -> event_pb2.Event:
        return event_pb2.Event(wall_time=walltime, step=step)

    # legacy values (torch)
    def add_image(self, tag: str, hwc: np.ndarray, step: int, walltime: float) -> bytes:
        data = png_bytes(hwc)
        h, w = hwc.shape[:2]
        ev = self._event(walltime, step)
        ev.summary.value.add(tag=tag, image=summary_pb2.Summary.Image(
            height=h, width=w, colorspace=hwc.shape[2] if hwc.ndim == 3 else 1,
            encoded_image_string=data))
        self._out.add_event(ev)
        return data

    def add_video(self, tag: str, frames: np.ndarray, step: int, walltime: float,
                  fps: float = 4) -> bytes:
        data = gif_bytes(frames, fps)
        _, h, w, c = frames.shape
        ev = self._event(walltime, step)
        ev.summary.value.add(tag=tag, image=summary_pb2.Summary.Image(
            height=h, width=w, colorspace=c, encoded_image_string=data))
        self._out.add_event(ev)
        return data

    def add_histogram(self, tag: str, values: np.ndarray, step: int, walltime: float,
                      bins: Any = 10) -> summary_pb2.HistogramProto:
        return self.add_histogram_proto(tag, torch_histogram(values, bins), step, walltime)

    def add_histogram_proto(self, tag: str, histo: summary_pb2.HistogramProto, step: int,
                            walltime: float) -> summary_pb2.HistogramProto:
        ev = self._event(walltime, step)
        ev.summary.value.add(tag=tag, histo=histo)
        self._out.add_event(ev)
        return histo

    def add_audio(self, tag: str, samples: np.ndarray, step: int, walltime: float,
                  sample_rate: int = 44100) -> bytes:
        data = wav_bytes(samples, sample_rate)
        ev = self._event(walltime, step)
        ev.summary.value.add(tag=tag, audio=summary_pb2.Summary.Audio(
            sample_rate=sample_rate, num_channels=1, length_frames=len(samples),
            encoded_audio_string=data, content_type="audio/wav"))
        self._out.add_event(ev)
        return data

    def add_text(self, tag: str, text: str, step: int, walltime: float) -> None:
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2
        from tensorboard.plugins.text import plugin_data_pb2 as text_pb2

        meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name="text", content=text_pb2.TextPluginData(version=0).SerializeToString()))
        tensor = tensor_pb2.TensorProto(
            dtype="DT_STRING", string_val=[text.encode("utf-8")],
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
        ev = self._event(walltime, step)
        ev.summary.value.add(tag=tag + "/text_summary", metadata=meta, tensor=tensor)
        self._out.add_event(ev)

    def add_pr_curve(self, tag: str, labels: np.ndarray, predictions: np.ndarray, step: int,
                     walltime: float, num_thresholds: int = 127) -> np.ndarray:
        """The [6, num_thresholds] float32 tensor (tp, fp, tn, fn, precision, recall)."""
        from tensorboard.plugins.pr_curve import plugin_data_pb2 as pr_pb2
        from tensorboard.util import tensor_util

        index = np.floor(predictions * (num_thresholds - 1)).astype(np.int32)
        pos = labels.astype(float)
        tp_b, _ = np.histogram(index, bins=num_thresholds, range=(0, num_thresholds - 1),
                               weights=pos)
        fp_b, _ = np.histogram(index, bins=num_thresholds, range=(0, num_thresholds - 1),
                               weights=1.0 - pos)
        tp, fp = np.cumsum(tp_b[::-1])[::-1], np.cumsum(fp_b[::-1])[::-1]
        tn, fn = fp[0] - fp, tp[0] - tp
        precision = tp / np.maximum(1e-7, tp + fp)
        recall = tp / np.maximum(1e-7, tp + fn)
        data = np.stack((tp, fp, tn, fn, precision, recall)).astype(np.float32)
        meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name="pr_curves", content=pr_pb2.PrCurvePluginData(
                version=0, num_thresholds=num_thresholds).SerializeToString()))
        ev = self._event(walltime, step)
        ev.summary.value.add(tag=tag, metadata=meta, tensor=tensor_util.make_tensor_proto(data))
        self._out.add_event(ev)
        return data

    # tensor forms (tf.summary v2; metadata on a tag's first value only)
    def add_tensor(self, tag: str, tensor: Any, step: int, walltime: float,
                   metadata: summary_pb2.SummaryMetadata | None = None) -> None:
        from tensorboard.util import tensor_util

        ev = self._event(walltime, step)
        value = ev.summary.value.add(tag=tag, tensor=tensor_util.make_tensor_proto(tensor))
        if metadata is not None:
            value.metadata.CopyFrom(metadata)
        self._out.add_event(ev)

    def add_v2_images(self, tag: str, images: Sequence[bytes], width: int, height: int,
                      step: int, walltime: float, first: bool = True) -> None:
        from tensorboard.plugins.image import metadata as image_metadata

        meta = image_metadata.create_summary_metadata(tag, "") if first else None
        tensor = np.array([str(width).encode(), str(height).encode(), *images], dtype=object)
        self.add_tensor(tag, tensor, step, walltime, meta)

    def add_v2_histogram(self, tag: str, buckets: np.ndarray, step: int, walltime: float,
                         first: bool = True) -> None:
        from tensorboard.plugins.histogram import metadata as histogram_metadata

        meta = histogram_metadata.create_summary_metadata(tag, "") if first else None
        self.add_tensor(tag, np.asarray(buckets, dtype=np.float64), step, walltime, meta)

    def add_v2_audio(self, tag: str, clips: Sequence[bytes], labels: Sequence[str], step: int,
                     walltime: float, first: bool = True) -> None:
        from tensorboard.plugins.audio import metadata as audio_metadata

        meta = audio_metadata.create_summary_metadata(
            tag, "", audio_metadata.Encoding.Value("WAV")) if first else None
        tensor = np.array([[c, lab.encode()] for c, lab in zip(clips, labels)], dtype=object)
        self.add_tensor(tag, tensor, step, walltime, meta)

    def add_mesh_vertices(self, tag: str, vertices: np.ndarray, step: int,
                          walltime: float) -> None:
        """The ``<tag>_VERTEX`` part of torch's ``add_mesh`` (a [B, N, 3] float tensor)."""
        from tensorboard.plugins.mesh import metadata as mesh_metadata
        from tensorboard.plugins.mesh import plugin_data_pb2 as mesh_pb2

        kind = mesh_pb2.MeshPluginData.ContentType.Value("VERTEX")
        meta = mesh_metadata.create_summary_metadata(
            tag, None, kind, mesh_metadata.get_components_bitmask([kind]),
            list(vertices.shape))
        self.add_tensor(mesh_metadata.get_instance_name(tag, kind),
                        vertices.astype(np.float32), step, walltime, meta)

    def add_graph_def(self, graph: bytes, walltime: float) -> None:
        """A ``graph_def`` record, as ``add_graph`` writes one."""
        self._out.add_event(event_pb2.Event(wall_time=walltime, graph_def=graph))

    def add_embedding(self, mat: np.ndarray, metadata: Sequence[Any] | None = None,
                      label_img: np.ndarray | None = None, global_step: int = 0,
                      tag: str = "default", metadata_header: Sequence[str] | None = None
                      ) -> None:
        """The projector files torch's ``add_embedding`` writes beside the event files:
        ``<step:05d>/<tag>/tensors.tsv`` (+ ``metadata.tsv``, ``sprite.png`` of the
        ``label_img`` NCHW floats tiled in a square) and ``projector_config.pbtxt``."""
        import math
        import os

        from google.protobuf import text_format
        from tensorboard.plugins.projector import projector_config_pb2

        logdir = self._out.get_logdir()
        subdir = f"{global_step:05d}/{tag}"
        os.makedirs(os.path.join(logdir, subdir), exist_ok=True)
        info = projector_config_pb2.EmbeddingInfo(tensor_name=f"{tag}:{global_step:05d}",
                                                  tensor_path=f"{subdir}/tensors.tsv")
        with open(os.path.join(logdir, subdir, "tensors.tsv"), "w") as f:
            f.writelines("\t".join(str(float(x)) for x in row) + "\n" for row in mat)
        if metadata is not None:
            lines = ([str(x) for x in metadata] if not metadata_header else
                     ["\t".join(map(str, r)) for r in [metadata_header, *metadata]])
            with open(os.path.join(logdir, subdir, "metadata.tsv"), "w") as f:
                f.write("\n".join(lines) + "\n")
            info.metadata_path = f"{subdir}/metadata.tsv"
        if label_img is not None:
            n, _, h, w = label_img.shape
            side = math.ceil(n ** 0.5)  # tiles per row; the sprite is a square
            canvas = np.zeros((max(side * w, math.ceil(n / side) * h), side * w, 3))
            for i in range(n):
                y, x = (i // side) * h, (i % side) * w
                canvas[y:y + h, x:x + w] = label_img[i].transpose(1, 2, 0)
            png = png_bytes(np.uint8((canvas * 255).clip(0, 255)))
            with open(os.path.join(logdir, subdir, "sprite.png"), "wb") as f:
                f.write(png)
            info.sprite.image_path = f"{subdir}/sprite.png"
            info.sprite.single_image_dim.extend([w, h])
        self._embeddings = [*getattr(self, "_embeddings", []), info]
        config = projector_config_pb2.ProjectorConfig(embeddings=self._embeddings)
        with open(os.path.join(logdir, "projector_config.pbtxt"), "w") as f:
            f.write(text_format.MessageToString(config))
