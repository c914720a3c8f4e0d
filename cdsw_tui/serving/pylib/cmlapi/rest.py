"""The HTTP side of ``cmlapi``: one JSON request to the workbench's ``/api/v2``, and
``ApiException`` for an answer that is not 2xx (as the generated CML client raises)."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ApiException(Exception):
    """An error answer: ``status`` (HTTP), ``reason`` and the ``body`` as sent."""

    def __init__(self, status: int = 0, reason: str = "", body: str = "") -> None:
        self.status = status
        self.reason = reason
        self.body = body
        super().__init__(f"({status}) {reason}" + (f"\nHTTP response body: {body}" if body else ""))


def request(
    method: str,
    url: str,
    key: str,
    query: dict[str, Any] | None = None,
    body: Any = None,
    timeout: float = 120.0,
) -> Any:
    if query:
        given = {k: v for k, v in query.items() if v is not None}
        if given:
            url += "?" + urllib.parse.urlencode(given)
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json", "Authorization": f"Bearer {key}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    handlers: list = [urllib.request.ProxyHandler({})]  # never a key to a proxy
    pem = os.environ.get("CDSW_TUI_GATEWAY_CA_PEM", "")
    if pem and url.startswith("https:"):  # the gateway's own certificate (or its CA)
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cadata=pem)))
    try:
        with urllib.request.build_opener(*handlers).open(req, timeout=timeout) as answer:
            text = answer.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode("utf-8", "replace")
        try:
            reason = json.loads(raw)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            reason = exc.reason or ""
        raise ApiException(exc.code, str(reason), raw) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiException(
            0, f"the API at {url} cannot be reached: {getattr(exc, 'reason', exc)}"
        ) from None
    return json.loads(text) if text.strip() else {}
