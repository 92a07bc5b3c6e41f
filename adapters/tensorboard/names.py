"""TensorBoard's names and formats, defined once for the importer and a future writer.

The event file names, the plugin names a summary's metadata carries, the hparams plugin's
summary tags, and the provenance tags bridge puts on an imported run: a TensorBoard
destination that writes event files will take them from here, so what it writes is what the
importer reads. Nothing here imports ``tensorboard``.
"""

from __future__ import annotations

__all__ = [
    "EVENT_FILE_PREFIX", "EVENT_MARK", "HPARAMS_END", "HPARAMS_EXPERIMENT", "HPARAMS_START",
    "LEGACY_AUDIO", "LEGACY_HISTO", "LEGACY_IMAGE", "LOGDIR_TAG", "NOT_SUMMARIES",
    "PLUGIN_AUDIO", "PLUGIN_CUSTOM_SCALARS", "PLUGIN_HISTOGRAMS", "PLUGIN_HPARAMS",
    "PLUGIN_IMAGES", "PLUGIN_MESH", "PLUGIN_PR_CURVES", "PLUGIN_PROJECTOR", "PLUGIN_SCALARS",
    "PLUGIN_TEXT", "PR_CURVE_ROWS", "PROJECTOR_CONFIG", "EMBEDDINGS_PREFIX",
    "EMBEDDING_TABLE_VALUES", "SKIPPED_TAG", "TENSOR_INLINE_VALUES", "TEXT_SUMMARY_SUFFIX",
    "VENDOR",
]

VENDOR = "tensorboard"  # ``source.vendor`` of the media events imported from event files

# --- event files --------------------------------------------------------------------------
EVENT_FILE_PREFIX = "events.out.tfevents."  # + <wall time>.<host>[.<pid>...][suffix]
EVENT_MARK = "tfevents"  # TensorBoard's own test for an event file name

# --- plugins (``SummaryMetadata.plugin_data.plugin_name``) -----------------------------------
PLUGIN_SCALARS = "scalars"
PLUGIN_TEXT = "text"
PLUGIN_HPARAMS = "hparams"
PLUGIN_IMAGES = "images"  # string tensor [width, height, encoded image, ...]
PLUGIN_HISTOGRAMS = "histograms"  # float tensor [k, 3]: left edge, right edge, count
PLUGIN_AUDIO = "audio"  # string tensor [k, 2]: encoded clip, label (markdown)
PLUGIN_PR_CURVES = "pr_curves"  # float tensor [6, thresholds]: PR_CURVE_ROWS
PLUGIN_MESH = "mesh"  # one tensor per part: <tag>_VERTEX, <tag>_FACE, <tag>_COLOR
PLUGIN_CUSTOM_SCALARS = "custom_scalars"  # a layout, not data

# The rows of a PR curve tensor, in order (``tensorboard.plugins.pr_curve``).
PR_CURVE_ROWS = ("true_positives", "false_positives", "true_negatives", "false_negatives",
                 "precision", "recall")

# torch's ``add_text(tag, ...)`` writes its summary under ``<tag>/text_summary``.
TEXT_SUMMARY_SUFFIX = "/text_summary"

# --- the embedding projector: files beside the event files, not summaries -------------------
PLUGIN_PROJECTOR = "projector"
PROJECTOR_CONFIG = "projector_config.pbtxt"  # a text ProjectorConfig naming each embedding's
# tensors.tsv, metadata.tsv and sprite.png (paths relative to the run directory); torch's
# add_embedding names an embedding "<tag>:<step, 5 digits>"
EMBEDDINGS_PREFIX = "embeddings/"  # bridge's key for an embedding: embeddings/<tag>
# An embedding of up to this many values becomes a table (metadata, dim_0..., image);
# a larger one keeps its files as they are (a ``file`` event).
EMBEDDING_TABLE_VALUES = 250_000

# --- legacy (TF1 / torch) summary values: ``Summary.Value.WhichOneof("value")`` -----------
LEGACY_IMAGE = "image"  # Summary.Image: width, height, colorspace, encoded_image_string
LEGACY_HISTO = "histo"  # HistogramProto: min, max, num, sum, sum_squares, bucket_limit, bucket
LEGACY_AUDIO = "audio"  # Summary.Audio: sample_rate, num_channels, length_frames, encoded...

# Event records that are not summaries, by ``Event.WhichOneof("what")``: counted as skipped
# under these names (``file_version`` and ``source_metadata`` describe the file itself).
NOT_SUMMARIES = {
    "graph_def": "graphs", "meta_graph_def": "meta_graphs",
    "tagged_run_metadata": "run_metadata", "log_message": "log_messages",
    "session_log": "session_logs",
}

# A tensor summary of an unknown plugin up to this many values is kept inline as a
# ``tensor`` media event; a larger one becomes a ``file`` event holding an .npy file.
TENSOR_INLINE_VALUES = 4096

# --- the hparams plugin's summary tags ----------------------------------------------------
HPARAMS_EXPERIMENT = "_hparams_/experiment"
HPARAMS_START = "_hparams_/session_start_info"  # a session's hyperparameter values
HPARAMS_END = "_hparams_/session_end_info"

# --- provenance tags on a run imported from TensorBoard ------------------------------------
LOGDIR_TAG = "tensorboard.logdir"  # the run's directory
SKIPPED_TAG = "tensorboard.skipped"  # "<plugin>:<count>,..." of the summaries not imported
