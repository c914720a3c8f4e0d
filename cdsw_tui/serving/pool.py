"""A deployment's replicas and the first-come-first-served wait for a free one."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from cdsw_tui.serving.connection import ReplicaConnection

STATS = ("received", "processed", "success", "failure", "busy_waits")


class PoolClosed(Exception):
    """The deployment stopped (or failed) while the caller waited for a replica."""


@dataclass(eq=False)
class ReplicaHandle:
    """One replica as the gateway sees it: where to send calls, and their counts.

    The handle lives as long as the replica's name: a restart gives it a new address
    and keeps its statistics."""

    name: str
    address: str
    deployment_id: int
    alive: bool = True
    busy: bool = False
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
        self.conn.close()
        self.address = address
        self.conn = ReplicaConnection(address)
        self.started = time.time()

    def stats(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in STATS}


class Pool:
    """Free replicas wait in a queue; callers wait on it in arrival order.

    An empty pool is a deployment that is starting, being adopted, or replacing its
    replicas: callers wait for a replica there (up to the busy timeout) rather than
    being told the model is not deployed."""

    def __init__(self, deployment_id: int, model_id: int) -> None:
        self.deployment_id = deployment_id
        self.model_id = model_id
        self.replicas: dict[str, ReplicaHandle] = {}
        self._free: asyncio.Queue[ReplicaHandle | None] = asyncio.Queue()
        self.inflight = 0
        self.waiting = 0
        self.closed = False

    def add(self, handle: ReplicaHandle) -> None:
        self.replicas[handle.name] = handle
        handle.alive = True
        handle.busy = False
        self._free.put_nowait(handle)

    def remove(self, name: str) -> ReplicaHandle | None:
        handle = self.replicas.pop(name, None)
        if handle is not None:
            handle.alive = False
        return handle

    def healthy(self) -> int:
        return sum(1 for h in self.replicas.values() if h.alive)

    def close(self) -> None:
        """No replica will come: wake every waiting caller with PoolClosed."""
        self.closed = True
        for _ in range(self.waiting + 1):
            self._free.put_nowait(None)

    def _take(self, handle: ReplicaHandle | None) -> bool:
        if handle is None:
            if self.closed:
                self._free.put_nowait(None)  # for the next caller too
                raise PoolClosed
            return False
        if handle.alive and self.replicas.get(handle.name) is handle:
            handle.busy = True
            self.inflight += 1
            return True
        return False

    def try_acquire(self) -> ReplicaHandle | None:
        """A free replica at once if there is one and nobody queued before us (no
        coroutine, no wait: the common case of every call)."""
        while not self.waiting and not self._free.empty():
            handle = self._free.get_nowait()
            if self._take(handle):
                return handle
        return None

    async def acquire(self, timeout: float) -> tuple[ReplicaHandle, bool]:
        """A free replica, and whether the caller had to wait for it."""
        if self.closed:
            raise PoolClosed
        handle = self.try_acquire()
        if handle is not None:
            return handle, False
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):  # no extra task, unlike wait_for
                while True:
                    handle = await self._free.get()
                    if self._take(handle):
                        return handle, True  # type: ignore[return-value]
        finally:
            self.waiting -= 1

    def release(self, handle: ReplicaHandle) -> None:
        self.inflight -= 1
        handle.busy = False
        if handle.alive and self.replicas.get(handle.name) is handle:
            self._free.put_nowait(handle)
