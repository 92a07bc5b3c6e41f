"""The vendor files bridge's adapters write, with their upload state where bridge can know it.

- W&B offline session dirs (``<dir>/wandb/offline-run-*``, ``dir`` defaulting to
  ``<spool>/wandb-out``): ``synced`` when ``wandb sync`` left its marker
  (``run-<id>.wandb.synced`` beside the log), else ``not uploaded``;
- Comet offline archives (``<offline_directory>/*.zip``): ``not uploaded`` — Comet leaves
  no marker, only the user can confirm ``comet upload`` ran;
- Neptune offline dirs (``<data_dir>/.neptune/offline/run__*``): ``not uploaded`` — likewise
  for ``neptune sync``.

Where they live comes from the defaults under the spool and the backend options each run
names. :func:`prune_vendor_files` removes the synced ones, and with ``confirm_uploaded`` the
others too, but never one that belongs to a run with events still pending for that backend.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["NOT_UPLOADED", "SYNCED", "VendorFile", "list_vendor_files", "prune_vendor_files"]

SYNCED = "synced"
NOT_UPLOADED = "not uploaded"
VENDORS = ("wandb", "comet", "neptune")


@dataclass
class VendorFile:
    backend: str  # wandb, comet or neptune
    path: Path
    run_id: str | None  # the bridge run it belongs to, when bridge can tell
    state: str  # SYNCED or NOT_UPLOADED
    bytes: int
    action: str = ""  # what prune did or would do with it, and why

    def as_dict(self) -> dict:
        return {"backend": self.backend, "path": str(self.path), "run_id": self.run_id,
                "state": self.state, "bytes": self.bytes, "action": self.action}


def _size(path: Path) -> int:
    from bridge.spool.sizes import _tree_bytes

    try:
        return path.stat().st_size if path.is_file() else _tree_bytes(path)
    except OSError:
        return 0


def _roots(spool_dir: Path, records: list) -> dict[str, set[Path]]:
    """Every directory an adapter may have written into, per vendor."""
    from bridge.adapters.comet import names as comet_names
    from bridge.adapters.neptune import names as neptune_names
    from bridge.adapters.wandb import names as wandb_names

    roots: dict[str, set[Path]] = {v: set() for v in VENDORS}
    roots["wandb"].add(wandb_names.default_dir(spool_dir) / wandb_names.WANDB_SUBDIR)
    roots["comet"].add(spool_dir / comet_names.DEFAULT_OFFLINE_DIR)
    if os.environ.get(comet_names.OFFLINE_DIR_ENV):
        roots["comet"].add(Path(os.environ[comet_names.OFFLINE_DIR_ENV]).expanduser())
    roots["neptune"].add(spool_dir / neptune_names.SPOOL_SUBDIR)
    for rec in records:
        for b in rec.backends or []:
            name = b.get("name")
            if name == "wandb" and b.get("dir"):
                roots["wandb"].add(Path(b["dir"]).expanduser() / wandb_names.WANDB_SUBDIR)
            elif name == "comet" and b.get("offline_directory"):
                roots["comet"].add(Path(b["offline_directory"]).expanduser())
            elif name == "neptune" and b.get("data_dir"):
                roots["neptune"].add(Path(b["data_dir"]).expanduser())
    return {v: {p.absolute() for p in ps} for v, ps in roots.items()}


def list_vendor_files(spool_dir: Path, records: list | None = None) -> list[VendorFile]:
    """The vendor files under every root bridge knows of, oldest path name first."""
    from bridge.adapters.comet import offline as comet_offline
    from bridge.adapters.neptune import offline as neptune_offline
    from bridge.adapters.wandb import names as wandb_names
    from bridge.spool.reader import list_runs

    spool_dir = Path(spool_dir)
    if records is None:
        records = list_runs(spool_dir) if spool_dir.exists() else []
    by_wandb_id = {wandb_names.remote_run_id(r.run_id): r.run_id for r in records}
    out: list[VendorFile] = []
    roots = _roots(spool_dir, records)
    for root in sorted(roots["wandb"]):
        if not root.is_dir():
            continue
        for d in sorted(root.iterdir()):
            key = wandb_names.session_key(d.name)
            if key is None or not d.is_dir() or not d.name.startswith("offline-"):
                continue
            log = d / wandb_names.log_file_name(key[1])
            synced = Path(f"{log}.synced").exists()
            out.append(VendorFile("wandb", d, by_wandb_id.get(key[1]),
                                  SYNCED if synced else NOT_UPLOADED, _size(d)))
    for root in sorted(roots["comet"]):
        if not root.is_dir():
            continue
        for z in comet_offline.find_archives(root):
            try:
                head = comet_offline.read_head(z)
                run_id = (head.ledger or {}).get("run_id")
            except Exception:  # a foreign or unfinished zip: listed, owner unknown
                run_id = None
            out.append(VendorFile("comet", z, run_id, NOT_UPLOADED, _size(z)))
    for root in sorted(roots["neptune"]):
        if not root.is_dir():
            continue
        for d in neptune_offline.find_run_dirs(root):
            try:
                run_id = neptune_offline.bridge_run_id_of(d)
            except Exception:
                run_id = None
            out.append(VendorFile("neptune", d, run_id, NOT_UPLOADED, _size(d)))
    return out


def _pending(spool_dir: Path, records: list) -> dict[tuple[str, str], int]:
    """(run id, vendor) -> events still pending for a backend of that vendor."""
    from bridge.agent.status import spool_status
    from bridge.agent.sync import backend_label

    vendor_of = {(r.run_id, backend_label(b)): str(b.get("name"))
                 for r in records for b in r.backends or []}
    pending: dict[tuple[str, str], int] = {}
    if not Path(spool_dir).exists():
        return pending
    for st in spool_status(Path(spool_dir), []):
        for b in st.backends:
            if not b.pending:
                continue
            # a label bridge cannot map to a vendor holds back every vendor's files
            vendors = [vendor_of[(st.run_id, b.backend)]] if (
                st.run_id, b.backend) in vendor_of else list(VENDORS)
            for vendor in vendors:
                pending[(st.run_id, vendor)] = pending.get((st.run_id, vendor), 0) + b.pending
    return pending


def prune_vendor_files(spool_dir: Path, *, confirm_uploaded: bool = False,
                       backends: Iterable[str] | None = None, runs: Iterable[str] | None = None,
                       dry_run: bool = False) -> tuple[list[VendorFile], list[str]]:
    """List the vendor files and remove the removable ones; returns them and any errors."""
    wanted = set(backends) if backends else None
    refs = set(runs) if runs else None
    from bridge.spool.reader import list_runs

    spool_dir = Path(spool_dir)
    records = list_runs(spool_dir) if spool_dir.exists() else []
    files = [f for f in list_vendor_files(spool_dir, records)
             if (wanted is None or f.backend in wanted)
             and (refs is None or (f.run_id is not None and any(
                 f.run_id == r or (len(r) >= 6 and f.run_id.startswith(r)) for r in refs)))]
    pending = _pending(spool_dir, records)
    errors: list[str] = []
    for f in files:
        waiting = pending.get((f.run_id, f.backend), 0) if f.run_id else 0
        if waiting:
            f.action = f"kept: {waiting} events pending for {f.backend}"
        elif f.state != SYNCED and not confirm_uploaded:
            f.action = "kept: not known to be uploaded (--confirm-uploaded removes it)"
        elif dry_run:
            f.action = "would remove"
        else:
            try:
                if f.path.is_dir():
                    shutil.rmtree(f.path)
                else:
                    f.path.unlink()
                f.action = "removed"
            except OSError as exc:
                f.action = "kept: removal failed"
                errors.append(f"{f.path}: {exc}")
    return files, errors
