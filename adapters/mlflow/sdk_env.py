"""MLflow SDK settings that MLflow reads only from environment variables, held for one call.

``MlflowClient`` takes no per-client retry count or timeout for HTTP (MLflow reads
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT`` at each request),
opens a file store only when ``MLFLOW_ALLOW_FILE_STORE`` is true, and draws download progress
bars unless ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is false. Bridge never sets these for
good: :class:`ScopedClient` sets the ones the user has not set around each call bridge makes,
and puts ``os.environ`` back exactly as it was when the last such call returns.

Only in a process bridge owns for the job: :func:`host_process` says when the process is a
user's training process (an in-process background sync is running there); then nothing is
set, and the user's own MLflow settings apply to bridge's calls too.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

__all__ = ["BACKGROUND_SYNC_THREAD", "ScopedClient", "host_process", "scoped_env"]

BACKGROUND_SYNC_THREAD = "bridge-background-sync"  # bridge.agent.background's thread name

_lock = threading.Lock()
_holders: dict[str, list[Any]] = {}  # variable -> [calls inside a scope, value set]


def host_process() -> bool:
    """Whether this is a user's process with an in-process background sync running."""
    return any(t.name == BACKGROUND_SYNC_THREAD for t in threading.enumerate())


@contextmanager
def scoped_env(defaults: Mapping[str, str], *, force: bool = False) -> Iterator[None]:
    """``defaults`` for the variables not set, while the block runs; then removed again.

    Thread-safe: concurrent scopes share a variable, and the last one out removes it.
    Outside a process bridge owns (:func:`host_process`), nothing is set unless ``force``.
    """
    if not defaults or (host_process() and not force):
        yield
        return
    taken: list[str] = []
    with _lock:
        for name, value in defaults.items():
            if name in _holders:
                _holders[name][0] += 1
                taken.append(name)
            elif name not in os.environ:
                os.environ[name] = value
                _holders[name] = [1, value]
                taken.append(name)
    try:
        yield
    finally:
        with _lock:
            for name in taken:
                _holders[name][0] -= 1
                if _holders[name][0] == 0:
                    value = _holders.pop(name)[1]
                    if os.environ.get(name) == value:  # unless someone set it meanwhile
                        del os.environ[name]


class ScopedClient:
    """An ``MlflowClient`` whose every method call runs inside :func:`scoped_env`."""

    def __init__(self, client: Any, defaults: Mapping[str, str], *, force: bool = False) -> None:
        self._client = client
        self._defaults = dict(defaults)
        self._force = force

    def __getattr__(self, name: str) -> Any:
        if name in ("_client", "_defaults", "_force"):  # not set yet (copy, unpickling)
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        defaults, force = self._defaults, self._force

        def call(*args: Any, **kwargs: Any) -> Any:
            with scoped_env(defaults, force=force):
                return attr(*args, **kwargs)

        return call

    @classmethod
    def create(cls, factory: Callable[[], Any], defaults: Mapping[str, str], *,
               force: bool = False) -> "ScopedClient":
        """Build the client inside the scope too (MLflow checks a file store when opening it)."""
        with scoped_env(defaults, force=force):
            return cls(factory(), defaults, force=force)
