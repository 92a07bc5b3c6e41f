"""Weights & Biases, both directions: one package for everything bridge knows of W&B.

``names`` holds W&B's names and formats (the step key, reserved keys, status maps, file
names, label limits), shared by ``adapter`` (spool -> W&B; ``plan`` is what one session
writes), ``importer`` (W&B -> spool), ``log`` (bridge's reader of W&B's ``.wandb``
transaction log), ``bridge verify`` and ``bridge.compat.wandb``.
Importing this package never imports the ``wandb`` SDK; the adapter and the importer load
it when they are used.
"""

from __future__ import annotations

from bridge.adapters.wandb.adapter import (
    WandbAdapter,
    check_artifact_name,
    check_metric_key,
    check_tag,
)

__all__ = ["WandbAdapter", "check_artifact_name", "check_metric_key", "check_tag"]
