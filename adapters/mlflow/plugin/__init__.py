"""MLflow's plugin seam for bridge: ``MLFLOW_TRACKING_URI=bridge:`` (or ``bridge:///dir``).

Registered in pyproject.toml under MLflow's entry-point groups ``mlflow.tracking_store``,
``mlflow.artifact_repository`` and ``mlflow.model_registry_store`` for the scheme ``bridge``:
unmodified MLflow code (fluent API, ``MlflowClient``, flavors' ``log_model``, autolog)
records into the bridge spool, and its reads are answered from it (docs/mlflow-plugin.md).

Modules: ``session`` (URIs, the runs open in this process, experiments), ``store`` (the
tracking store), ``reads`` (spool events as MLflow entities), ``artifacts`` (the artifact
repository over the blob store), ``registry`` (the model-registry store). Only MLflow imports
this package; ``import bridge`` never does.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

_SPARK = "pyspark"


def answer_absent_spark_fast() -> None:
    """MLflow looks for an active Spark session on every ``MlflowClient()`` (twice per
    ``mlflow.log_metric``) by importing pyspark; where pyspark is not installed, each failed
    import scans ``sys.path`` (about 30 µs). Marking the absent module in ``sys.modules``, as
    Python documents for an import that must fail, gives the same ImportError at once."""
    if _SPARK not in sys.modules and importlib.util.find_spec(_SPARK) is None:
        sys.modules[_SPARK] = None  # type: ignore[assignment]


def tracking_store(store_uri: str | None = None, artifact_uri: str | None = None) -> Any:
    from bridge.adapters.mlflow.plugin.store import BridgeStore

    answer_absent_spark_fast()
    return BridgeStore(store_uri, artifact_uri)


def artifact_repository(artifact_uri: str, tracking_uri: str | None = None,
                        registry_uri: str | None = None) -> Any:
    from bridge.adapters.mlflow.plugin.artifacts import BridgeArtifactRepository

    return BridgeArtifactRepository(artifact_uri, tracking_uri, registry_uri)


def model_registry_store(store_uri: str | None = None, tracking_uri: str | None = None) -> Any:
    from bridge.adapters.mlflow.plugin.registry import BridgeRegistryStore

    return BridgeRegistryStore(store_uri, tracking_uri)
