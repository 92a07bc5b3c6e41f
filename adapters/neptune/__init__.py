"""Neptune, both directions: the adapter (export), the importer (import) and their formats.

One vendor in one package so that what the adapter writes and what the importer reads back
are defined once (:mod:`.names`). Modules: ``names`` (field names, namespaces, steps, where
files live), ``adapter`` (delivery through the neptune 1.x client), ``paths`` (which bridge
keys may share Neptune fields), ``history`` (what earlier offline sessions wrote),
``datadir`` (a data directory per run), ``media`` (media events delivered: FileSeries,
StringSeries, files per step), ``importer`` (exporter Parquet and offline logs),
``media_in`` (the media it reads back) and ``offline`` (the 1.x offline op-log reader);
for neptune-scale (3.x) offline files, ``scale_names`` (tables, columns, operation types),
``scale_offline`` (the ``run_operations.sqlite3`` reader) and ``scale_importer``.
Importing it does not import the SDK.
"""

from __future__ import annotations

from bridge.adapters.neptune.adapter import NeptuneAdapter
from bridge.adapters.neptune.importer import NeptuneImporter
from bridge.adapters.neptune.names import readback_source

__all__ = ["NeptuneAdapter", "NeptuneImporter", "readback_source"]
