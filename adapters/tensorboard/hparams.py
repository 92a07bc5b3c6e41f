"""A bridge run's params as one session of TensorBoard's HParams plugin.

TensorBoard shows the latest ``session_start_info`` of a run, so each one written holds
every param known so far (kept in the adapter's state, JSON); ``session_end_info`` carries
the run's status and end time. The HParams plugin infers the experiment (the hparams and
the metrics, which are the run's scalar tags) from the sessions, so no experiment summary is
written. Nested params are flattened with ``.`` (TensorBoard's hparams are flat); numbers,
strings and booleans keep their type; anything else (a list, null, a non-finite number)
is its JSON text, as ``bridge verify`` compares params.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from bridge.adapters.base import flatten, require
from bridge.adapters.tensorboard.names import HPARAMS_END, HPARAMS_START, STATUS_OF

__all__ = ["HParams", "encode_params"]


def encode_params(key: str, value: Any) -> dict[str, list]:
    """A param event as ``{flat key: [form, value]}`` (form ``number``, ``bool``, ``str``):
    JSON for the adapter's state, turned into protobuf ``Value`` s when written."""
    out: dict[str, list] = {}
    for k, v in flatten(value, key).items():
        if isinstance(v, bool):
            out[k] = ["bool", v]
        elif isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[k] = ["number", v]
        elif isinstance(v, str):
            out[k] = ["str", v]
        else:
            out[k] = ["str", json.dumps(v, sort_keys=True)]
    return out


class HParams:
    """Builds the hparams plugin's summaries with the tensorboard package (no TensorFlow)."""

    def __init__(self) -> None:
        self.plugin_data_pb2 = require("tensorboard.plugins.hparams.plugin_data_pb2",
                                       "tensorboard")
        self.api_pb2 = require("tensorboard.plugins.hparams.api_pb2", "tensorboard")
        self.metadata = require("tensorboard.plugins.hparams.metadata", "tensorboard")
        self.summary_pb2 = require("tensorboard.compat.proto.summary_pb2", "tensorboard")
        self.struct_pb2 = require("google.protobuf.struct_pb2", "tensorboard")

    def _summary(self, tag: str, data: Any) -> Any:
        meta = self.metadata.create_summary_metadata(data)
        return self.summary_pb2.Summary.Value(tag=tag, metadata=meta,
                                              tensor=self.metadata.NULL_TENSOR)

    def start(self, params: Mapping[str, list], start_ms: int) -> Any:
        """The session start: every param and the run's start time. No group name: the
        plugin averages the sessions of a group as repeats of one trial, and a bridge group
        (a sweep, the workers of one job) is not that."""
        info = self.plugin_data_pb2.SessionStartInfo(start_time_secs=start_ms / 1000.0)
        for key, (form, value) in sorted(params.items()):
            if form == "bool":
                info.hparams[key].bool_value = bool(value)
            elif form == "number":
                info.hparams[key].number_value = float(value)
            else:
                info.hparams[key].string_value = str(value)
        data = self.plugin_data_pb2.HParamsPluginData(
            version=self.metadata.PLUGIN_DATA_VERSION, session_start_info=info)
        return self._summary(HPARAMS_START, data)

    def end(self, status: str, end_ms: int) -> Any:
        """The session end: bridge's status as the plugin's, and the end time."""
        code = self.api_pb2.Status.Value(STATUS_OF.get(status, "STATUS_UNKNOWN"))
        info = self.plugin_data_pb2.SessionEndInfo(status=code, end_time_secs=end_ms / 1000.0)
        data = self.plugin_data_pb2.HParamsPluginData(
            version=self.metadata.PLUGIN_DATA_VERSION, session_end_info=info)
        return self._summary(HPARAMS_END, data)
