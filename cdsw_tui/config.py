"""Settings: defaults, then ``config.toml`` in CDSW_TUI_HOME, then ``CDSW_TUI_<NAME>`` variables.

pydantic-settings reads the variables and converts every value to its field's type (a
bad one is one line naming the setting); tomli-w writes config.toml back."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cdsw_tui.errors import CdswError

# CDSW_DOMAIN of every replica, build and run: ``http://modelservice.$CDSW_DOMAIN/model``,
# the URL AMP code builds, reaches this gateway from inside them (a hosts entry in a jail,
# the container's extra hosts on Docker); a name under .localhost, never a real domain's
DOMAIN = "cdsw-tui.localhost"
MODEL_SERVICE = f"modelservice.{DOMAIN}"
# the gateway's Unix socket in the home, which containers get (read-only) to reach it
GATEWAY_SOCKET = "run/gateway/gateway.sock"


def default_ca_bundle() -> str:
    """An extra CA bundle for builds, detected the way pip and requests users set it."""
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(name, "")
        if value and Path(value).is_file():
            return value
    return ""


def home_dir() -> Path:
    return Path(os.environ.get("CDSW_TUI_HOME") or Path.home() / ".cdsw-tui").expanduser()


class Settings(BaseSettings):
    """Every setting, with its default; docs/settings.md describes each."""

    model_config = SettingsConfigDict(env_prefix="CDSW_TUI_", extra="ignore")

    home: Path = Path()  # the home these were read for (set by load_settings, never a variable)
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8787
    busy_timeout: float = 30.0
    request_timeout: float = 30.0
    header_timeout: float = 10.0  # for a request's head to arrive (slow-header callers)
    keepalive_timeout: float = 75.0  # a connection idle between requests is closed after this
    max_connections: int = 0  # open gateway connections (0: by the controller's file limit)
    max_connections_per_peer: int = 0  # from one address (0: half of MAX_CONNECTIONS)
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
    min_free_mb: float = 200.0  # a build does not start with less free on the home's disk
    build_workers: int = 2
    local_memory_mb: int = 0  # what local replicas' --memory may add up to (0: MemTotal)
    run_workers: int = 2  # job runs and one-off runs at once (more wait, queued)
    poll_interval: float = 0.2
    tls_cert: str = ""  # the gateway's certificate (PEM): set with tls_key, it serves HTTPS only
    tls_key: str = ""
    tls_ca: str = ""  # what clients of the gateway trust ("": tls_cert itself, self-signed)
    allowed_hosts: str = ""  # names the gateway answers to beside its own ("*": any)
    cors_origins: str = ""  # origins whose pages may read calls' answers ("": none)
    require_api_keys: bool = False  # every model needs an API key, as if its auth were on
    http_parser: Literal["auto", "httptools", "h11"] = "auto"  # the gateway front's parser

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # variables over what load_settings passes in (config.toml's values) over defaults
        return (env_settings, init_settings)

    @property
    def db_path(self) -> Path:
        return self.home / "cdsw.db"

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def tls_trust(self) -> str:
        """The file clients of this gateway verify it with ("": plain HTTP)."""
        return (self.tls_ca or self.tls_cert) if self.tls else ""

    @property
    def gateway_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.gateway_host}:{self.gateway_port}"


def names() -> list[str]:
    """The settings' names, as config.toml keys (variables add CDSW_TUI_ and upper case)."""
    return [name for name in Settings.model_fields if name != "home"]


def _read_file(config_file: Path) -> dict[str, Any]:
    if not config_file.is_file():
        return {}
    try:
        data = tomllib.loads(config_file.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise CdswError(f"cannot read {config_file}: {exc}") from None
    return {k.lower(): v for k, v in data.items() if k.lower() in names()}


def load_settings(home: Path | None = None) -> Settings:
    home = home or home_dir()
    try:
        settings = Settings(**_read_file(home / "config.toml"))
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "?"
        raise CdswError(
            f"setting {name.upper()} has an invalid value {error.get('input')!r}"
        ) from None
    settings.home = home  # whatever CDSW_TUI_HOME says: the caller named this home
    if not settings.ca_bundle:
        settings.ca_bundle = default_ca_bundle()
    return settings


def write_config(path: Path, updates: dict[str, object]) -> None:
    """Rewrite the given keys of config.toml and keep the others."""
    data: dict[str, Any] = {}
    if path.exists():
        data = tomllib.loads(path.read_text())
    data.update(updates)
    path.write_text(tomli_w.dumps(data))
