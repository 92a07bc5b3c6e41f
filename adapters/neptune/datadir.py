"""Give one Neptune run its own data directory without touching ``os.environ``.

neptune 1.x has no per-run data directory: ``init_run`` takes none, and the operation
processor of every mode (offline, sync, async) computes its directory in its constructor
with ``neptune.internal.operation_processors.utils.get_container_full_path``, which reads
``NEPTUNE_DATA_DIRECTORY``. Setting that variable around ``init_run`` is seen by every
thread of the host: during an in-process background sync the user's own ``init_run`` could
land in bridge's spool, and ours in theirs.

Each processor module looks ``get_container_full_path`` up by name when it builds a
processor, so it is wrapped there once by a function that consults a context variable.
Only :func:`data_directory` sets it, only in the calling thread (Neptune builds the
processor synchronously inside ``init_run``), and only for the call; every other caller gets
the SDK's own function, unchanged. Should a future client move that function, the old
variable swap is used instead, under a lock and restored exactly.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator

from bridge.adapters.neptune.names import DATA_DIR_ENV

__all__ = ["data_directory", "hooked"]

log = logging.getLogger("bridge.adapters.neptune")

_PROCESSORS = (
    "neptune.internal.operation_processors.offline_operation_processor",
    "neptune.internal.operation_processors.sync_operation_processor",
    "neptune.internal.operation_processors.async_operation_processor",
)
_UTILS = "neptune.internal.operation_processors.utils"
_ATTR = "get_container_full_path"
_MARK = "__bridge_original__"

_current: ContextVar[Path | None] = ContextVar("bridge_neptune_data_dir", default=None)
_install_lock = threading.Lock()
_env_lock = threading.Lock()
_hooked: bool | None = None


def _wrap(original: Callable[..., Path], container_dir: Callable[..., str]) -> Callable[..., Path]:
    def get_container_full_path(type_dir: str, container_id: Any, container_type: Any) -> Path:
        base = _current.get()
        if base is None:
            return original(type_dir, container_id, container_type)
        return base / type_dir / container_dir(container_id=container_id, container_type=container_type)

    setattr(get_container_full_path, _MARK, original)
    get_container_full_path.__doc__ = original.__doc__
    return get_container_full_path


def _install() -> bool:
    """Wrap the processors' path function once; False when the client has no such seam."""
    try:
        utils = importlib.import_module(_UTILS)
        modules = [importlib.import_module(name) for name in _PROCESSORS]
    except ImportError:
        return False
    container_dir = getattr(utils, "get_container_dir", None)
    if not callable(container_dir) or not all(callable(getattr(m, _ATTR, None)) for m in modules):
        return False
    for module in modules:
        current = getattr(module, _ATTR)
        if not hasattr(current, _MARK):
            setattr(module, _ATTR, _wrap(current, container_dir))
    return True


def hooked() -> bool:
    """Whether runs get their directory through the context variable (else the env swap)."""
    global _hooked
    with _install_lock:
        if _hooked is None:
            _hooked = _install()
            if not _hooked:
                log.warning("neptune: this client has no %s in its operation processors; "
                            "bridge sets %s around init_run instead", _ATTR, DATA_DIR_ENV)
        return _hooked


@contextmanager
def data_directory(path: Path) -> Iterator[None]:
    """Runs created by this thread inside the block keep their files under ``path`` (the
    ``.neptune`` directory itself)."""
    if hooked():
        token = _current.set(Path(path))
        try:
            yield
        finally:
            _current.reset(token)
        return
    with _env_lock:
        old = os.environ.get(DATA_DIR_ENV)
        os.environ[DATA_DIR_ENV] = str(path)
        try:
            yield
        finally:
            if old is None:
                os.environ.pop(DATA_DIR_ENV, None)
            else:
                os.environ[DATA_DIR_ENV] = old
