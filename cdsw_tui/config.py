"""Settings: defaults, then ``config.toml`` in CDSW_TUI_HOME, then ``CDSW_TUI_<NAME>`` variables."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from cdsw_tui.errors import CdswError


def default_ca_bundle() -> str:
    """An extra CA bundle for builds, detected the way pip and requests users set it."""
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(name, "")
        if value and Path(value).is_file():
            return value
    return ""


@dataclass
class Settings:
    home: Path
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8787
    busy_timeout: float = 30.0
    request_timeout: float = 30.0
    header_timeout: float = 10.0  # for a request's head to arrive (slow-header callers)
    max_request_bytes: int = 5 * 1024 * 1024
    max_response_bytes: int = 50 * 1024 * 1024  # a model's answer beyond this is a 502
    request_log_size: int = 1000  # recent calls per model the gateway keeps in memory
    runtime: str = "local"
    engine_image: str = "cdsw-tui/engine:latest"
    ca_bundle: str = ""
    registry: str = ""  # host:port swarm builds are pushed to ("": this home's own)
    replica_uid: str = "auto"  # the uid model code runs as (auto: one no host account has)
    build_timeout: float = 30 * 60.0
    log_max_mb: float = 20.0  # each log file (controller, build, replica) rotates at this
    max_snapshot_file_mb: float = 50.0
    build_workers: int = 2
    poll_interval: float = 0.2

    @property
    def db_path(self) -> Path:
        return self.home / "cdsw.db"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.gateway_host}:{self.gateway_port}"


def home_dir() -> Path:
    return Path(os.environ.get("CDSW_TUI_HOME") or Path.home() / ".cdsw-tui").expanduser()


def _coerce(name: str, raw: object, kind: type) -> object:
    try:
        if kind is bool:
            return str(raw).lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except (TypeError, ValueError):
        raise CdswError(f"setting {name.upper()} has an invalid value {raw!r}") from None


def load_settings(home: Path | None = None) -> Settings:
    home = home or home_dir()
    values: dict[str, object] = {}
    config_file = home / "config.toml"
    if config_file.is_file():
        try:
            data = tomllib.loads(config_file.read_text())
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise CdswError(f"cannot read {config_file}: {exc}") from None
        values.update({k.lower(): v for k, v in data.items()})
    for f in fields(Settings):
        env = os.environ.get(f"CDSW_TUI_{f.name.upper()}")
        if env is not None and f.name != "home":
            values[f.name] = env
    kinds = {f.name: f.type for f in fields(Settings)}
    typed: dict[str, object] = {}
    for name, raw in values.items():
        if name not in kinds or name == "home":
            continue
        kind = {"int": int, "float": float, "str": str, "bool": bool}.get(str(kinds[name]), str)
        typed[name] = _coerce(name, raw, kind)
    settings = Settings(home=home, **typed)  # type: ignore[arg-type]
    if not settings.ca_bundle:
        settings.ca_bundle = default_ca_bundle()
    return settings


def write_config(path: Path, updates: dict[str, object]) -> None:
    """Rewrite the given keys of config.toml and keep the others (flat TOML only)."""
    data: dict[str, object] = {}
    if path.exists():
        data = tomllib.loads(path.read_text())
    data.update(updates)
    lines = []
    for key, value in data.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value}")
        else:
            escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{key} = "{escaped}"')
    path.write_text("\n".join(lines) + "\n")
