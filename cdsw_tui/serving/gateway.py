"""The gateway (SPEC §2): one aiohttp server that routes calls to replicas by access key."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web, web_protocol, web_server

from cdsw_tui.config import Settings
from cdsw_tui.serving import openapi
from cdsw_tui.serving.calllog import Call, CallLog
from cdsw_tui.serving.connection import ReplicaConnectionError, ResponseTooLarge
from cdsw_tui.serving.metrics import GatewayMetrics
from cdsw_tui.serving.openapi import CALL_PATHS
from cdsw_tui.serving.pool import Handed, Pool, PoolClosed, PooledReplica
from cdsw_tui.serving.router import Route, Router
from cdsw_tui.serving.tls import LOOPBACK, exposure_warning

log = logging.getLogger("cdsw_tui.gateway")
MAX_DIGITS = 4300  # Python's own limit on converting a digit string to an int


def error_response(
    status: int, code: str, message: str, replica: str | None = None
) -> web.Response:
    body = {"success": False, "error": {"code": code, "message": message}, "ReplicaID": replica}
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def prove(identity: bytes, challenge: str) -> str:
    return hmac.new(identity, challenge.encode(), hashlib.sha256).hexdigest()


class NotJSON(ValueError):
    """A body Python's json module would take but JSON (RFC 8259) does not."""


def _no_constant(name: str) -> object:
    raise NotJSON(f"the body holds {name}, which is not JSON (send null or a string)")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # made once, not per call


def _long_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise NotJSON(f"a number in the body has more than {MAX_DIGITS} digits")
    return int(text)


def _why_not_json(body: bytes) -> str:
    """Only on the failure path (a hook on every integer would slow every call)."""
    try:
        json.loads(body, parse_int=_long_int)
    except NotJSON as exc:
        return str(exc)
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
    return "the body is not valid JSON"


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
        # (method, path, handler) the controller adds before the gateway listens
        self.extra_routes: list[tuple[str, str, Callable]] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_request_bytes + 1)
        for path in CALL_PATHS:
            app.router.add_post(path, self.call)
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
            app.router.add_route("*", path, wrong_method)
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
            server=f"{request.scheme}://{request.host}",
            api_key_required=route.auth_enabled or self.settings.require_api_keys,
            **info,
        )
        return web.json_response(doc)

    async def prometheus(self, _request: web.Request) -> web.Response:
        for pool in self.router.pools.values():
            route = self._route_name(pool.model_id)
            self.metrics.replicas.labels(route, str(pool.deployment_id)).set(pool.healthy())
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    def _route_name(self, model_id: int) -> str:
        route = self.router.by_model.get(model_id)
        return f"{route.project}/{route.name}" if route is not None else str(model_id)

    async def call(self, request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        settings = self.settings
        try:
            async with asyncio.timeout(settings.request_timeout):
                body = await read_limited(request, settings.max_request_bytes)
        except BodyTooLarge:
            mb = settings.max_request_bytes / 1024 / 1024
            response = error_response(
                413, "request.too_large", f"the request body is over {mb:g} MB"
            )
            response.force_close()
            return response
        except TimeoutError:
            response = error_response(
                400,
                "request.invalid",
                f"the request body did not arrive within {settings.request_timeout:g} s",
            )
            response.force_close()
            return response
        try:
            data = _DECODER.decode(body.decode("utf-8-sig"))  # a BOM is tolerated, as before
        except NotJSON as exc:
            return error_response(400, "request.invalid", str(exc))
        except (ValueError, UnicodeDecodeError):
            return error_response(400, "request.invalid", _why_not_json(body))
        except RecursionError:
            return error_response(400, "request.invalid", "the body is nested too deeply")
        if not isinstance(data, dict):
            return error_response(400, "request.invalid", "the body must be a JSON object")
        if "request" not in data:
            return error_response(400, "request.invalid", 'the body has no "request" field')
        key = data.get("accessKey")
        route = self.router.route(key) if isinstance(key, str) else None
        if route is None:
            message = "no access key was given" if not key else "the access key is not valid"
            return error_response(401, "auth.invalid_key", message)
        call = Call(route, len(body), start)
        if (route.auth_enabled or settings.require_api_keys) and not self._api_key_ok(request):
            return self._finish(
                call,
                error_response(
                    401,
                    "auth.api_key_required",
                    "this model needs an API key: send 'Authorization: Bearer <API key>'",
                ),
                "auth.api_key_required",
            )
        limit = settings.max_response_bytes
        pool = self.router.pools.get(route.model_id)
        handed = pool.try_acquire() if pool is not None and not pool.closed else None
        waited = False
        if handed is None:
            acquired = await self._acquire(call, body)
            if isinstance(acquired, web.Response):
                return acquired
            pool, handed, waited = acquired
        assert pool is not None  # it handed the replica
        handle, lease, sent = handed
        call.deployment = str(pool.deployment_id)
        call.replica = handle.name
        if waited:
            handle.busy_waits += 1
            self.metrics.busy_waits.labels(call.label, call.deployment).inc()
        handle.received += 1
        try:
            async with asyncio.timeout(settings.request_timeout):
                if sent is not None:  # the pool sent it the moment the replica was free
                    answer = await handle.conn.answer(sent)
                else:
                    answer = await handle.conn.call(body, limit)
            status, code, payload, closing = answer
        except TimeoutError:
            self.on_replica_failed(pool, handle, "timed out")
            message = f"the model ran past the {settings.request_timeout:g} s request timeout"
            return self._failed(call, handle, 504, "model.timeout", message)
        except ResponseTooLarge as exc:
            mb = settings.max_response_bytes / 1024 / 1024
            message = (
                f"the model's answer is {exc.length / 1024 / 1024:.1f} MB, over the "
                f"{mb:g} MB limit (MAX_RESPONSE_BYTES)"
            )
            return self._failed(call, handle, 502, "model.invalid_response", message)
        except ReplicaConnectionError as exc:
            self.on_replica_failed(pool, handle, str(exc))
            message = f"replica {handle.name} failed while handling the request"
            return self._failed(call, handle, 502, "replica.failed", message)
        finally:
            pool.release(handle, lease)  # nothing to do if its answer already freed it
        if closing:  # the replica answered, and ends (its memory ran out): replace it now
            self.on_replica_failed(pool, handle, "it ran out of memory")
        handle.processed += 1
        if status == 200:
            handle.success += 1
            code = "ok"
        else:
            handle.failure += 1
            code = code or "model.error"
        response = web.Response(status=status, body=payload, content_type="application/json")
        return self._finish(call, response, code)

    async def _acquire(self, call: Call, body: bytes) -> tuple[Pool, Handed, bool] | web.Response:
        """A free replica of the model's deployment, waiting up to the busy timeout; a
        deployment that is starting, adopted or replacing its replicas is waited for too,
        and a caller whose deployment is replaced meanwhile moves on to the new one."""
        settings = self.settings
        model_id = call.route.model_id
        pool = self.router.pools.get(model_id)
        deadline = time.monotonic() + settings.busy_timeout
        while pool is not None:
            try:
                left = max(0.0, deadline - time.monotonic())
                handed, waited = await pool.acquire(left, body, settings.max_response_bytes)
                return pool, handed, waited
            except PoolClosed:
                following = self.router.pools.get(model_id)
                pool = None if following is pool else following
            except TimeoutError:
                call.deployment = str(pool.deployment_id)
                self.metrics.busy_waits.labels(call.label, call.deployment).inc()
                message = (
                    f"no replica of {call.label} became free within {settings.busy_timeout:g} s; "
                    "deploy it with more replicas"
                )
                return self._finish(call, error_response(429, "model.busy", message), "model.busy")
        message = f"model {call.label} has no deployed replica"
        response = error_response(503, "model.not_deployed", message)
        return self._finish(call, response, "model.not_deployed")

    def _failed(
        self, call: Call, handle: PooledReplica, status: int, code: str, message: str
    ) -> web.Response:
        """The call reached a replica and came back without its answer."""
        handle.processed += 1
        handle.failure += 1
        return self._finish(call, error_response(status, code, message, handle.name), code)

    def _finish(self, call: Call, response: web.Response, code: str) -> web.Response:
        seconds = time.perf_counter() - call.start
        self.metrics.observe(call.label, call.deployment, code, seconds)
        body = response.body
        size = len(body) if isinstance(body, bytes | bytearray) else 0
        self.calls.add(call, response.status, code, seconds, size)
        return response

    def _api_key_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return (
            scheme.lower() == "bearer" and bool(token) and self.router.api_key_valid(token.strip())
        )


class _Protocol(web_protocol.RequestHandler):
    """aiohttp's connection handler, made to keep callers' bytes to itself: an HTTP error
    is answered in SPEC's JSON without echoing the request (aiohttp quotes it, access key
    and all), is logged in one line without it, and headers that do not arrive in time
    end the connection."""

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = self._loop.call_later(
            self.header_timeout, self._headers_too_slow
        )

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self._request_count:
            self._header_timer.cancel()  # a whole request head arrived
            self._header_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport is None or self._request_count:
            return
        body = _error_body(
            "request.invalid",
            f"the request head did not arrive within {self.header_timeout:g} s",
        )
        transport.write(_raw_response(408, body))
        transport.close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        what = type(exc).__name__ if exc is not None else f"status {status}"
        log.warning("bad request from %s: %s", request.remote, what)  # never its text
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


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"success": False, "error": {"code": code, "message": message}}).encode()


def _raw_response(status: int, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} Error\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


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


async def start_gateway(
    gateway: Gateway, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Listen on ``host:port``: HTTPS only when ``ssl_context`` is given (a plain HTTP
    request then fails its handshake and is closed)."""
    _Protocol.header_timeout = gateway.settings.header_timeout
    runner = _Runner(gateway.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    if warning := exposure_warning(host, ssl_context is not None):
        log.warning("%s", warning)
    elif host not in LOOPBACK:
        log.warning("the gateway listens on %s, reachable from other machines", host)
    return runner
