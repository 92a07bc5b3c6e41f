"""The shims and integrations stay light: importing them imports no vendor SDK or framework
beyond the one an integration is for."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("mlflow", "wandb", "torch", "lightning", "pytorch_lightning", "keras", "tensorflow",
         "transformers", "pandas", "psutil", "pynvml", "matplotlib", "accelerate", "xgboost",
         "lightgbm", "optuna", "ray")


def _loaded_after(code: str) -> set[str]:
    probe = (f"import sys\n{code}\n"
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    return set(filter(None, out.split(",")))


def test_shims_and_helpers_import_nothing_heavy():
    code = ("import bridge, bridge.compat.mlflow, bridge.compat.wandb, bridge.integrations, "
            "bridge.summary_writer, bridge.system_metrics, bridge.disabled")
    assert _loaded_after(code) == set()
