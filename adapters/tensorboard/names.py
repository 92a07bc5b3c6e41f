"""TensorBoard's names and formats, defined once for the importer and a future writer.

The event file names, the plugin names a summary's metadata carries, the hparams plugin's
summary tags, and the provenance tags bridge puts on an imported run: a TensorBoard
destination that writes event files will take them from here, so what it writes is what the
importer reads. Nothing here imports ``tensorboard``.
"""

from __future__ import annotations

__all__ = [
    "EVENT_FILE_PREFIX", "EVENT_MARK", "HPARAMS_END", "HPARAMS_EXPERIMENT", "HPARAMS_START",
    "LOGDIR_TAG", "PLUGIN_HPARAMS", "PLUGIN_SCALARS", "PLUGIN_TEXT", "SKIPPED_TAG",
]

# --- event files --------------------------------------------------------------------------
EVENT_FILE_PREFIX = "events.out.tfevents."  # + <wall time>.<host>[.<pid>...][suffix]
EVENT_MARK = "tfevents"  # TensorBoard's own test for an event file name

# --- plugins (``SummaryMetadata.plugin_data.plugin_name``) -----------------------------------
PLUGIN_SCALARS = "scalars"
PLUGIN_TEXT = "text"
PLUGIN_HPARAMS = "hparams"

# --- the hparams plugin's summary tags ----------------------------------------------------
HPARAMS_EXPERIMENT = "_hparams_/experiment"
HPARAMS_START = "_hparams_/session_start_info"  # a session's hyperparameter values
HPARAMS_END = "_hparams_/session_end_info"

# --- provenance tags on a run imported from TensorBoard ------------------------------------
LOGDIR_TAG = "tensorboard.logdir"  # the run's directory
SKIPPED_TAG = "tensorboard.skipped"  # "<plugin>:<count>,..." of the summaries not imported
