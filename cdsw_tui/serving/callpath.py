"""A model call from the body to the answer, with no HTTP framework and no coroutine in
it.

The front (serving/front.py) hands ``start`` a request's body and its ``Authorization``
header. What comes back says what happens next: a reply at once (an error), a call in
flight (its frame is out to a free replica: ``finish`` it once its future is done), or
a call queued for a replica (``handed`` once its future is done), or, only when a
replica has to be connected first, a coroutine. The body goes to the replica's frame as
it came, and the replica's answer comes back as the replica wrote it. Deadlines (the
request timeout, the busy timeout) are looked at by ``sweep`` a few times a second,
not set as a timer per call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from cdsw_tui.config import Settings
from cdsw_tui.serving.calllog import Call, CallLog
from cdsw_tui.serving.connection import (
    Answer,
    OutOfFiles,
    ReplicaConnectionError,
    ResponseTooLarge,
)
from cdsw_tui.serving.metrics import GatewayMetrics
from cdsw_tui.serving.pool import Pool, PooledReplica, Waiter
from cdsw_tui.serving.router import Router

MAX_DIGITS = 4300  # Python's own limit on converting a digit string to an int
Reply = tuple[int, bytes]  # HTTP status, JSON body
OVERLOADED = "gateway.overloaded"  # 503: the gateway at its limit of connections or files


def error_body(code: str, message: str, replica: str | None = None) -> bytes:
    """SPEC's failure shape."""
    body = {"success": False, "error": {"code": code, "message": message}, "ReplicaID": replica}
    return json.dumps(body).encode()


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


def _invalid(message: str) -> Reply:
    return 400, error_body("request.invalid", message)


API_KEY_REQUIRED = error_body(
    "auth.api_key_required", "this model needs an API key: send 'Authorization: Bearer <API key>'"
)


@dataclass(slots=True)
class InFlight:
    """A call whose frame is out: what ``CallPath.finish`` needs once its answer is in."""

    call: Call
    pool: Pool
    handle: PooledReplica
    lease: int
    sent: asyncio.Future[Answer]


@dataclass(slots=True)
class Queued:
    """A call waiting for a replica of ``pool``: ``CallPath.handed`` it once
    ``waiter.handed`` is done (a replica, the pool's end, or the busy timeout)."""

    call: Call
    pool: Pool
    waiter: Waiter
    body: bytes
    deadline: float


Begun = Reply | InFlight | Queued | Coroutine[Any, Any, Reply]


class CallPath:
    """Routes a call by its access key to a free replica of the model's deployment."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        metrics: GatewayMetrics,
        calls: CallLog,
        on_replica_failed: Callable[[Pool, PooledReplica, str], None],
    ) -> None:
        self.settings = settings
        self.router = router
        self.metrics = metrics
        self.calls = calls
        self.on_replica_failed = on_replica_failed
        self.flying: dict[asyncio.Future[Answer], float] = {}  # answers awaited: deadlines
        self.queued: dict[Waiter, Queued] = {}

    def sweep(self, now: float) -> None:
        """Fail what is past its deadline: an answer (504), a wait for a replica (429)."""
        for sent in [sent for sent, deadline in self.flying.items() if deadline <= now]:
            del self.flying[sent]
            if not sent.done():
                sent.set_exception(TimeoutError())
        for waiter in [w for w, q in self.queued.items() if q.deadline <= now]:
            self.queued[waiter].pool.give_up(waiter)  # its callback answers 429

    def start(self, body: bytes, authorization: bytes, start: float) -> Begun:
        """Begin a call; ``start`` is when its request began (perf_counter)."""
        try:
            text = body.decode()
            if text[:1] == "\ufeff":
                text = text[1:]  # a byte order mark is tolerated
            data = _DECODER.decode(text)
        except NotJSON as exc:
            return _invalid(str(exc))
        except (ValueError, UnicodeDecodeError):
            return _invalid(_why_not_json(body))
        except RecursionError:
            return _invalid("the body is nested too deeply")
        if not isinstance(data, dict):
            return _invalid("the body must be a JSON object")
        if "request" not in data:
            return _invalid('the body has no "request" field')
        key = data.get("accessKey")
        route = self.router.route(key) if isinstance(key, str) else None
        if route is None:
            message = "no access key was given" if not key else "the access key is not valid"
            return 401, error_body("auth.invalid_key", message)
        call = Call(route, len(body), start)
        if (route.auth_enabled or self.settings.require_api_keys) and not self._api_key_ok(
            authorization
        ):
            return self._finish(call, 401, API_KEY_REQUIRED, "auth.api_key_required")
        pool = self.router.pools.get(route.model_id)
        if pool is not None and not pool.closed:
            handle = pool.take_free()
            if handle is not None:
                if handle.conn.ready:
                    return self._send(call, pool, handle, handle.lease, body, False)
                return self._connect_and_send(call, pool, handle, handle.lease, body, False)
        deadline = asyncio.get_running_loop().time() + self.settings.busy_timeout
        return self._queue(call, body, pool, deadline)

    def _queue(self, call: Call, body: bytes, pool: Pool | None, deadline: float) -> Begun:
        """Wait for a replica: a deployment that is starting, adopted or replacing its
        replicas is waited for too, and a deployment replaced meanwhile hands its
        callers on to the new one."""
        while pool is not None and pool.closed:
            following = self.router.pools.get(call.route.model_id)
            pool = None if following is pool else following
        if pool is None:
            message = f"model {call.route.label} has no deployed replica"
            code = "model.not_deployed"
            return self._finish(call, 503, error_body(code, message), code)
        waiter = pool.enqueue(body, self.settings.max_response_bytes)
        queued = Queued(call, pool, waiter, body, deadline)
        self.queued[waiter] = queued
        return queued

    def handed(self, queued: Queued) -> Begun:
        """What comes of a queued call once its wait ended."""
        self.queued.pop(queued.waiter, None)
        call, pool, handed = queued.call, queued.pool, queued.waiter.handed
        if handed.cancelled():  # the busy timeout
            call.deployment = pool.label
            self.metrics.busy_waits.labels(call.route.label, call.deployment).inc()
            message = (
                f"no replica of {call.route.label} became free within "
                f"{self.settings.busy_timeout:g} s; deploy it with more replicas"
            )
            return self._finish(call, 429, error_body("model.busy", message), "model.busy")
        given = handed.result()
        if given is None:  # the deployment ended while it waited
            return self._queue(call, queued.body, pool, queued.deadline)
        handle, lease, sent = given
        if sent is not None:  # the pool sent it the moment the replica was free
            return self._flying(call, pool, handle, lease, sent, True)
        if handle.conn.ready:
            return self._send(call, pool, handle, lease, queued.body, True)
        return self._connect_and_send(call, pool, handle, lease, queued.body, True)

    async def _connect_and_send(
        self, call: Call, pool: Pool, handle: PooledReplica, lease: int, body: bytes, waited: bool
    ) -> Reply:
        """The one path with a coroutine: a replica whose connection is (re)opened."""
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                await handle.conn.connect()
        except OutOfFiles:  # the gateway's trouble, not the replica's: it stays in the pool
            pool.release(handle, lease)
            message = "the gateway is at its limit of open files; try again later"
            return self._finish(call, 503, error_body(OVERLOADED, message), OVERLOADED)
        except (TimeoutError, ReplicaConnectionError) as exc:
            failed: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return self.finish(self._flying(call, pool, handle, lease, failed, waited))
        except BaseException:
            pool.release(handle, lease)
            raise
        flight = self._send(call, pool, handle, lease, body, waited)
        try:
            await flight.sent
        except asyncio.CancelledError:
            if not flight.sent.done():  # the caller was cancelled, not the answer
                self.flying.pop(flight.sent, None)
                handle.conn.close()  # the stream is out of step
                pool.release(handle, lease)
                raise
        except BaseException:  # finish reads what the answer raised
            pass
        return self.finish(flight)

    def _send(
        self, call: Call, pool: Pool, handle: PooledReplica, lease: int, body: bytes, waited: bool
    ) -> InFlight:
        sent = handle.conn.send(body, self.settings.max_response_bytes)
        return self._flying(call, pool, handle, lease, sent, waited)

    def _flying(
        self,
        call: Call,
        pool: Pool,
        handle: PooledReplica,
        lease: int,
        sent: asyncio.Future[Answer],
        waited: bool,
    ) -> InFlight:
        call.deployment = pool.label
        call.replica = handle.name
        if waited:
            handle.busy_waits += 1
            self.metrics.busy_waits.labels(call.route.label, call.deployment).inc()
        handle.received += 1
        self.flying[sent] = sent.get_loop().time() + self.settings.request_timeout
        return InFlight(call, pool, handle, lease, sent)

    def finish(self, flight: InFlight) -> Reply:
        """The reply to a call whose answer (or failure) is in."""
        settings = self.settings
        call, pool, handle = flight.call, flight.pool, flight.handle
        self.flying.pop(flight.sent, None)
        try:
            status, code, payload, closing = handle.conn.settle(flight.sent)
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
            pool.release(handle, flight.lease)  # nothing to do if its answer already freed it
        if closing:  # the replica answered, and ends (its memory ran out): replace it now
            self.on_replica_failed(pool, handle, "it ran out of memory")
        if not 200 <= status < 600:  # model code wrote its own frame: no 1xx reaches HTTP
            message = f"the replica answered with status {status}, which HTTP cannot carry"
            return self._failed(call, handle, 502, "model.invalid_response", message)
        handle.processed += 1
        if status == 200:
            handle.success += 1
            code = "ok"
        else:
            handle.failure += 1
            code = code or "model.error"
        return self._finish(call, status, payload, code)

    def _failed(
        self, call: Call, handle: PooledReplica, status: int, code: str, message: str
    ) -> Reply:
        """The call reached a replica and came back without its answer."""
        handle.processed += 1
        handle.failure += 1
        return self._finish(call, status, error_body(code, message, handle.name), code)

    def _finish(self, call: Call, status: int, body: bytes, code: str) -> Reply:
        self.calls.add(call, status, code, time.perf_counter() - call.start, len(body))
        return status, body

    def _api_key_ok(self, header: bytes) -> bool:
        scheme, _, token = header.decode("latin-1").partition(" ")
        token = token.strip()
        return scheme.lower() == "bearer" and bool(token) and self.router.api_key_valid(token)
