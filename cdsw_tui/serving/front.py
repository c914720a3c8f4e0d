"""The gateway's HTTP/1.1 front: a bare ``asyncio.Protocol`` over llhttp (uvicorn's way).

The call paths (``POST /model`` and CDSW 1.4's path) are answered here: the body, as
received, goes to serving/callpath.py, and its status and bytes are written straight
back. Every other request (health, metrics, OpenAPI, the metrics API) is sent, bytes
re-framed, to the gateway's aiohttp application over a socket pair made for it; the
application sees whole, well-formed requests only.

What a caller can send is bounded here, for every path: the head's size and the time it
takes to arrive, the body's size (413 before reading past it, chunked or not) and the
time it takes. Requests on a connection are answered in order (pipelining), one at a
time. An error is SPEC's JSON and never quotes the request: a log line names the
kind of error, never the caller's bytes.

Connections are bounded too, below the file limit: in total and per peer address. At the
total cap the connection idle longest between requests is closed to make room (nginx's
way with keep-alive connections); if none is idle, or the peer is at its own cap, the
new connection gets 503 in SPEC's JSON and is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, cast

from cdsw_tui.serving import admission, httpparse, proxy
from cdsw_tui.serving.admission import Admission, Refused
from cdsw_tui.serving.callpath import (
    OVERLOADED,
    Begun,
    CallPath,
    InFlight,
    Queued,
    Reply,
    error_body,
)
from cdsw_tui.serving.limits import Connections
from cdsw_tui.serving.openapi import CALL_PATHS

log = logging.getLogger("cdsw_tui.gateway")

MAX_FIELD = 8190  # one header line, or the request target (aiohttp's and nginx's limit)
MAX_HEAD = 64 * 1024  # a request's whole head
MAX_HEADERS = 100
SWEEP = 0.25  # seconds between looks at the deadlines (how late a timeout may come)
LINGER = 0.5  # seconds a turned-away connection is given to read its 503
_CALLS = frozenset(p.encode() for p in CALL_PATHS)
_STATUS = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_JSON = b"Content-Type: application/json\r\nContent-Length: "


class _Request:
    __slots__ = (
        "url",
        "headers",
        "chunks",
        "size",
        "method",
        "keep_alive",
        "authorization",
        "start",
        "expect",
        "host",
        "content_type",
        "encoding",
        "origin",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.method = b""
        self.keep_alive = True
        self.authorization = b""
        self.start = time.perf_counter()
        self.expect = False
        self.host = b""
        self.content_type = b""
        self.encoding = b""
        self.origin = b""


class Front:
    """What every connection of the gateway port shares."""

    def __init__(
        self,
        callpath: CallPath,
        app: Callable[[], asyncio.Protocol],
        *,
        max_body: int,
        header_timeout: float,
        body_timeout: float,
        keepalive: float,
        connections: Connections[FrontProtocol],
        admission: Admission,
        parser: str = "auto",
    ) -> None:
        self.callpath = callpath
        self.app = app  # makes aiohttp's connection handler, for everything but calls
        self.max_body = max_body
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.keepalive = keepalive  # seconds a connection is kept between requests
        self.connections = connections
        self.admission = admission
        self.parser = parser
        self._sweeper: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self) -> FrontProtocol:
        return FrontProtocol(self)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = loop.call_later(SWEEP, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """The deadlines of every connection and every call, a few times a second."""
        self._sweeper = loop.call_later(SWEEP, self._sweep, loop)  # first: whatever fails
        now = loop.time()
        for conn in [c for c in self.connections.open if 0 < c.deadline <= now]:
            conn.deadline = 0.0
            try:
                conn.on_deadline()
            except Exception as exc:  # one connection's failure must not stop the sweep
                log.error("the gateway failed on a deadline: %s", type(exc).__name__)
        self.callpath.sweep(now)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections.open):
            conn.close()


class FrontProtocol(asyncio.Protocol):
    """One caller's connection."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httpparse.make(front.parser, self, MAX_HEAD)
        self.request: _Request | None = None  # the one being read
        self.head = 0  # its head's size so far
        self.queue: deque[_Request] = deque()  # read, waiting for the one being answered
        self.busy = False  # a request is being answered
        self.refusal: bytes | None = None  # the error answered once the busy one is done
        self.deadline = 0.0  # loop time the wait below ends at (0: none)
        self.on_deadline: Callable[[], None] = self.close
        self.peer = "?"

    # the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "?"
        if why := self.front.connections.admit(self):
            self._turn_away(why)
            return
        self._arm(self.front.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.forget(self)
        self._disarm()
        self.transport = None
        self.queue.clear()

    def _turn_away(self, why: str) -> None:
        """503 before anything is read, then closed: what the caller sends is discarded
        (for LINGER at most, so the answer is not lost to a reset)."""
        connections = self.front.connections
        transport = self.transport
        assert transport is not None
        connections.turning_away(why)
        body = error_body(OVERLOADED, f"the gateway is at its limit: {why}")
        self.refusal = (
            _STATUS[503] + _JSON + b"%d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" % len(body)
        ) + body
        transport.write(self.refusal)
        if connections.leaving >= connections.most_leaving or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        connections.leaving += 1

        def gone() -> None:
            connections.leaving -= 1
            transport.close()

        self.loop.call_later(LINGER, gone)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.refusal is not None:
            return  # refused: nothing more is read
        try:
            self.parser.feed_data(data)
        except httpparse.ERRORS as exc:
            if self.refusal is None:
                log.warning("bad request from %s: %s", self.peer, type(exc).__name__)
                self._refuse(400, "the request is not valid HTTP")  # never its bytes

    # the parser's callbacks

    def on_message_begin(self) -> None:
        self.request = _Request()
        self.head = 0
        self.front.connections.idle.pop(self, None)
        self._arm(self.front.header_timeout, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        request = self.request
        assert request is not None
        request.url += url
        self.head += len(url)
        if len(request.url) > MAX_FIELD:
            self._refuse(414, f"the request target is over {MAX_FIELD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        assert request is not None
        request.headers.append((name, value))
        self.head += len(name) + len(value)
        if self.head > MAX_HEAD:  # the rest is checked once the head is whole
            self._head_too_large()

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None
        parser = self.parser
        if self.refusal is not None:
            return
        if parser.should_upgrade():
            self._refuse(400, "protocol upgrades (Upgrade, CONNECT) are not supported here")
            return
        headers = request.headers
        if len(headers) > MAX_HEADERS:
            self._head_too_large()
            return
        framing = 0  # Content-Length 1, Transfer-Encoding 2: both is a smuggling attempt
        for name, value in headers:
            if len(value) > MAX_FIELD:
                self._head_too_large()
                return
            size = len(name)  # the names asked for, by length first
            if size == 13 and name.lower() == b"authorization":
                request.authorization = value
            elif size == 14 and name.lower() == b"content-length":
                framing |= 1
                if value.isdigit() and int(value) > self.front.max_body:
                    self._too_large()
                    return
            elif size == 17 and name.lower() == b"transfer-encoding":
                framing |= 2
            elif size == 4 and name.lower() == b"host":
                request.host = value
            elif size == 12 and name.lower() == b"content-type":
                request.content_type = value
            elif size == 16 and name.lower() == b"content-encoding":
                request.encoding = value
            elif size == 6:
                lower = name.lower()
                if lower == b"origin":
                    request.origin = value
                elif lower == b"expect" and value.lower() == b"100-continue":
                    request.expect = True
        if framing == 3:  # llhttp refuses it already; h11 would let chunked win
            log.warning("bad request from %s: both Content-Length and chunked", self.peer)
            self._refuse(400, "the request is not valid HTTP")
            return
        request.method = parser.get_method()
        request.keep_alive = parser.should_keep_alive()
        self._arm(self.front.body_timeout, self._body_too_slow)
        if request.expect and not self.busy and not self.queue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.expect = False

    def on_body(self, body: bytes) -> None:
        request = self.request
        if request is None or self.refusal is not None:
            return
        request.size += len(body)
        if request.size > self.front.max_body:
            self._too_large()
            return
        request.chunks.append(body)

    def on_message_complete(self) -> None:
        request, self.request = self.request, None
        if request is None or self.refusal is not None:
            return
        self._disarm()
        if self.busy:
            self.queue.append(request)
            if self.transport is not None:
                self.transport.pause_reading()  # one read ahead is enough
            return
        self._start(request)

    # answering

    def _start(self, request: _Request) -> None:
        self.busy = True
        front = self.front
        chunks = request.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            if request.host and not front.admission.host_ok(request.host):
                raise Refused(400, "the Host header names no address this gateway serves")
            if request.encoding:
                body = admission.decoded(body, request.encoding, front.max_body)
        except Refused as refused:
            self._answer(request, refused.status, error_body(refused.code, refused.message))
            return
        path = request.url.partition(b"?")[0]
        if request.method != b"POST" or path not in _CALLS:
            if request.method == b"OPTIONS" and path in _CALLS and request.origin:
                if preflight := front.admission.preflight(request.origin):
                    self._answered(request, preflight)
                    return
            self._spawn(self._proxy(request, body))
            return
        if not admission.is_json(request.content_type):
            message = "a call's Content-Type must be application/json"
            self._answer(request, 415, error_body("request.invalid", message))
            return
        try:
            begun = front.callpath.start(body, request.authorization, request.start)
        except Exception as exc:  # a bug must not hang the caller
            self._failed(request, exc)
            return
        self._proceed(request, begun)

    def _proceed(self, request: _Request, begun: Begun) -> None:
        """Go on with a call as the call path says: no task, no coroutine, but where a
        replica's connection has to be opened first."""
        if isinstance(begun, InFlight):  # the common case
            begun.sent.add_done_callback(lambda _: self._then(request, begun))
        elif isinstance(begun, tuple):
            self._answer(request, *begun)
        elif isinstance(begun, Queued):
            begun.waiter.handed.add_done_callback(lambda _: self._then(request, begun))
        else:
            self._spawn(self._wait(request, begun))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """A task for the rare paths, held until it ends (the loop holds tasks weakly)."""
        task = self.loop.create_task(work)
        self.front.tasks.add(task)
        task.add_done_callback(self.front.tasks.discard)

    def _then(self, request: _Request, begun: InFlight | Queued) -> None:
        callpath = self.front.callpath
        try:
            follows = (
                callpath.finish(begun) if isinstance(begun, InFlight) else callpath.handed(begun)
            )
        except Exception as exc:
            self._failed(request, exc)
            return
        self._proceed(request, follows)

    async def _wait(self, request: _Request, waiting: Coroutine[Any, Any, Reply]) -> None:
        try:
            status, body = await waiting
        except Exception as exc:
            self._failed(request, exc)
            return
        self._answer(request, status, body)

    def _failed(self, request: _Request, exc: Exception) -> None:
        log.error("the gateway failed on a call: %s", type(exc).__name__)  # never its text
        self._answer(request, 500, error_body("gateway.error", "the gateway failed on this call"))

    def _answer(self, request: _Request, status: int, body: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        close = not request.keep_alive
        head = _STATUS.get(status) or b"HTTP/1.1 %d Error\r\n" % status
        head += _JSON + b"%d\r\n" % len(body)
        if close:
            head += b"Connection: close\r\n"
        if request.origin:
            head += self.front.admission.cors(request.origin)
        if len(body) < 65536:
            transport.write(head + b"\r\n" + body)
        else:  # a large answer is not copied once more
            transport.writelines((head, b"\r\n", body))
        self._next(close)

    def _answered(self, request: _Request, head: bytes) -> None:
        """A bodiless answer whose head (but its last CRLF) is made."""
        close = not request.keep_alive
        if self.transport is not None:
            self.transport.write(head + (b"Connection: close\r\n\r\n" if close else b"\r\n"))
        self._next(close)

    def _next(self, close: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        if close:
            transport.close()
            return
        self.busy = False
        if self.queue:
            request = self.queue.popleft()
            if not self.queue and self.refusal is None:
                transport.resume_reading()
            self._start(request)
        elif self.refusal is not None:
            transport.write(self.refusal)
            transport.close()
        else:
            current = self.request
            if current is not None and current.expect and current.method:
                transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # its turn has come
                current.expect = False
            if current is None:
                self.front.connections.idle[self] = None
                self._arm(self.front.keepalive, self.close)

    async def _proxy(self, request: _Request, body: bytes) -> None:
        """Everything but a call, through aiohttp over a socket pair."""
        transport = self.transport
        try:
            async with asyncio.timeout(self.front.body_timeout + 30):
                # who asked, as this connection saw it (what the caller sent is dropped)
                headers = [(k, v) for k, v in request.headers if k.lower() != proxy.PEER]
                headers.append((proxy.PEER, self.peer.encode()))
                answer = await proxy.through(
                    self.front.app, request.method, request.url, headers, body
                )
        except Exception as exc:  # a bug must not hang the caller
            log.error("the gateway failed on a request: %s", type(exc).__name__)
            self._answer(
                request, 500, error_body("gateway.error", "the gateway failed on this request")
            )
            return
        if transport is None or self.transport is None:
            return
        close = not request.keep_alive
        transport.write(proxy.relayed(answer, close, self.front.admission.cors(request.origin)))
        self._next(close)

    # refusals

    def _head_too_large(self) -> None:
        self._refuse(
            431,
            f"the request head is over its limits ({MAX_HEAD // 1024} KB, {MAX_HEADERS} "
            f"headers, {MAX_FIELD} bytes a line)",
        )

    def _too_large(self) -> None:
        mb = self.front.max_body / 1024 / 1024
        self._refuse(413, f"the request body is over {mb:g} MB", code="request.too_large")

    def _refuse(self, status: int, message: str, code: str = "request.invalid") -> None:
        """Answer ``status`` after what is being answered, then close; read no more."""
        if self.refusal is not None or self.transport is None:
            return
        body = error_body(code, message)
        head = _STATUS.get(status) or b"HTTP/1.1 %d Error\r\n" % status
        self.refusal = head + _JSON + b"%d\r\nConnection: close\r\n\r\n" % len(body) + body
        self._disarm()
        self.transport.pause_reading()
        if not self.busy:  # else the requests read before it are answered first
            self.transport.write(self.refusal)
            self.transport.close()

    def _head_too_slow(self) -> None:
        self._refuse(408, f"the request head did not arrive within {self.front.header_timeout:g} s")

    def _body_too_slow(self) -> None:
        self._refuse(400, f"the request body did not arrive within {self.front.body_timeout:g} s")

    def _arm(self, seconds: float, then: Callable[[], None]) -> None:
        """Call ``then`` if nothing disarms this within ``seconds`` (the front's sweep
        looks: a deadline costs an attribute, not a timer)."""
        self.deadline = self.loop.time() + seconds
        self.on_deadline = then

    def _disarm(self) -> None:
        self.deadline = 0.0
