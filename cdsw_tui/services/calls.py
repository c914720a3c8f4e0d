"""Calling a model through the gateway, as any client would, but only ours.

The client never goes through a proxy for the loopback gateway (a proxy would see the
access key), and before it sends a key it asks the gateway to prove that it is this
home's controller: an HMAC of a fresh challenge under the secret in the home's identity
file, which only a process that can read the home knows. Whatever else listens on the
gateway port (a local user who bound it first) gets no key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from cdsw_tui.errors import CdswError
from cdsw_tui.services.context import Workbench
from cdsw_tui.serving.tls import client_context
from cdsw_tui.store import Model

IDENTITY_FILE = Path("run") / "gateway.identity"


@dataclass
class CallResult:
    status: int
    body: dict
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.body.get("success"))


_CLIENTS: dict[str, httpx.Client] = {}


def _client(wb: Workbench) -> httpx.Client:
    """One pooled client per trust (plain HTTP, or the gateway's certificate), never
    through a proxy: a new one per call costs tens of ms."""
    trust = wb.settings.tls_trust
    client = _CLIENTS.get(trust)
    if client is None:
        verify: ssl.SSLContext | bool = client_context(trust) if trust else True
        client = _CLIENTS[trust] = httpx.Client(trust_env=False, verify=verify)
    return client


def new_identity(home: Path) -> bytes:
    """A new secret for this home's gateway (the controller makes one as it starts)."""
    path = home / IDENTITY_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(value)
    os.replace(tmp, path)
    return value


def _identity(home: Path) -> bytes:
    try:
        fd = os.open(home / IDENTITY_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def gateway_listening(wb: Workbench) -> bool:
    """Whether anything accepts connections on the gateway's address (ours or not)."""
    import socket

    try:
        with socket.create_connection(
            (wb.settings.gateway_host, wb.settings.gateway_port), timeout=1
        ):
            return True
    except OSError:
        return False


def verify_gateway(wb: Workbench, patience: float = 0.0, timeout: float = 10.0) -> None:
    """Raise unless what answers on the gateway's address is this home's controller;
    ``patience``: seconds to wait for a controller that is starting to listen; ``timeout``:
    for its answer."""
    url = wb.settings.gateway_url
    challenge = secrets.token_hex(16)
    deadline = time.monotonic() + patience
    while True:
        try:
            response = _client(wb).get(
                f"{url}/health", params={"challenge": challenge}, timeout=timeout
            )
            proof = response.json().get("proof", "")
            break
        except httpx.ConnectError:
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise CdswError(
                f"nothing listens at {url}: the controller is not running; start it with "
                "'cdsw-tui serve' (foreground) or any command that deploys"
            ) from None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise CdswError(
                f"the gateway at {url} did not answer ({type(exc).__name__}); "
                "'cdsw-tui status' shows the controller"
            ) from None
    identity = _identity(wb.home)
    expected = hmac.new(identity, challenge.encode(), hashlib.sha256).hexdigest()
    if not identity or not hmac.compare_digest(str(proof), expected):
        raise CdswError(
            f"what answers at {url} is not this home's controller; nothing was sent to it "
            "(another process holds the gateway port?)"
        )


def call(
    wb: Workbench,
    model: Model,
    request_json: str | None = None,
    timeout: float | None = None,
    api_key: str | None = None,
    patience: float = 0.0,
) -> CallResult:
    text = (
        request_json
        if request_json is not None and request_json.strip()
        else (model.example_input or "{}")
    )
    try:
        request = json.loads(text)
    except ValueError as exc:
        raise CdswError(f"the request is not valid JSON: {exc}") from None
    verify_gateway(wb, patience)
    payload = json.dumps({"accessKey": model.access_key, "request": request})
    headers = {"Content-Type": "application/json"}
    api_key = api_key or os.environ.get("CDSW_TUI_API_KEY", "")
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    start = time.perf_counter()
    try:
        response = _client(wb).post(
            f"{wb.settings.gateway_url}/model",
            content=payload,
            headers=headers,
            timeout=timeout or wb.settings.request_timeout + wb.settings.busy_timeout + 5,
        )
    except httpx.HTTPError as exc:
        raise CdswError(
            f"the gateway at {wb.settings.gateway_url} did not answer: {type(exc).__name__}"
        ) from None
    latency = (time.perf_counter() - start) * 1000
    try:
        body = response.json()
    except ValueError:
        body = {"success": False, "error": {"code": "gateway", "message": response.text[:200]}}
    return CallResult(response.status_code, body, latency)
