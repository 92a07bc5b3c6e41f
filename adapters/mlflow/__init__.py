"""MLflow, both directions: everything bridge knows about MLflow lives in this package.

- ``names``: MLflow's tag names, file names, encodings and status maps, defined once;
- ``adapter``: delivers spooled runs to MLflow (:class:`MlflowAdapter`);
- ``rest``: a standard-library REST client for tracking servers (no MLflow import);
- ``media``: media events as MLflow holds them (``log_image``'s step images, ``log_table``'s
  tables, bridge's ``media/<key>/step_<N>/`` files for the rest);
- ``importer``: reads runs out of an MLflow store (``bridge import``, ``bridge verify``), with
  ``media_import`` turning step images, tables and bridge's media layout into media events;
- ``sdk_env``: the MLflow settings only readable from the environment, held per call.

Importing the package never imports the MLflow SDK.
"""

from bridge.adapters.mlflow import names
from bridge.adapters.mlflow.adapter import MlflowAdapter, RetryableError

__all__ = ["MlflowAdapter", "RetryableError", "names"]
