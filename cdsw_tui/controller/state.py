"""What the controller holds in memory for each replica it runs, and what a deployment's
replicas share: pure data. The deployment that steps them is deployment.py's."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from cdsw_tui.engine.runtime import Exit
from cdsw_tui.serving.pool import PooledReplica
from cdsw_tui.store import Build, Deployment, Model, Project, ReplicaStatus

CRASHLOOP_WINDOW = 60.0
CRASHLOOP_COUNT = 3
MAX_BACKOFF = 30.0


class Goal(StrEnum):
    ROLLOUT = "rollout"  # pending or deploying: start its replicas, then take over
    SERVE = "serve"  # deployed: keep its replicas ready
    STOP = "stop"  # stop every replica, then record the final status


@dataclass
class Context:
    """What every replica of one deployment shares, read once from the store."""

    deployment: Deployment
    model: Model
    project: Project
    build: Build


@dataclass(eq=False)
class ReplicaState:
    name: str
    row_id: int | None
    status: ReplicaStatus
    gateway: PooledReplica  # what the gateway dials, and the call counts
    handle: str = ""  # the runtime's handle of the process or container running now
    restarts: int = 0
    reason: str = ""
    output_offset: int = 0
    task: asyncio.Task | None = None  # the one operation in progress (start, stop, restart)
    not_before: float = 0.0  # no new start before this (back-off)
    failures: deque[float] = field(default_factory=lambda: deque(maxlen=10))
    abort: bool = False  # a stop was asked while it started
    failed: str = ""  # the gateway (or the runtime) saw it fail; the next pass replaces it
    exit: Exit | None = None  # the runtime's verdict, when it gave one
    moved: str = ""  # its runtime moved it (a rescheduled task): the new address to rejoin at
    retiring: bool = False  # a rolling restart replaces it
    events: list[dict] = field(default_factory=list)  # the runner's own records
    last_stderr: str = ""
    ship_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def working(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def alive(self) -> bool:
        """Counted towards the deployment's replicas."""
        return self.status in (
            ReplicaStatus.STARTING,
            ReplicaStatus.RUNNING,
            ReplicaStatus.RESTARTING,
        )

    def backoff(self, now: float | None = None) -> tuple[float, bool]:
        """Record a failure; (seconds to wait before the next start, crash looping?)."""
        now = time.monotonic() if now is None else now
        self.failures.append(now)
        recent = sum(1 for t in self.failures if now - t < CRASHLOOP_WINDOW)
        delay = 0.0 if recent <= 1 else min(MAX_BACKOFF, 0.5 * 2 ** (recent - 2))
        return delay, recent >= CRASHLOOP_COUNT
