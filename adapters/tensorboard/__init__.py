"""TensorBoard: everything bridge knows about TensorBoard event files lives in this package.

- ``names``: event file names, plugin names, hparams tags and provenance tags, defined once;
- ``importer``: reads a log directory of event files (``bridge import tensorboard``);
- ``media``: turns image, histogram, audio, text, PR curve and tensor summaries (legacy and
  tensor forms) into media events for the importer; ``projector``: the embedding
  projector's files as tables;
- ``compat`` and ``summary_media``: torch ``SummaryWriter`` arguments (``dataformats``,
  ``bins="tensorflow"``, PR curves, meshes, embeddings) as bridge media, for
  ``bridge.SummaryWriter``.

- ``adapter`` (the destination ``backends=["tensorboard"]``), with ``writer`` (summaries
  and event files) and ``hparams`` (params as an HParams session).

Importing the package never imports ``tensorboard``.
"""

from typing import Any

from bridge.adapters.tensorboard import names
from bridge.adapters.tensorboard.importer import TensorboardImporter

__all__ = ["TensorboardAdapter", "TensorboardImporter", "names"]


def __getattr__(name: str) -> Any:
    """``TensorboardAdapter`` on first use: the package stays cheap to import."""
    if name == "TensorboardAdapter":
        from bridge.adapters.tensorboard.adapter import TensorboardAdapter

        return TensorboardAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
