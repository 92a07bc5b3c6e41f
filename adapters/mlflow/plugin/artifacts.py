"""MLflow's artifact repository over bridge's content-addressed blob store.

A run's artifacts (``bridge://<dir>/_bridge/runs/<run id>/artifacts``) are ``artifact``
events of that run; a logged model's (``.../_bridge/models/<model id>/artifacts``) are
``model`` events (op ``files``) of its source run. The bytes are copied into
``<dir>/blobs`` (bridge.spool.blobs), so they outlive the caller's temporary files, and
listing or downloading reads the events back.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from pathlib import Path

from mlflow.entities import FileInfo
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.store.artifact.artifact_repo import ArtifactRepository

from bridge.adapters.mlflow.plugin import reads, session
from bridge.spool import blobs
from bridge.spool.events import Kind, artifact_payload, model_payload


def _clean(path: str | None) -> str:
    """A relative path inside the repository, normalized; refusing ``..`` and absolute."""
    if not path:
        return ""
    if path.startswith("/") or ".." in path.replace("\\", "/").split("/"):
        raise MlflowException(f"Invalid artifact path: '{path}'", INVALID_PARAMETER_VALUE)
    return "/".join(p for p in path.replace("\\", "/").split("/") if p not in ("", "."))


class BridgeArtifactRepository(ArtifactRepository):
    def __init__(self, artifact_uri: str, tracking_uri: str | None = None,
                 registry_uri: str | None = None) -> None:
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        self.spool_path, self.what, self.owner, self.root = session.parse_artifact_uri(
            artifact_uri)

    def _store(self):
        from bridge.adapters.mlflow.plugin.store import BridgeStore

        return BridgeStore(f"{session.SCHEME}://{self.spool_path.as_posix()}")

    # -- writes ------------------------------------------------------------------------------
    def _record(self, folder: str, files: list[tuple[Path, str]]) -> None:
        """Store ``files`` ((local file, path below ``folder``)) and record one event."""
        folder = posixpath.join(self.root, folder) if self.root else folder
        entries = []
        store = self._store()
        for local, rel in files:
            sha, size = blobs.store_file(self.spool_path, local)
            entries.append({"path": rel, "sha256": sha, "size": size})
        run_id = store._model_run(self.owner) if self.what == "models" else self.owner
        with store._writing(run_id) as run:
            for e in entries:
                run._writer.put_blob(e["sha256"], e["size"])
            if self.what == "models":
                run._record(Kind.MODEL, "log_model_artifacts", self.owner, model_payload(
                    "files", path=folder or None, files=entries))
                return
            # The event's key names the artifact elsewhere (a W&B artifact): the folder, the
            # single file, or "files" for several files at the root.
            name = folder or (entries[0]["path"] if len(entries) == 1 else "files")
            run._record(Kind.ARTIFACT, "log_artifact", name, artifact_payload(
                name, entries, is_dir=len(entries) > 1, folder=folder or None))

    def log_artifact(self, local_file, artifact_path=None):
        local = Path(local_file)
        self._record(_clean(artifact_path), [(local, local.name)])

    def log_artifacts(self, local_dir, artifact_path=None):
        root = Path(local_dir)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if files:
            self._record(_clean(artifact_path),
                         [(p, p.relative_to(root).as_posix()) for p in files])

    def delete_artifacts(self, artifact_path=None):
        raise session.not_supported(
            "Deleting artifacts", "Artifacts in the spool are kept until synced; delete them "
            "in the MLflow server bridge syncs to.")

    # -- reads -------------------------------------------------------------------------------
    def _files(self) -> dict[str, tuple[str, int]]:
        """Every file of the owner, by its path relative to this repository's root."""
        store = self._store()
        if self.what == "models":
            found = store._find_model(self.owner).files
        else:
            found = reads.fold(store._record(self.owner)).files
        if not self.root:
            return dict(found)
        prefix = self.root + "/"
        return {p[len(prefix):]: v for p, v in found.items() if p.startswith(prefix)}

    def list_artifacts(self, path=None):
        base = _clean(path)
        prefix = base + "/" if base else ""
        out: dict[str, FileInfo] = {}
        for p, (_, size) in self._files().items():
            if not p.startswith(prefix):
                continue
            head = p[len(prefix):].split("/", 1)
            child = prefix + head[0]
            if len(head) == 1:
                out[child] = FileInfo(child, False, size)
            else:
                out.setdefault(child, FileInfo(child, True, None))
        return [out[k] for k in sorted(out)]

    def _download_file(self, remote_file_path, local_path):
        entry = self._files().get(_clean(remote_file_path))
        if entry is None:
            raise MlflowException(f"No such artifact: '{remote_file_path}'",
                                  RESOURCE_DOES_NOT_EXIST)
        os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
        shutil.copyfile(blobs.blob_path(self.spool_path, entry[0]), local_path)
