"""A deployment's replicas and the first-come-first-served wait for a free one."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from cdsw_tui.engine.runtime import Running
from cdsw_tui.serving.connection import ReplicaConnection


@dataclass
class ReplicaHandle:
    name: str
    row_id: int
    deployment_id: int
    running: Running
    host: str = "127.0.0.1"
    alive: bool = True
    busy: bool = False
    received: int = 0
    processed: int = 0
    success: int = 0
    failure: int = 0
    busy_waits: int = 0
    restarts: int = 0
    started: float = field(default_factory=time.time)
    conn: ReplicaConnection = field(init=False)

    def __post_init__(self) -> None:
        self.conn = ReplicaConnection(self.host, self.running.port)


class Pool:
    """Free replicas wait in a queue; callers wait on it in arrival order."""

    def __init__(self, deployment_id: int, model_id: int) -> None:
        self.deployment_id = deployment_id
        self.model_id = model_id
        self.replicas: dict[str, ReplicaHandle] = {}
        self._free: asyncio.Queue[ReplicaHandle] = asyncio.Queue()
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

    async def acquire(self, timeout: float) -> tuple[ReplicaHandle, bool]:
        """A free replica, and whether the caller had to wait for it."""
        # fast path: a free replica and nobody queued before us
        while not self.waiting and not self._free.empty():
            handle = self._free.get_nowait()
            if handle.alive and self.replicas.get(handle.name) is handle:
                handle.busy = True
                self.inflight += 1
                return handle, False
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):  # no extra task, unlike wait_for
                while True:
                    handle = await self._free.get()
                    if handle.alive and self.replicas.get(handle.name) is handle:
                        handle.busy = True
                        self.inflight += 1
                        return handle, True
        finally:
            self.waiting -= 1

    def release(self, handle: ReplicaHandle) -> None:
        self.inflight -= 1
        handle.busy = False
        if handle.alive and self.replicas.get(handle.name) is handle:
            self._free.put_nowait(handle)

    async def drain(self, timeout: float) -> None:
        """Wait until nothing is in flight or waiting (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while (self.inflight or self.waiting) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
