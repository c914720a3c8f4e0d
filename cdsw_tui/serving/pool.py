"""A deployment's replicas and the first-come-first-served wait for a free one."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from cdsw_tui.serving.connection import Answer, ReplicaConnection

STATS = ("received", "processed", "success", "failure", "busy_waits")


class PoolClosed(Exception):
    """The deployment stopped (or failed) while the caller waited for a replica."""


@dataclass(eq=False)
class PooledReplica:
    """One replica as the gateway sees it: where to send calls, and their counts.

    The handle lives as long as the replica's name: a restart gives it a new address
    and keeps its statistics."""

    name: str
    address: str
    deployment_id: int
    alive: bool = True
    busy: bool = False
    lease: int = 0  # which call holds the replica: counts up with every call
    received: int = 0
    processed: int = 0
    success: int = 0
    failure: int = 0
    busy_waits: int = 0
    started: float = field(default_factory=time.time)
    conn: ReplicaConnection = field(init=False)

    def __post_init__(self) -> None:
        self.conn = ReplicaConnection(self.address)

    def moved(self, address: str) -> None:
        """The replica was started again, somewhere new."""
        hook = self.conn.on_answer
        self.conn.close()
        self.address = address
        self.conn = ReplicaConnection(address)
        self.conn.on_answer = hook
        self.started = time.time()

    def stats(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in STATS}


class Handed(NamedTuple):
    """A replica given to a call: its lease (which call holds it), and the call's
    answer if the pool already sent its frame (else None: the caller sends it)."""

    handle: PooledReplica
    lease: int
    sent: asyncio.Future[Answer] | None


@dataclass(eq=False, slots=True)
class Waiter:
    """A call queued for a free replica, its frame ready to go out."""

    body: bytes
    limit: int
    handed: asyncio.Future[Handed | None]


class Pool:
    """Free replicas and the calls waiting for one, first come, first served.

    A replica that answers is handed to the next waiting call at once, inside the
    callback that read the answer, and that call's frame is written right there: the
    replica starts on it before either caller's task has run again. (Waiting in a
    queue and sending once the waiter's task wakes left the replica idle for two turns
    of the event loop per call.)

    An empty pool is a deployment that is starting, being adopted, or replacing its
    replicas: callers wait for a replica there (up to the busy timeout) rather than
    being told the model is not deployed."""

    def __init__(
        self, deployment_id: int, model_id: int, *, build_number: int | None = None
    ) -> None:
        self.deployment_id = deployment_id
        self.label = str(deployment_id)  # as metrics and call records name it
        self.model_id = model_id
        self.build_number = build_number  # what /health/<project>/<model> names
        self.wanted = 0  # the replica count the deployment asks for (the controller sets it)
        self.replicas: dict[str, PooledReplica] = {}
        self._free: deque[PooledReplica] = deque()
        self._waiters: deque[Waiter] = deque()
        self.inflight = 0
        self.closed = False

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def add(self, handle: PooledReplica) -> None:
        self.replicas[handle.name] = handle
        handle.alive = True
        handle.busy = False
        handle.conn.on_answer = lambda: self._answered(handle)
        self._hand(handle)

    def remove(self, name: str) -> PooledReplica | None:
        handle = self.replicas.pop(name, None)
        if handle is not None:
            handle.alive = False
        return handle

    def healthy(self) -> int:
        return sum(1 for h in self.replicas.values() if h.alive)

    def close(self) -> None:
        """No replica will come: every waiting caller gets PoolClosed."""
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.handed.done():
                waiter.handed.set_result(None)

    def _current(self, handle: PooledReplica) -> bool:
        return handle.alive and self.replicas.get(handle.name) is handle

    def _take(self, handle: PooledReplica) -> None:
        handle.busy = True
        handle.lease += 1
        self.inflight += 1

    def _hand(self, handle: PooledReplica) -> None:
        """A free replica: to the first waiting call (its frame sent now), else free."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.handed.done():
                continue  # gave up (timed out, cancelled)
            self._take(handle)
            sent = handle.conn.send(waiter.body, waiter.limit) if handle.conn.ready else None
            waiter.handed.set_result(Handed(handle, handle.lease, sent))
            return
        handle.busy = False
        self._free.append(handle)

    def _answered(self, handle: PooledReplica) -> None:
        """The replica answered its call (and stays): it serves the next one now."""
        if handle.busy:
            self.release(handle, handle.lease)

    def take_free(self) -> PooledReplica | None:
        """A free replica at once if there is one and nobody queued before us (no
        coroutine, no wait: the common case of every call); its lease is ``.lease``."""
        if self._waiters:
            return None
        free = self._free
        while free:
            handle = free.popleft()
            if handle.alive and not handle.busy and self.replicas.get(handle.name) is handle:
                handle.busy = True
                handle.lease += 1
                self.inflight += 1
                return handle
        return None

    def try_acquire(self) -> Handed | None:
        handle = self.take_free()
        return None if handle is None else Handed(handle, handle.lease, None)

    def enqueue(self, body: bytes, limit: int) -> Waiter:
        """Queue a call for the next free replica (its frame is sent the moment one is):
        ``handed`` is done with a Handed, or None when the pool closed, or cancelled by
        ``give_up``."""
        waiter = Waiter(body, limit, asyncio.get_running_loop().create_future())
        if self.closed:
            waiter.handed.set_result(None)
        else:
            self._waiters.append(waiter)
        return waiter

    async def acquire(self, timeout: float, body: bytes, limit: int) -> tuple[Handed, bool]:
        """A replica for this call, and whether the caller had to wait for it."""
        if self.closed:
            raise PoolClosed
        handed = self.try_acquire()
        if handed is not None:
            return handed, False
        waiter = self.enqueue(body, limit)
        try:
            async with asyncio.timeout(timeout):  # no extra task, unlike wait_for
                handed = await asyncio.shield(waiter.handed)
        except TimeoutError:
            if not waiter.handed.done():
                self.give_up(waiter)
                raise
            handed = waiter.handed.result()  # handed over just as the time ran out: go on
        except asyncio.CancelledError:
            if waiter.handed.done() and (taken := waiter.handed.result()) is not None:
                self._abandon(taken)
            else:
                self.give_up(waiter)
            raise
        if handed is None:
            raise PoolClosed
        return handed, True

    def give_up(self, waiter: Waiter) -> None:
        """The waiter leaves the queue (its future is cancelled), unless it was handed a
        replica already."""
        if waiter.handed.done():
            return
        waiter.handed.cancel()
        try:
            self._waiters.remove(waiter)  # or a free replica would wait behind it
        except ValueError:
            pass

    def _abandon(self, handed: Handed) -> None:
        """A caller that went away after being handed a replica."""
        if handed.sent is None:
            self.release(handed.handle, handed.lease)
        else:  # its frame is out: the replica's answer frees it; nobody reads that answer
            handed.sent.add_done_callback(lambda f: f.cancelled() or f.exception())

    def release(self, handle: PooledReplica, lease: int) -> None:
        """The call holding ``lease`` is done with the replica (a second release of the
        same call, or one after the answer already freed it, does nothing)."""
        if not handle.busy or handle.lease != lease:
            return
        self.inflight -= 1
        handle.busy = False
        if self._current(handle):
            self._hand(handle)
