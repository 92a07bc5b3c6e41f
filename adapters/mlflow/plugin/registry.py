"""MLflow's model-registry store for ``bridge:`` tracking URIs.

MLflow resolves a registry store from the tracking URI whenever a model is logged, so the
scheme must have one. The spool holds no registry: searches answer empty, lookups answer
"does not exist", and every write (registering a model, versions, aliases, prompts,
webhooks) raises MLflow's "not supported" error naming the alternative. MLflow's base class
marks its methods abstract without enforcing it (their bodies return None), so every public
method is overridden here: nothing is a silent no-op.
"""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.model_registry.abstract_store import AbstractStore

from bridge.adapters.mlflow.plugin import session

_INSTEAD = ("Register models in the MLflow server bridge syncs to (the logged model and its "
            "artifacts are delivered there by bridge sync): mlflow.register_model("
            "'models:/<model id>', name) with that server as the registry URI "
            "(mlflow.set_registry_uri).")


def _refuse(name: str):
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise session.not_supported(f"The model registry ({name})", _INSTEAD)

    method.__name__ = name
    return method


class BridgeRegistryStore(AbstractStore):
    def __init__(self, store_uri: str | None = None, tracking_uri: str | None = None) -> None:
        super().__init__(store_uri, tracking_uri)
        self.store_uri = store_uri

    def search_registered_models(self, filter_string=None, max_results=None, order_by=None,
                                 page_token=None):
        return PagedList([], None)

    def search_model_versions(self, filter_string=None, max_results=None, order_by=None,
                              page_token=None):
        return PagedList([], None)

    def search_prompts(self, *args: Any, **kwargs: Any):
        return PagedList([], None)

    def get_registered_model(self, name):
        raise MlflowException(f"Registered Model with name={name} not found",
                              RESOURCE_DOES_NOT_EXIST)

    def get_latest_versions(self, name, stages=None):
        self.get_registered_model(name)

    def get_model_version(self, name, version):
        self.get_registered_model(name)


_ANSWERED = {k for k, v in vars(BridgeRegistryStore).items() if callable(v)}
for _name, _value in list(vars(AbstractStore).items()):
    if (callable(_value) and not _name.startswith("_") and _name not in _ANSWERED):
        setattr(BridgeRegistryStore, _name, _refuse(_name))
