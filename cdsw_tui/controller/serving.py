"""The controller's serving half: the gateway, the deployments it runs, and what they
share: the runtimes, a store writer, a replica-spec builder, a publisher that pushes
routes and pools to the gateway's router, and the shipper of replica output.

Runtime calls and store queries go to threads, so the event loop only serves the
gateway and decides.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from cdsw_tui.controller import apiv2, apps_proxy, metrics_api
from cdsw_tui.controller.logship import Shipper
from cdsw_tui.controller.publisher import Publisher
from cdsw_tui.controller.replica_spec import SpecBuilder
from cdsw_tui.controller.state import ReplicaState
from cdsw_tui.controller.store_writer import StoreWriter
from cdsw_tui.engine import backends
from cdsw_tui.engine.runtime import Runtime, RuntimeUnavailable
from cdsw_tui.errors import CdswError
from cdsw_tui.services import metrics as metrics_service
from cdsw_tui.services.context import Workbench
from cdsw_tui.serving.connection import health
from cdsw_tui.serving.gateway import Gateway, Listening
from cdsw_tui.serving.metrics import GatewayMetrics
from cdsw_tui.serving.pool import Pool, PooledReplica
from cdsw_tui.serving.router import Router
from cdsw_tui.store import (
    ReplicaStatus,
)

if TYPE_CHECKING:
    from cdsw_tui.controller.deployment import DeploymentState

log = logging.getLogger("cdsw_tui.controller")
SHIP_INTERVAL = 0.1
HEALTH_TIMEOUT = 120.0  # how long a new replica may take to load its model
SHIPPED = (
    ReplicaStatus.STARTING,
    ReplicaStatus.RUNNING,
    ReplicaStatus.DRAINING,
    ReplicaStatus.STOPPING,
)
RUNTIME_RETRY = 5.0

Probe = Callable[[str, float], Awaitable[bool]]


class RuntimeSet:
    """The runtimes of the registry's backends, made on first use (in a thread: making
    Docker's means reaching its engine). One that cannot be made is tried again later."""

    def __init__(self, wb: Workbench, made: dict[str, Runtime] | None = None) -> None:
        self.home = wb.home
        self.made: dict[str, Runtime] = dict(made or {})
        self._failed: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Runtime:
        runtime = self.made.get(name)
        if runtime is not None:
            return runtime
        with self._lock:  # one lock per backend: a hung engine must not block the others
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name in self.made:
                return self.made[name]
            failed = self._failed.get(name)
            if failed and time.monotonic() - failed[0] < RUNTIME_RETRY:
                raise RuntimeUnavailable(failed[1])
            try:
                runtime = backends.get(name).runtime(self.home)
            except CdswError as exc:
                self._failed[name] = (time.monotonic(), exc.message)
                raise RuntimeUnavailable(exc.message) from None
            self.made[name] = runtime
            return runtime


class ServingManager:
    def __init__(
        self,
        wb: Workbench,
        runtimes: RuntimeSet | None = None,
        *,
        probe: Probe = health,
    ) -> None:
        self.wb = wb
        self.settings = wb.settings
        self.runtimes = runtimes or RuntimeSet(wb)
        self.probe = probe
        self.health_timeout = HEALTH_TIMEOUT
        self.writer = StoreWriter(wb.store)
        self.specs = SpecBuilder(wb)
        self.router = Router()
        self.publisher = Publisher(self.router, wb.settings.db_path)
        self.metrics = GatewayMetrics()
        self.gateway = Gateway(
            wb.settings, self.router, self.metrics, on_replica_failed=self.replica_failed
        )
        self.apps_proxy, app_routes = apps_proxy.routes(wb)
        self.gateway.extra_routes = [
            *metrics_api.routes(wb, self.writer.run),
            *apiv2.routes(wb),
            *app_routes,
        ]
        self.shipper = Shipper(
            wb.home, int(wb.settings.log_max_mb * 1024 * 1024), on_metrics=self.tracked
        )
        self.states: dict[int, DeploymentState] = {}
        self.tasks: set[asyncio.Task] = set()
        self.wake = asyncio.Event()
        self.runner: Listening | None = None

    # -- runtimes and replica output (threads) ------------------------------------------

    async def runtime(self, st: DeploymentState) -> Runtime:
        return await asyncio.to_thread(self.runtimes.get, st.ctx.build.runtime)

    def tracked(self, model_id: int, deployment_id: int, records: list[dict]) -> None:
        """What a replica's model tracked, into the store (from the shipping thread)."""
        try:
            metrics_service.record_calls(self.wb, model_id, deployment_id, records)
        except Exception as exc:  # the log goes on; the metrics of this batch are lost
            log.warning("could not store %d metric records: %s", len(records), exc)

    def ship(self, st: DeploymentState, r: ReplicaState) -> bool:
        runtime = self.runtimes.made.get(st.ctx.build.runtime)
        if runtime is None:
            return False
        return self.shipper.ship(runtime, r, st.model_id, st.id)

    def note(self, st: DeploymentState, r: ReplicaState, text: str) -> None:
        self.shipper.note(st.model_id, st.id, r.name, text)

    # -- tasks --------------------------------------------------------------------------------

    def spawn(self, r: ReplicaState, coro: Awaitable[None]) -> None:
        """``coro`` becomes the replica's one operation in progress."""
        task = asyncio.ensure_future(coro)
        r.task = task
        self.tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            self.wake.set()  # what it changed is seen by the next pass at once
            if not t.cancelled() and t.exception() is not None:
                log.error("replica %s: operation failed", r.name, exc_info=t.exception())

        task.add_done_callback(done)

    # -- the gateway's report ---------------------------------------------------------------

    def replica_failed(self, pool: Pool, handle: PooledReplica, reason: str) -> None:
        """A call broke or timed out on this replica: out of the pool now, replaced soon."""
        st = self.states.get(pool.deployment_id)
        r = st.replicas.get(handle.name) if st is not None else None
        if r is None or r.gateway is not handle or r.status != ReplicaStatus.RUNNING:
            return
        pool.remove(handle.name)
        handle.conn.close()
        r.failed = reason
        self.wake.set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Leave replicas running: a new controller adopts them."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.flush_stats()
        await asyncio.to_thread(self.shipper.calls, self.gateway.calls.take())
        if self.runner is not None:
            await self.runner.cleanup()
        await self.apps_proxy.close()
        await asyncio.to_thread(self.publisher.close)

    # -- output and statistics ------------------------------------------------------------------

    async def ship_loop(self) -> None:
        while True:
            await asyncio.sleep(SHIP_INTERVAL)
            items = [
                (st, r)
                for st in self.states.values()
                for r in st.replicas.values()
                if r.handle and r.status in SHIPPED
            ]
            self.gateway.meter()
            calls = self.gateway.calls.take()
            if calls:
                await asyncio.to_thread(self.shipper.calls, calls)
            if items:
                await asyncio.to_thread(self._ship_all, items)

    def _ship_all(self, items: list[tuple[DeploymentState, ReplicaState]]) -> None:
        for st, r in items:
            try:
                self.ship(st, r)
            except Exception:  # one replica's output must not stop the others'
                log.exception("could not file the output of replica %s", r.name)

    async def flush_stats(self, replicas: list[ReplicaState] | None = None) -> None:
        if replicas is None:
            replicas = [r for st in self.states.values() for r in st.replicas.values()]
        await self.writer.save_stats(
            [
                (r.row_id, {**r.gateway.stats(), "output_offset": r.output_offset})
                for r in replicas
                if r.row_id is not None
            ]
        )

    async def stats_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.flush_stats()
            except Exception:  # the next second tries again
                log.exception("could not save replica statistics")
