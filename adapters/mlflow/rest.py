"""A small MLflow REST client: the calls the MLflow adapter makes, over one HTTP connection.

Why not ``mlflow.MlflowClient``: importing MLflow costs a sync process about 230 MB of
memory and a second or two of start-up, for the dozen endpoints the adapter uses. This
client speaks MLflow's REST API (``/api/2.0/mlflow/...``) and its artifact proxy
(``/api/2.0/mlflow-artifacts/...``, what ``mlflow server --serve-artifacts`` offers) with the
standard library alone. Its methods mirror ``MlflowClient``'s names and arguments, and what it
returns has the attributes the adapter reads (``run.info.run_id``, ``run.data.tags``, ...), so
the adapter's logic is the same for both clients.

It never retries on its own (the sync agent owns retries and backoff), except once on a
fresh connection when a reused keep-alive connection turns out to be closed by the server.
Credentials follow MLflow's environment variables: ``MLFLOW_TRACKING_TOKEN`` (bearer),
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (basic),
``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``,
``MLFLOW_TRACKING_CLIENT_CERT_PATH`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT``.

Runs whose artifact store is not the server's proxy (``s3://``, a shared path) have their
files written by ``MlflowClient``, imported then and only for those runs; the environment
variables it reads its HTTP settings from are given to it per call (``sdk_env``), never set
for the process.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import posixpath
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Mapping
from urllib.parse import quote, urlencode, urlsplit

from bridge.errors import VendorFormatError

__all__ = ["Metric", "MlflowRestClient", "MlflowRestError", "Param", "RunTag", "ViewType"]

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
# How a keep-alive connection the server closed while idle fails on reuse: nothing of the
# request was processed, so sending it again on a new connection is safe. A reset during a
# request is not among them: it goes to the agent, which retries with backoff.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError)


# -- the entities the adapter builds (same fields as mlflow.entities) ------------------
@dataclass(frozen=True)
class Metric:
    key: str
    value: float
    timestamp: int
    step: int


@dataclass(frozen=True)
class Param:
    key: str
    value: str


@dataclass(frozen=True)
class RunTag:
    key: str
    value: str


class ViewType:
    """``mlflow.entities.ViewType`` for ``search_runs``."""

    ACTIVE_ONLY = "ACTIVE_ONLY"
    DELETED_ONLY = "DELETED_ONLY"
    ALL = "ALL"


@dataclass(frozen=True)
class FileInfo:
    path: str
    is_dir: bool
    file_size: int | None = None


@dataclass
class RunInfo:
    run_id: str
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str
    run_name: str = ""


@dataclass
class RunData:
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    info: RunInfo
    data: RunData


@dataclass
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str


class MlflowRestError(VendorFormatError):
    """An error answer from the server, with MLflow's ``error_code`` and the HTTP status."""

    def __init__(self, message: str, error_code: str, http_status: int,
                 headers: Any = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.http_status = http_status
        # ``response.headers`` (case-insensitive) is where the adapter finds ``Retry-After``.
        self.response = SimpleNamespace(status_code=http_status, headers=headers or {})


def _float(value: float) -> float | str:
    """Non-finite values as protobuf's JSON mapping spells them (JSON has no NaN)."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _parse_run(obj: Mapping[str, Any]) -> Run:
    info = obj.get("info", {})
    data = obj.get("data", {})
    return Run(
        RunInfo(
            run_id=info.get("run_id") or info.get("run_uuid", ""),
            experiment_id=str(info.get("experiment_id", "")),
            status=info.get("status", ""),
            start_time=_int_or_none(info.get("start_time")),
            end_time=_int_or_none(info.get("end_time")),
            artifact_uri=info.get("artifact_uri", ""),
            lifecycle_stage=info.get("lifecycle_stage", "active"),
            run_name=info.get("run_name", ""),
        ),
        RunData(
            tags={t["key"]: t.get("value", "") for t in data.get("tags", [])},
            params={p["key"]: p.get("value", "") for p in data.get("params", [])},
            metrics={m["key"]: m.get("value") for m in data.get("metrics", [])},
        ),
    )


def _int_or_none(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


class MlflowRestClient:
    """The subset of ``MlflowClient`` the adapter uses, over MLflow's REST API."""

    def __init__(self, tracking_uri: str, timeout: float | None = None,
                 sdk_env: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(tracking_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) tracking URI: {tracking_uri!r}")
        self.tracking_uri = tracking_uri.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout or float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120"))
        self._headers = {"User-Agent": "tracking-bridge", "Accept": "application/json"}
        self._headers.update(_auth_header())
        self._local = threading.local()
        self._artifact_roots: dict[str, str | None] = {}
        self._sdk: Any = None  # MlflowClient, for artifact stores the server does not proxy
        self._sdk_env = dict(sdk_env or {})  # MLflow settings for its calls (see sdk_env)

    # -- transport ---------------------------------------------------------------------
    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not fresh:
            return conn
        if conn is not None:
            conn.close()
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                               context=_ssl_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (the next call opens a new one)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                 body: bytes | Any = None, headers: Mapping[str, str] | None = None,
                 length: int | None = None) -> tuple[int, bytes, Any]:
        url = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        hdrs = dict(self._headers)
        hdrs.update(headers or {})
        if length is not None:
            hdrs["Content-Length"] = str(length)
        reused = getattr(self._local, "conn", None) is not None
        for attempt in (0, 1):
            conn = self._connection(fresh=attempt > 0)
            try:
                if hasattr(body, "seek"):
                    body.seek(0)
                conn.request(method, url, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
            except _STALE as exc:
                self.close()
                if attempt == 0 and reused:
                    continue  # the server closed an idle keep-alive connection
                raise self._unreachable(method, url, exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._unreachable(method, url, exc) from exc
            except BaseException:
                self.close()
                raise
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, data, resp.headers
        raise AssertionError("unreachable")

    def _unreachable(self, method: str, url: str, exc: BaseException) -> MlflowRestError:
        """A request that got no answer (refused, reset, timed out): worth retrying."""
        where = f"{self._host}:{self._port}"
        return MlflowRestError(f"IO_ERROR: {method} {url} on {where} got no answer: "
                               f"{type(exc).__name__}: {exc}", "IO_ERROR", 0)

    def _call(self, method: str, endpoint: str, payload: Mapping[str, Any] | None = None) -> Any:
        if method == "GET":
            status, data, headers = self._request("GET", API + endpoint, query=payload)
        else:
            body = json.dumps(payload or {}, separators=(",", ":")).encode()
            status, data, headers = self._request(
                method, API + endpoint, body=body, length=len(body),
                headers={"Content-Type": "application/json"})
        return self._decode(status, data, headers, f"{API}{endpoint}")

    @staticmethod
    def _decode(status: int, data: bytes, headers: Any, endpoint: str) -> Any:
        if status == 200:
            try:
                return json.loads(data) if data.strip() else {}
            except ValueError:  # not MLflow: a login page, another web server
                raise MlflowRestError(
                    f"ENDPOINT_NOT_FOUND: {endpoint} answered 200 with a body that is not JSON "
                    f"(is the tracking URI an MLflow server?): "
                    f"{data[:200].decode('utf-8', 'replace')!r}",
                    "ENDPOINT_NOT_FOUND", status, headers) from None
        text = data.decode("utf-8", "replace")
        code, message = "", text
        try:
            err = json.loads(text)
            code, message = err.get("error_code", ""), err.get("message", text)
        except (ValueError, AttributeError):
            pass
        if not code:
            code = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                    404: "ENDPOINT_NOT_FOUND", 429: "REQUEST_LIMIT_EXCEEDED"}.get(
                        status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
        raise MlflowRestError(
            f"{code}: API request to endpoint {endpoint} failed with error code {status} != 200. "
            f"Response body: '{message[:1000]}'", code, status, headers)

    # -- experiments -------------------------------------------------------------------
    def get_experiment_by_name(self, name: str) -> Experiment | None:
        try:
            found = self._call("GET", "/experiments/get-by-name", {"experiment_name": name})
        except MlflowRestError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        e = found["experiment"]
        return Experiment(str(e["experiment_id"]), e.get("name", name),
                          e.get("artifact_location", ""), e.get("lifecycle_stage", "active"))

    def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
        body: dict[str, Any] = {"name": name}
        if artifact_location:
            body["artifact_location"] = artifact_location
        return str(self._call("POST", "/experiments/create", body)["experiment_id"])

    # -- runs --------------------------------------------------------------------------
    def create_run(self, experiment_id: str, start_time: int | None = None,
                   tags: Mapping[str, str] | None = None, run_name: str | None = None) -> Run:
        tags = dict(tags or {})
        body: dict[str, Any] = {
            "experiment_id": str(experiment_id),
            "user_id": tags.get("mlflow.user", "unknown"),
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        if start_time:
            body["start_time"] = int(start_time)
        if run_name:
            body["run_name"] = run_name
        return _parse_run(self._call("POST", "/runs/create", body)["run"])

    def get_run(self, run_id: str) -> Run:
        run = _parse_run(self._call("GET", "/runs/get", {"run_id": run_id})["run"])
        self._artifact_roots.setdefault(run_id, self._proxy_root(run.info.artifact_uri))
        return run

    def delete_run(self, run_id: str) -> None:
        self._call("POST", "/runs/delete", {"run_id": run_id})

    def search_runs(self, experiment_ids: Iterable[str], filter_string: str = "",
                    run_view_type: str = ViewType.ACTIVE_ONLY,
                    max_results: int = 1000) -> list[Run]:
        body = {"experiment_ids": [str(e) for e in experiment_ids], "filter": filter_string,
                "run_view_type": run_view_type, "max_results": int(max_results)}
        return [_parse_run(r) for r in self._call("POST", "/runs/search", body).get("runs", [])]

    def set_terminated(self, run_id: str, status: str = "FINISHED",
                       end_time: int | None = None) -> None:
        body: dict[str, Any] = {"run_id": run_id, "status": status}
        if end_time is not None:
            body["end_time"] = int(end_time)
        self._call("POST", "/runs/update", body)

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        self._call("POST", "/runs/set-tag", {"run_id": run_id, "key": key, "value": str(value)})

    def log_batch(self, run_id: str, metrics: Iterable[Metric] = (),
                  params: Iterable[Param] = (), tags: Iterable[RunTag] = ()) -> None:
        body = {
            "run_id": run_id,
            "metrics": [{"key": m.key, "value": _float(m.value), "timestamp": int(m.timestamp),
                         "step": int(m.step)} for m in metrics],
            "params": [{"key": p.key, "value": p.value} for p in params],
            "tags": [{"key": t.key, "value": t.value} for t in tags],
        }
        self._call("POST", "/runs/log-batch", body)

    # -- artifacts ---------------------------------------------------------------------
    def _proxy_root(self, artifact_uri: str) -> str | None:
        """The run's folder under the artifact proxy, or None if files go elsewhere."""
        if artifact_uri.startswith("mlflow-artifacts:"):
            rest = artifact_uri[len("mlflow-artifacts:"):]
            if rest.startswith("//"):  # mlflow-artifacts://host:port/path: another server
                return None
            return rest.lstrip("/")
        marker = ARTIFACTS_API + "/"
        if artifact_uri.startswith(self.tracking_uri) and marker in artifact_uri:
            return artifact_uri.split(marker, 1)[1]
        return None

    def _root(self, run_id: str) -> str | None:
        if run_id not in self._artifact_roots:
            self.get_run(run_id)
        return self._artifact_roots[run_id]

    def _client_sdk(self) -> Any:
        if self._sdk is None:
            import mlflow  # noqa: PLC0415 - only for stores the server does not proxy

            from bridge.adapters.mlflow.sdk_env import ScopedClient

            self._sdk = ScopedClient(mlflow.MlflowClient(tracking_uri=self.tracking_uri),
                                     self._sdk_env)
        return self._sdk

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        _inside_run(artifact_path)
        root = self._root(run_id)
        if root is None:
            self._client_sdk().log_artifact(run_id, local_path, artifact_path)
            return
        name = os.path.basename(local_path)
        dest = posixpath.join(root, artifact_path, name) if artifact_path else \
            posixpath.join(root, name)
        size = os.path.getsize(local_path)
        with open(local_path, "rb") as f:
            status, data, headers = self._request(
                "PUT", f"{ARTIFACTS_API}/{quote(dest)}", body=f, length=size,
                headers={"Content-Type": "application/octet-stream"})
        self._decode(status, data, headers, f"{ARTIFACTS_API}/{dest}")

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        base = Path(local_dir)
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = path.parent.relative_to(base).as_posix()
            sub = [p for p in (artifact_path, "" if rel == "." else rel) if p]
            self.log_artifact(run_id, str(path), posixpath.join(*sub) if sub else None)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._log_bytes(run_id, text.encode("utf-8"), artifact_file)

    def log_dict(self, run_id: str, dictionary: Any, artifact_file: str) -> None:
        """JSON (indent 2) or YAML by the file's extension, as ``MlflowClient.log_dict``."""
        if os.path.splitext(artifact_file)[1] in (".yml", ".yaml"):
            import yaml  # noqa: PLC0415 - MLflow's own dependency, needed only for YAML

            text = yaml.dump(dictionary, indent=2, default_flow_style=False)
        else:
            text = json.dumps(dictionary, indent=2, default=str)
        self._log_bytes(run_id, text.encode("utf-8"), artifact_file)

    def _log_bytes(self, run_id: str, data: bytes, artifact_file: str) -> None:
        _inside_run(artifact_file)
        root = self._root(run_id)
        if root is None:
            import tempfile  # noqa: PLC0415

            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / posixpath.basename(artifact_file)
                local.write_bytes(data)
                self._client_sdk().log_artifact(run_id, str(local),
                                                posixpath.dirname(artifact_file) or None)
            return
        dest = posixpath.join(root, artifact_file)
        status, body, headers = self._request(
            "PUT", f"{ARTIFACTS_API}/{quote(dest)}", body=data, length=len(data),
            headers={"Content-Type": "application/octet-stream"})
        self._decode(status, body, headers, f"{ARTIFACTS_API}/{dest}")

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        root = self._root(run_id)
        if root is None:
            return list(self._client_sdk().list_artifacts(run_id, path))
        where = posixpath.join(root, path) if path else root
        status, data, headers = self._request("GET", ARTIFACTS_API, query={"path": where})
        listed = self._decode(status, data, headers, ARTIFACTS_API)
        files = [FileInfo(posixpath.join(path, f["path"]) if path else f["path"],
                          bool(f.get("is_dir")), _int_or_none(f.get("file_size")))
                 for f in listed.get("files", [])]
        return sorted(files, key=lambda f: f.path)

    def download_artifacts(self, run_id: str, path: str, dst_path: str) -> str:
        """Download one file to ``dst_path/path`` and return where it is."""
        root = self._root(run_id)
        if root is None:
            return str(self._client_sdk().download_artifacts(run_id, path, dst_path))
        src = posixpath.join(root, path)
        status, data, headers = self._request("GET", f"{ARTIFACTS_API}/{quote(src)}")
        if status != 200:
            self._decode(status, data, headers, f"{ARTIFACTS_API}/{src}")
        local = Path(dst_path) / path
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        return str(local)


def _inside_run(path: str | None) -> None:
    """Refuse a name that is absolute or climbs out of the run's artifact folder, as MLflow
    refuses it, before anything is sent (the adapter checks first; this is the backstop)."""
    if not path:
        return
    if path.startswith(("/", "\\")) or ".." in path.replace("\\", "/").split("/") or (
            len(path) > 2 and path[1] == ":" and path[2] in "/\\"):
        raise MlflowRestError(
            f"INVALID_PARAMETER_VALUE: Invalid artifact path: {path!r} is absolute or leaves "
            "the run's artifact folder", "INVALID_PARAMETER_VALUE", 400)


def _auth_header() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}


def _ssl_context() -> ssl.SSLContext:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))
    client_cert = os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH")
    if client_cert:
        ctx.load_cert_chain(client_cert)
    return ctx
