"""The rest of MLflow's API behind ``bridge.compat.mlflow``, through MLflow itself.

The shim covers the fluent calls a training loop makes (and makes them cheap); everything
else MLflow offers — ``mlflow.sklearn.log_model`` and the other flavors, ``autolog``,
``MlflowClient``, ``search_runs``, ``log_input`` — is MLflow's own code, pointed at bridge's
tracking-store plugin (``bridge:///<spool dir>``, docs/mlflow-plugin.md) so that it records
into the same spool and, while a shim run is active, into the same run. Nothing here is
imported until a script asks the shim for something it does not define.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.errors import MissingDependency

__all__ = ["attribute", "bind", "enabled", "unbind"]

_enabled = False


def enabled() -> bool:
    """Whether a script has reached MLflow through the shim (then later shim runs are
    MLflow's active runs too)."""
    return _enabled


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as exc:
        raise MissingDependency(
            "this part of MLflow's API runs MLflow's own code over the spool: "
            "pip install 'tracking-bridge[mlflow]'") from exc
    return mlflow


def _point_at(mlflow: Any, spool: Path) -> None:
    from bridge.adapters.mlflow.plugin.session import SCHEME

    uri = f"{SCHEME}://{Path(spool).resolve().as_posix()}"
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)


def bind(run: Any) -> None:
    """Make ``run`` (a bridge run the shim started) MLflow's active run, recorded through the
    plugin into the very same bridge run object."""
    global _enabled
    mlflow = _mlflow()
    from bridge.adapters.mlflow.plugin import session

    _enabled = True
    _point_at(mlflow, run.dir)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run.id:
        return
    spool = session.spool(Path(run.dir).resolve())
    spool.runs[run.id] = run
    run.flush()  # MLflow reads the run back before it makes it active
    mlflow.start_run(run_id=run.id, nested=active is not None)


def unbind(run_id: str, status: str) -> None:
    """End MLflow's active run when it is the shim's ``run_id``."""
    if not _enabled:
        return
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)


def attribute(name: str, run: Any | None, spool: Path | None) -> Any:
    """MLflow's own ``mlflow.<name>``, with MLflow recording into the spool: into ``run``
    when the shim has one active, else into ``spool`` (the shim's configured directory)."""
    global _enabled
    mlflow = _mlflow()
    if not hasattr(mlflow, name):
        raise AttributeError(f"module 'mlflow' has no attribute {name!r}")
    if run is not None:
        bind(run)
    else:
        from bridge.config import default_dir

        _enabled = True
        _point_at(mlflow, Path(spool or default_dir()).expanduser())
    return getattr(mlflow, name)
