"""Drop-in shims: ``import bridge.compat.mlflow as mlflow`` or ``import bridge.compat.wandb
as wandb`` turns a script written for MLflow's or W&B's fluent API into a bridge user.

Each shim is a thin layer over :func:`bridge.init` and :class:`bridge.Run`; neither imports
the vendor's SDK. What each supports is tabled in ``docs/integrations.md``.
"""

__all__: list[str] = []
