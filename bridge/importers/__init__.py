"""Importers: read another tracker's history into spool events (``bridge import``).

Sources are loaded lazily by name; each module imports its vendor SDK only when used.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from bridge.adapters.clearml import names as clearml_names
from bridge.adapters.mlflow import names as mlflow_names
from bridge.adapters.tensorboard import names as tensorboard_names
from bridge.adapters.importing import ImportError_, ImportEvent, Importer, SourceRun

__all__ = ["ImportError_", "ImportEvent", "Importer", "SOURCES", "SourceRun", "make_importer",
           "recognise"]

SOURCES = {
    "mlflow": "bridge.adapters.mlflow.importer:MlflowImporter",
    "wandb": "bridge.adapters.wandb.importer:WandbImporter",
    "neptune": "bridge.adapters.neptune.importer:NeptuneImporter",
    "neptune-scale": "bridge.adapters.neptune.scale_importer:NeptuneScaleImporter",
    "comet": "bridge.adapters.comet.importer:CometImporter",
    "tensorboard": "bridge.adapters.tensorboard.importer:TensorboardImporter",
    "trackio": "bridge.adapters.trackio.importer:TrackioImporter",
    "clearml": "bridge.adapters.clearml.importer:ClearmlImporter",
}


def make_importer(source: str, location: str | None = None, **options: Any) -> Importer:
    """An importer for ``source`` reading ``location`` (a URI, a directory or a file)."""
    if source not in SOURCES:
        raise ImportError_(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    module_name, _, attr = SOURCES[source].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:  # the vendor's SDK, imported by its importer module
        raise ImportError_(f"the {source} importer needs {exc.name or 'a package'}: "
                           f"pip install 'tracking-bridge[{source}]'") from exc
    return cls(location, **options)


# File names that tell which tracker wrote a directory (checked on a few thousand entries).
_SIGNS = (
    ("run_operations.sqlite3", "neptune-scale (Neptune 3.x) offline files "
                               "(source 'neptune-scale')"),
    (".wandb", "W&B offline runs (source 'wandb')"),
    (tensorboard_names.EVENT_FILE_PREFIX, "TensorBoard event files (source 'tensorboard')"),
    ("meta.yaml", "an MLflow file store (source 'mlflow')"),
    (mlflow_names.EMBEDDED_DB, "an MLflow SQLite store (source 'mlflow', as sqlite:///path/"
                               f"{mlflow_names.EMBEDDED_DB})"),
    (".parquet", "Parquet files (source 'neptune' reads the Neptune exporter's)"),
    ("data-1.log", "Neptune 1.x offline logs (source 'neptune')"),
    (clearml_names.TASK_FILE, "task.json files (source 'clearml' reads ClearML offline "
                              "sessions)"),
    (".zip", "zip archives (source 'comet' reads Comet offline archives)"),
)


def recognise(location: str, limit: int = 5000) -> list[str]:
    """What a directory looks like, for a source that found no run in it."""
    found: dict[str, int] = {}
    seen = 0
    try:
        for root, dirs, files in os.walk(location):
            for name in files + dirs:
                seen += 1
                for sign, what in _SIGNS:
                    if name == sign or (sign.startswith(".") and name.endswith(sign)) or (
                            sign.endswith(".") and name.startswith(sign)):
                        found[what] = found.get(what, 0) + 1
                        break
            if seen >= limit:
                break
    except OSError:
        return []
    if not found and Path(location).is_dir():
        return [f"{seen} entries, none a known tracker's"]
    return [f"{what} ({n})" for what, n in found.items()]
