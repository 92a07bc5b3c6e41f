"""Importers: read another tracker's history into spool events (``bridge import``).

Sources are loaded lazily by name; each module imports its vendor SDK only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

from bridge.importers.base import ImportError_, ImportEvent, Importer, SourceRun

__all__ = ["ImportError_", "ImportEvent", "Importer", "SOURCES", "SourceRun", "make_importer"]

SOURCES = {
    "mlflow": "bridge.importers.mlflow:MlflowImporter",
    "wandb": "bridge.importers.wandb:WandbImporter",
    "neptune": "bridge.importers.neptune:NeptuneImporter",
    "comet": "bridge.importers.comet:CometImporter",
    "tensorboard": "bridge.importers.tensorboard:TensorboardImporter",
}


def make_importer(source: str, location: str | None = None, **options: Any) -> Importer:
    """An importer for ``source`` reading ``location`` (a URI, a directory or a file)."""
    if source not in SOURCES:
        raise ImportError_(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    module_name, _, attr = SOURCES[source].partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    return cls(location, **options)
