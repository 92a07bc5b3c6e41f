"""Configuration: packaged defaults, the user's file, BRIDGE_* variables, init() arguments.

Read once per call of :func:`load`, validated once; a bad value is a clear
:class:`~bridge.errors.ConfigError`. The documented defaults live in ``config/bridge.toml``
(shipped as ``bridge/default_bridge.toml``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

__all__ = ["AgentSettings", "Settings", "default_dir", "load", "user_config_path",
           "with_file_options"]

_SYNC = ("background", "offline")
_DURABILITY = ("buffered", "commit", "fsync", "journal")


@dataclass(frozen=True)
class AgentSettings:
    interval: float = 5.0
    retry_initial: float = 0.5
    retry_max: float = 30.0
    retry_attempts: int = 8
    lease_seconds: float = 60.0
    chunk_size: int = 5000
    # Background sync of a RUNNING run: seconds between deliveries to backends that open a
    # vendor session per delivery (W&B; Comet offline). 0 = every pass, as before.
    session_interval: float = 300.0
    # `bridge agent` prunes runs every backend holds once they finished this many days ago
    # (bridge.agent.retention); 0 = off, the spool keeps everything until `bridge prune`.
    retention_days: float = 0.0


@dataclass(frozen=True)
class Settings:
    dir: Path = Path("~/.bridge")
    sync: str = "background"
    durability: str = "journal"
    flush_interval: float = 0.05
    max_queue: int = 100_000
    finish_timeout: float = 30.0
    strict: bool = False
    backends: tuple = ()
    # Bytes the spool may use (GB, decimal); `bridge doctor` warns at 80%. 0 = no quota.
    quota_gb: float = 0.0
    # log_artifact(copy=None) records files larger than this (MB, decimal) by reference
    # instead of copying them into the spool; 0 = always copy.
    artifact_reference_mb: float = 0.0
    agent: AgentSettings = field(default_factory=AgentSettings)
    # Default options per backend, from the config file's ``[backends.<name>]`` tables: used
    # by init() under the options it is given, and by ``bridge sync --backend NAME``.
    backend_options: dict = field(default_factory=dict)


def user_config_path() -> Path:
    if os.environ.get("BRIDGE_CONFIG"):
        return Path(os.environ["BRIDGE_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "bridge" / "bridge.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc


def _coerce(name: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is tuple:
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(value)
        if kind is Path:
            return Path(str(value)).expanduser()
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bridge config {name!r}: cannot use {value!r} ({exc})") from exc


_TYPES = {"dir": Path, "sync": str, "durability": str, "flush_interval": float, "max_queue": int,
          "finish_timeout": float, "strict": bool, "backends": tuple, "quota_gb": float,
          "artifact_reference_mb": float}


def _apply(settings: Settings, values: dict[str, Any], where: str) -> Settings:
    changes: dict[str, Any] = {}
    agent_changes: dict[str, Any] = {}
    agent_types = {f.name: type(getattr(AgentSettings(), f.name)) for f in fields(AgentSettings)}
    for key, value in values.items():
        if key == "agent" and isinstance(value, dict):
            for akey, avalue in value.items():
                if akey not in agent_types:
                    raise ConfigError(f"{where}: unknown setting agent.{akey}")
                agent_changes[akey] = _coerce(f"agent.{akey}", avalue, agent_types[akey])
        elif key in _TYPES:
            changes[key] = _coerce(key, value, _TYPES[key])
        else:
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(_TYPES)}")
    if agent_changes:
        changes["agent"] = replace(settings.agent, **agent_changes)
    return replace(settings, **changes)


def _env_values() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _TYPES:
        env = os.environ.get(f"BRIDGE_{key.upper()}")
        if env is not None:
            out[key] = env
    agent: dict[str, Any] = {}
    for f in fields(AgentSettings):
        env = os.environ.get(f"BRIDGE_AGENT_{f.name.upper()}")
        if env is not None:
            agent[f.name] = env
    if agent:
        out["agent"] = agent
    return out


def _backend_tables(tables: Any, where: str) -> dict[str, dict[str, Any]]:
    """``[backends.<name>]`` tables: plain option values per backend name."""
    from bridge.redact import is_secret_name, url_has_credentials

    if not isinstance(tables, dict) or not all(isinstance(v, dict) for v in tables.values()):
        raise ConfigError(f"{where}: 'backends' must be tables like [backends.comet]")
    for name, opts in tables.items():
        for key, value in opts.items():
            if is_secret_name(key) or (isinstance(value, str) and url_has_credentials(value)):
                raise ConfigError(
                    f"{where}: [backends.{name}] {key} holds a credential; bridge never stores "
                    "credentials: use the vendor's own environment variable instead")
    return {name: dict(opts) for name, opts in tables.items()}


def with_file_options(spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A backend spec over its ``[backends.<name>]`` defaults (the spec's own options win)."""
    return {**settings.backend_options.get(spec["name"], {}), **spec}


def load(**overrides: Any) -> Settings:
    """Settings from defaults < user file < environment < ``overrides`` (None = unset)."""
    settings = Settings()
    user = _read_toml(user_config_path())
    if user:
        flat = dict(user.get("bridge", {}))
        if "agent" in user:
            flat["agent"] = user["agent"]
        settings = _apply(settings, flat, str(user_config_path()))
        settings = replace(settings, backend_options=_backend_tables(
            user.get("backends", {}), str(user_config_path())))
    settings = _apply(settings, _env_values(), "environment")
    settings = _apply(settings, {k: v for k, v in overrides.items() if v is not None}, "init()")
    if settings.sync not in _SYNC:
        raise ConfigError(f"sync must be one of {_SYNC}, got {settings.sync!r}")
    if settings.durability not in _DURABILITY:
        raise ConfigError(f"durability must be one of {_DURABILITY}, got {settings.durability!r}")
    if settings.flush_interval <= 0 or settings.max_queue < 1:
        raise ConfigError("flush_interval must be > 0 and max_queue >= 1")
    if (settings.agent.retention_days < 0 or settings.quota_gb < 0
            or settings.artifact_reference_mb < 0):
        raise ConfigError("agent.retention_days, quota_gb and artifact_reference_mb must be "
                          ">= 0 (0 = off)")
    if settings.agent.session_interval < 0:
        raise ConfigError("agent.session_interval must be >= 0 seconds")
    return replace(settings, dir=Path(settings.dir).expanduser())


def default_dir() -> Path:
    """The spool directory used when none is given: BRIDGE_DIR, the user file, ~/.bridge."""
    return load().dir
