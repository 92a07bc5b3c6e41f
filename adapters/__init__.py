"""Backends bridge delivers to; each module translates spool events for one vendor."""

from bridge.adapters.base import (
    Adapter,
    AdapterError,
    Event,
    ExportResult,
    Limits,
    MissingDependency,
    Outcome,
    RunInfo,
    available_adapters,
    load_adapter,
)

__all__ = [
    "Adapter",
    "AdapterError",
    "Event",
    "ExportResult",
    "Limits",
    "MissingDependency",
    "Outcome",
    "RunInfo",
    "available_adapters",
    "load_adapter",
]
