"""TensorBoard event files written with the ``tensorboard`` package alone (no torch, no TF).

The records are the ones ``torch.utils.tensorboard.SummaryWriter`` writes — legacy
``simple_value`` scalars and the hparams plugin's experiment / session-start / session-end
summaries — built from TensorBoard's own protobufs and written by its ``EventFileWriter``, so
a test of the importer runs wherever ``[dev]`` is installed.
"""

from __future__ import annotations

from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

__all__ = ["LegacyWriter"]


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
