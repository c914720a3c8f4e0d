"""``/apps/<subdomain>/`` on the gateway's port: an application for callers who cannot
reach its 127.0.0.1 port (the gateway exposed with ``serve --host``), with the gateway's
TLS. A caller on this machine needs no key (it could open the port itself); any other
needs an API key (``apikey create``): ``Authorization: Bearer KEY``, or, for a browser,
``?api_key=KEY`` once, which sets a cookie for the application's path and redirects
without it. The request goes to the app with the prefix taken off (``X-Forwarded-Prefix``
says it), and a redirect to one of its own paths gets the prefix back.

HTTP only: the front refuses protocol upgrades, so WebSockets (Streamlit's, Gradio's) do
not pass here; such apps are reached at their own port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from cdsw_tui.services import api_keys, apps
from cdsw_tui.services.context import Workbench
from cdsw_tui.serving.gateway import error_response

PEER = "X-Cdsw-Peer"  # the caller's address, as the front saw it (it drops any sent one)
COOKIE = "cdsw_app_key"
LOCAL = ("127.0.0.1", "::1", "?")  # "?": the gateway's Unix socket (this machine)
TTL = 2.0  # seconds a subdomain's port is remembered
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
HOP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Transfer-Encoding", "TE", "Upgrade", "Content-Length",
              "Content-Encoding", "Proxy-Authorization", "Proxy-Authenticate", "Host", PEER)
)  # fmt: skip
ANSWER_HOP = frozenset(("connection", "keep-alive", "transfer-encoding", "te", "upgrade",
                        "content-length"))  # fmt: skip


def local(peer: str) -> bool:
    return peer in LOCAL or peer.startswith("127.")


class AppsProxy:
    def __init__(self, wb: Workbench) -> None:
        self.wb = wb
        self.ports: dict[str, tuple[float, int | None]] = {}
        self.session: aiohttp.ClientSession | None = None

    def _port(self, subdomain: str) -> int | None:
        try:
            return apps.resolve(self.wb, subdomain).port
        except Exception:
            return None

    async def port(self, subdomain: str) -> int | None:
        now = time.monotonic()
        seen = self.ports.get(subdomain)
        if seen is None or now - seen[0] > TTL:
            seen = (now, await asyncio.to_thread(self._port, subdomain))
            self.ports[subdomain] = seen
        return seen[1]

    async def allowed(self, request: web.Request) -> str | None:
        """None when the caller may go on, else why not."""
        if local(request.headers.get(PEER, "")):
            return None
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        key: str = bearer or request.query.get("api_key", "") or request.cookies.get(COOKIE, "")
        if key:
            good: bool = await asyncio.to_thread(api_keys.valid, self.wb, key)
            if good:
                return None
        return (
            "an application is reached from another machine with an API key: "
            "Authorization: Bearer KEY, or ?api_key=KEY in a browser (cdsw-tui apikey create)"
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        subdomain = request.match_info["subdomain"]
        prefix = f"/apps/{subdomain}"
        if "tail" not in request.match_info:
            raise web.HTTPFound(prefix + "/")
        refused = await self.allowed(request)
        if refused:
            return error_response(401, "auth.api_key_required", refused)
        if "api_key" in request.query:  # a browser's first visit: a cookie, not the URL
            answer = web.HTTPFound(request.rel_url.without_query_params("api_key"))
            answer.set_cookie(
                COOKIE, request.query["api_key"], path=prefix + "/", httponly=True,
                samesite="Strict", secure=self.wb.settings.gateway_url.startswith("https"),
            )  # fmt: skip
            return answer
        port = await self.port(subdomain)
        if port is None:
            return error_response(404, "request.invalid", f"no application {subdomain!r}")
        return await self._forward(request, port, prefix)

    async def _forward(self, request: web.Request, port: int, prefix: str) -> web.StreamResponse:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=300),
                auto_decompress=False,
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        # the caller's API key is ours to check, never the app's to read (app code is
        # untrusted): not its Authorization when that is one, nor our cookie
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if bearer.startswith("ak"):
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        cookies = [c for c in request.headers.getall("Cookie", []) if c]
        kept = "; ".join(
            part.strip()
            for c in cookies
            for part in c.split(";")
            if part.strip() and part.strip().split("=", 1)[0] != COOKIE
        )
        headers = {k: v for k, v in headers.items() if k.lower() != "cookie"}
        if kept:
            headers["Cookie"] = kept
        headers["X-Forwarded-Prefix"] = prefix
        headers["X-Forwarded-Host"] = request.headers.get("Host", "")
        headers["X-Forwarded-For"] = request.headers.get(PEER, "")
        url = f"http://127.0.0.1:{port}/{request.match_info['tail']}"
        if request.query_string:
            url += "?" + request.query_string
        body = await request.read()
        try:
            async with self.session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            ) as upstream:
                answer = web.Response(status=upstream.status, body=await upstream.read())
                for name, value in upstream.headers.items():
                    if name.lower() in ANSWER_HOP:
                        continue
                    if name.lower() == "location" and value.startswith("/"):
                        value = prefix + value
                    answer.headers.add(name, value)
                return answer
        except (aiohttp.ClientError, TimeoutError) as exc:
            return error_response(
                502, "replica.unavailable", f"the application does not answer: {type(exc).__name__}"
            )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def routes(wb: Workbench) -> tuple[AppsProxy, list[tuple[str, str, Callable[..., Any]]]]:
    proxy = AppsProxy(wb)
    found: list[tuple[str, str, Callable[..., Any]]] = []
    for path in ("/apps/{subdomain}", "/apps/{subdomain}/{tail:.*}"):
        found += [(method, path, proxy.handle) for method in METHODS]
    return proxy, found
