"""The gateway (SPEC §2): the front on its port (serving/front.py) answers the calls;
this is the rest: health, metrics, OpenAPI and the controller's API paths, an aiohttp
application the front hands those requests to, and the start of it all."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web, web_protocol, web_server

from cdsw_tui.config import Settings
from cdsw_tui.serving import limits, openapi
from cdsw_tui.serving.admission import Admission
from cdsw_tui.serving.calllog import CallLog
from cdsw_tui.serving.callpath import CallPath, error_body
from cdsw_tui.serving.front import Front
from cdsw_tui.serving.metrics import GatewayMetrics
from cdsw_tui.serving.openapi import CALL_PATHS
from cdsw_tui.serving.pool import Pool, PooledReplica
from cdsw_tui.serving.router import Route, Router
from cdsw_tui.serving.tls import LOOPBACK, exposure_warning

METRICS_TTL = 1.0  # seconds a rendering of /metrics is served again
BACKLOG = 1024  # connections the kernel holds until accepted (asyncio's 100 drops bursts)
log = logging.getLogger("cdsw_tui.gateway")


def error_response(
    status: int, code: str, message: str, replica: str | None = None
) -> web.Response:
    return web.Response(
        status=status, body=error_body(code, message, replica), content_type="application/json"
    )


def prove(identity: bytes, challenge: str) -> str:
    return hmac.new(identity, challenge.encode(), hashlib.sha256).hexdigest()


class BodyTooLarge(Exception):
    pass


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, or BodyTooLarge as soon as it passes ``limit`` (chunked bodies too)."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise BodyTooLarge
        return await request.read()  # bounded by the length just checked
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        metrics: GatewayMetrics,
        *,
        on_replica_failed: Callable[[Pool, PooledReplica, str], None],
    ) -> None:
        self.settings = settings
        self.router = router
        self.metrics = metrics
        self.on_replica_failed = on_replica_failed
        self.started = time.time()
        self.identity = b""  # the secret of the home's identity file, set by the controller
        self.calls = CallLog(settings.request_log_size)
        self.callpath = CallPath(settings, router, metrics, self.calls, on_replica_failed)
        # (method, path, handler) the controller adds before the gateway listens
        self.extra_routes: list[tuple[str, str, Callable]] = []
        self._scrape: tuple[float, asyncio.Future[bytes]] | None = None  # the last /metrics

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_request_bytes + 1)
        for path in CALL_PATHS:  # POST is the front's; any other method is told so
            app.router.add_route("*", path, wrong_method)
        for path, handler in (
            ("/health", self.health),
            ("/metrics", self.prometheus),
            ("/health/{project}/{model}", self.model_health),
            ("/models/{project}/{model}/openapi.json", self.openapi),
        ):
            app.router.add_get(path, handler)
            app.router.add_route("*", path, wrong_method)
        for method, path, handler in self.extra_routes:
            app.router.add_route(method, path, handler)
        for path in dict.fromkeys(path for _m, path, _h in self.extra_routes):  # each path once,
            app.router.add_route("*", path, wrong_method)  # after all of its methods
        # routes, not a middleware: 404 and 405 in SPEC's shape cost the calls nothing
        app.router.add_route("*", "/{tail:.*}", no_such_path)
        return app

    async def health(self, request: web.Request) -> web.Response:
        pools = list(self.router.pools.values())
        body: dict[str, object] = {
            "status": "ok",
            "uptime": round(time.time() - self.started, 1),
            "models": len(self.router.routes),
            "deployments": len(pools),
            "replicas": sum(p.healthy() for p in pools),
        }
        challenge = request.query.get("challenge", "")
        if self.identity and challenge:
            # proves this gateway is the home's own to a client that can read the home
            body["proof"] = prove(self.identity, challenge[:128])
        return web.json_response(body)

    def _named(self, request: web.Request) -> Route | web.Response:
        project, name = request.match_info["project"], request.match_info["model"]
        route = self.router.named(project, name)
        if route is None:
            return error_response(404, "request.invalid", f"no model {project}/{name}")
        return route

    async def model_health(self, request: web.Request) -> web.Response:
        """One model's readiness, for load balancers and probes: no key asked, none shown."""
        route = self._named(request)
        if isinstance(route, web.Response):
            return route
        label = f"{route.project}/{route.name}"
        pool = self.router.pools.get(route.model_id)
        body: dict[str, object] = {"project": route.project, "model": route.name}
        ready = 0
        if pool is not None and not pool.closed:
            ready = pool.healthy()
            body["deployment"] = pool.deployment_id
            body["build"] = pool.build_number
            body["replicas"] = {"ready": ready, "wanted": pool.wanted}
        else:
            body.update(deployment=None, build=None, replicas={"ready": 0, "wanted": 0})
        body["latency_ms"] = self.calls.percentiles(route.model_id)
        if ready:
            return web.json_response(dict(body, status="ready"))
        body = {
            "success": False,
            "error": {
                "code": "model.not_deployed",
                "message": f"model {label} has no ready replica",
            },
            "status": "unavailable",
            **body,
        }
        return web.json_response(body, status=503)

    async def openapi(self, request: web.Request) -> web.Response:
        route = self._named(request)
        if isinstance(route, web.Response):
            return route
        info = route.describe()
        doc = openapi.document(
            project=route.project,
            model=route.name,
            server=f"{'https' if self.settings.tls else 'http'}://{request.host}",
            api_key_required=route.auth_enabled or self.settings.require_api_keys,
            **info,
        )
        return web.json_response(doc)

    def meter(self) -> None:
        """Count the calls answered since the last count into the metrics."""
        self.metrics.catch_up(self.calls.take_unmetered())

    async def prometheus(self, _request: web.Request) -> web.Response:
        """Rendered in a thread, at most once a METRICS_TTL: anyone may ask, as often as
        they like, and the calls on the loop do not wait for it."""
        now = time.monotonic()
        if self._scrape is None or now - self._scrape[0] >= METRICS_TTL:
            self.meter()
            for pool in self.router.pools.values():
                route = self._route_name(pool.model_id)
                self.metrics.replicas.labels(route, pool.label).set(pool.healthy())
            self._scrape = (now, asyncio.ensure_future(asyncio.to_thread(self.metrics.render)))
        body = await asyncio.shield(self._scrape[1])
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    def _route_name(self, model_id: int) -> str:
        route = self.router.by_model.get(model_id)
        return route.label if route is not None else str(model_id)


class _Protocol(web_protocol.RequestHandler):
    """aiohttp's connection handler, made to keep callers' bytes to itself: an error is
    answered in SPEC's JSON without echoing the request (aiohttp quotes it, access key
    and all) and logged in one line without it. (It only ever sees what the front
    re-framed, but a handler's failure must not quote a request either.)"""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        what = type(exc).__name__ if exc is not None else f"status {status}"
        log.warning("bad request: %s", what)  # never its text
        if request.writer.output_size > 0:
            raise ConnectionError("the response was under way; the connection is closed")
        if status >= 500:
            response = error_response(500, "gateway.error", "the gateway failed on this request")
        else:
            response = error_response(status, "request.invalid", "the request is not valid HTTP")
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        what = type(exc).__name__ if isinstance(exc, BaseException) else "an error"
        log.error("the gateway failed on a request: %s", what)  # no traceback: it may quote it


class _Server(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # aiohttp builds it; we only change which handler it makes
        return server


async def no_such_path(request: web.Request) -> web.Response:
    return error_response(
        404, "request.invalid", f"no such path {request.path!r}; models are called at POST /model"
    )


async def wrong_method(request: web.Request) -> web.Response:
    return error_response(
        405, "request.invalid", f"{request.method} is not allowed on {request.path}"
    )


class Listening:
    """The gateway's port (and its Unix socket), served by the front, and the aiohttp
    application behind it."""

    def __init__(self, servers: list[asyncio.Server], front: Front, runner: web.AppRunner) -> None:
        self.servers = servers
        self.front = front
        self.runner = runner

    async def cleanup(self) -> None:
        for server in self.servers:
            server.close()
        self.front.close()
        await self.runner.cleanup()


async def _unix_listener(
    loop: asyncio.AbstractEventLoop,
    front: Front,
    path: Path,
    ssl_context: ssl.SSLContext | None,
    owner: int,
) -> asyncio.Server:
    """The gateway on a Unix socket for containers (mounted read-only into them): its
    folder is ours, made afresh; the socket is the uid model code runs as (``owner``),
    or, under a controller that cannot give it away, open to all inside the 0700 home."""
    folder = path.parent
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        folder.unlink()
    folder.mkdir(mode=0o700, exist_ok=True)
    path.unlink(missing_ok=True)
    server = await loop.create_unix_server(
        front, str(path), backlog=BACKLOG, ssl=ssl_context,
        ssl_handshake_timeout=front.header_timeout if ssl_context is not None else None,
    )  # fmt: skip
    if os.geteuid() == 0 and owner >= 0:  # the uid's alone (containers mount it read-only)
        os.chown(path, owner, owner)
        os.chmod(path, 0o600)
        os.chown(folder, owner, owner, follow_symlinks=False)
        os.chmod(folder, 0o700)
    else:  # inside the 0700 home: only the containers that mount it get in
        os.chmod(path, 0o666)
        os.chmod(folder, 0o755)
    return server


async def start_gateway(
    gateway: Gateway,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    unix_path: Path | None = None,
    unix_owner: int = -1,
) -> Listening:
    """Listen on ``host:port`` (and ``unix_path``): HTTPS only when ``ssl_context`` is
    given (a plain HTTP request then fails its handshake and is closed)."""
    settings = gateway.settings
    total, per_peer = limits.connection_caps(
        settings.max_connections, settings.max_connections_per_peer
    )
    runner = _Runner(gateway.app(), access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    front = Front(
        gateway.callpath,
        runner.server,
        max_body=settings.max_request_bytes,
        header_timeout=settings.header_timeout,
        body_timeout=settings.request_timeout,
        keepalive=settings.keepalive_timeout,
        connections=limits.Connections(total, per_peer),
        admission=Admission(host, settings.allowed_hosts, settings.cors_origins),
        parser=settings.http_parser,
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        front,
        host,
        port,
        reuse_address=True,
        backlog=BACKLOG,
        ssl=ssl_context,
        # a handshake holds a file before the front counts it: no longer than a head may
        ssl_handshake_timeout=settings.header_timeout if ssl_context is not None else None,
    )
    servers = [server]
    if unix_path is not None:
        try:
            servers.append(await _unix_listener(loop, front, unix_path, ssl_context, unix_owner))
        except OSError as exc:  # containers will not reach it; everything else works
            log.warning("the gateway's socket %s cannot be made: %s", unix_path, exc)
    front.start(loop)
    if warning := exposure_warning(host, ssl_context is not None):
        log.warning("%s", warning)
    elif host not in LOOPBACK:
        log.warning("the gateway listens on %s, reachable from other machines", host)
    return Listening(servers, front, runner)
