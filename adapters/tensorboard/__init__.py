"""TensorBoard: everything bridge knows about TensorBoard event files lives in this package.

- ``names``: event file names, plugin names, hparams tags and provenance tags, defined once;
- ``importer``: reads a log directory of event files (``bridge import tensorboard``);
- ``media``: turns image, histogram, audio, text, PR curve and tensor summaries (legacy and
  tensor forms) into media events for the importer; ``projector``: the embedding
  projector's files as tables;
- ``compat`` and ``summary_media``: torch ``SummaryWriter`` arguments (``dataformats``,
  ``bins="tensorflow"``, PR curves, meshes, embeddings) as bridge media, for
  ``bridge.SummaryWriter``.

A TensorBoard writer (a destination) will live here too and share ``names``. Importing the
package never imports ``tensorboard``.
"""

from bridge.adapters.tensorboard import names
from bridge.adapters.tensorboard.importer import TensorboardImporter

__all__ = ["TensorboardImporter", "names"]
