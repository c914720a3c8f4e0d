"""Calling a model through the gateway, as any client would."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx

from cdsw_tui.errors import CdswError
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Model


@dataclass
class CallResult:
    status: int
    body: dict
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.body.get("success"))


_CLIENT: httpx.Client | None = None


def _client() -> httpx.Client:
    """One pooled client: a new one per call costs tens of milliseconds of setup."""
    global _CLIENT
    if _CLIENT is None:
        _CLIENT = httpx.Client()
    return _CLIENT


def call(
    wb: Workbench, model: Model, request_json: str | None = None, timeout: float | None = None
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
    payload = json.dumps({"accessKey": model.access_key, "request": request})
    url = f"{wb.settings.gateway_url}/model"
    start = time.perf_counter()
    try:
        response = _client().post(
            url,
            content=payload,
            headers={"Content-Type": "application/json"},
            timeout=timeout or wb.settings.request_timeout + wb.settings.busy_timeout + 5,
        )
    except httpx.HTTPError as exc:
        raise CdswError(f"the gateway at {wb.settings.gateway_url} did not answer: {exc}") from None
    latency = (time.perf_counter() - start) * 1000
    try:
        body = response.json()
    except ValueError:
        body = {"success": False, "error": {"code": "gateway", "message": response.text[:200]}}
    return CallResult(response.status_code, body, latency)
