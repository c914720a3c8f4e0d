"""The controller's serving half: the gateway, the deployments' states, and the
operations the pass (converge.py) and the replica tasks (supervision.py) build on.

Runtime calls and store queries go to threads, so the event loop only serves the
gateway and decides; deployment rows changed by a pass are written at its end, in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlmodel import col, select

from cdsw_tui.controller import metrics_api
from cdsw_tui.controller.logship import Shipper
from cdsw_tui.controller.state import DeploymentState, ReplicaState
from cdsw_tui.engine import backends
from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.engine.runtime import ReplicaSpec, Runtime, RuntimeUnavailable
from cdsw_tui.errors import CdswError
from cdsw_tui.services import env as env_service
from cdsw_tui.services import metrics as metrics_service
from cdsw_tui.services.context import Workbench
from cdsw_tui.services.deployments import replica_name
from cdsw_tui.serving.connection import health
from cdsw_tui.serving.gateway import Gateway
from cdsw_tui.serving.metrics import GatewayMetrics
from cdsw_tui.serving.pool import Pool, PooledReplica
from cdsw_tui.serving.router import Router
from cdsw_tui.store import (
    DEPLOYMENT_ACTIVE,
    Deployment,
    Replica,
    ReplicaStatus,
    pk,
    utcnow,
)

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
        self.store = wb.store
        self.settings = wb.settings
        self.runtimes = runtimes or RuntimeSet(wb)
        self.probe = probe
        self.health_timeout = HEALTH_TIMEOUT
        self.router = Router(wb.settings.db_path)
        self.metrics = GatewayMetrics()
        self.gateway = Gateway(
            wb.settings, self.router, self.metrics, on_replica_failed=self.replica_failed
        )
        self.gateway.extra_routes = metrics_api.routes(wb, self.db)
        self.shipper = Shipper(
            wb.home, int(wb.settings.log_max_mb * 1024 * 1024), on_metrics=self.tracked
        )
        self.states: dict[int, DeploymentState] = {}
        self.tasks: set[asyncio.Task] = set()
        self.writes: list[tuple[int, dict[str, Any]]] = []
        self.calls: list[Callable[[], None]] = []
        self.wake = asyncio.Event()
        self.runner: web.AppRunner | None = None

    # -- threads: the store and the runtimes ------------------------------------------

    async def db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def runtime(self, st: DeploymentState) -> Runtime:
        return await asyncio.to_thread(self.runtimes.get, st.ctx.build.runtime)

    def set_replica(self, row_id: int, **values: Any) -> None:
        self.store.update(Replica, row_id, updated_at=utcnow(), **values)

    def new_replica_row(self, dep_id: int, name: str) -> int:
        with self.store.session() as s:
            row = Replica(deployment_id=dep_id, name=name, status=ReplicaStatus.STARTING)
            s.add(row)
            s.commit()
            s.refresh(row)
            return pk(row)

    def clear_reason(self, dep_id: int, prefix: str) -> None:
        with self.store.session() as s:
            row = s.get(Deployment, dep_id)
            if row is not None and row.reason.startswith(prefix):
                row.reason = ""
                s.add(row)
                s.commit()

    def spec(self, st: DeploymentState, name: str) -> ReplicaSpec:
        ctx = st.ctx
        d, model, build = ctx.deployment, ctx.model, ctx.build
        # CDSW's engine variables, then the user's levels, then the ids no one overrides
        variables = env_service.workbench_variables(
            self.wb,
            ctx.project,
            model,
            engine_id=name,
            build_id=build.id,
            deployment_id=d.id,
            cpu=d.cpu,
            memory=d.memory,
        )
        variables.update(env_service.resolve(self.wb, model, d))
        variables.update(
            {
                "CDSW_PROJECT": ctx.project.name,
                "CDSW_PROJECT_ID": str(ctx.project.id),
                "CDSW_MODEL_ID": str(model.id),
                "CDSW_MODEL_NAME": model.name,
                "CDSW_BUILD_NUMBER": str(build.number),
                "CDSW_DEPLOYMENT_ID": str(d.id),
                "CDSW_REPLICA_ID": name,
            }
        )
        return ReplicaSpec(
            name=name,
            deployment_id=st.id,
            model_id=st.model_id,
            artifact=build.image_id or build.artifact,
            env_path=build.env_path,
            file=build.file,
            function=build.function,
            kernel=build.kernel,
            environment=variables,
            cpu=d.cpu,
            memory=d.memory,
            gpu=d.gpu,
            placement=tuple(c for c in ctx.project.placement.splitlines() if c),
            uid=replica_identity(self.wb.settings.replica_uid).uid,
        )

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

    # -- states, tasks, writes ------------------------------------------------------------

    def new_replica_state(self, st: DeploymentState) -> ReplicaState:
        name = replica_name(st.ctx.model, st.id)
        return ReplicaState(
            name=name,
            row_id=None,
            status=ReplicaStatus.STARTING,
            gateway=PooledReplica(name, "", st.id),
        )

    def spawn(self, r: ReplicaState, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        r.task = task
        self.tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            self.wake.set()  # what it changed is seen by the next pass at once
            if not t.cancelled() and t.exception() is not None:
                log.error("replica %s: operation failed", r.name, exc_info=t.exception())

        task.add_done_callback(done)

    def write(self, dep_id: int, **values: Any) -> None:
        """A change of the deployment's row, written at the end of the pass (in order)."""
        self.writes.append((dep_id, values))

    def _flush_writes(self, writes: list[tuple[int, dict[str, Any]]]) -> None:
        with self.store.session() as s:
            for dep_id, values in writes:
                row = s.get(Deployment, dep_id)
                if row is None:
                    continue
                for key, value in values.items():
                    setattr(row, key, value)
                s.add(row)
            s.commit()

    def active_deployments(self) -> dict[int, Deployment]:
        with self.store.session() as s:
            rows = s.exec(
                select(Deployment)
                .where(col(Deployment.status).in_(DEPLOYMENT_ACTIVE))
                .order_by(col(Deployment.id))
            )
            return {pk(r): r for r in rows}

    async def flush_writes(self) -> None:
        """What the pass changed, in order, in one thread call."""
        writes, self.writes = self.writes, []
        calls, self.calls = self.calls, []
        if not writes and not calls:
            return

        def flush() -> None:
            self._flush_writes(writes)
            for call in calls:
                call()

        await self.db(flush)

    def publish(self, st: DeploymentState) -> None:
        """The router sends the model's calls to this deployment's pool from now on."""
        previous = self.router.pools.get(st.model_id)
        self.router.pools[st.model_id] = st.pool
        if previous is not None and previous is not st.pool:
            previous.close()  # its waiting callers move on to this pool

    def unpublish(self, st: DeploymentState) -> None:
        if self.router.pools.get(st.model_id) is st.pool:
            del self.router.pools[st.model_id]
            st.pool.close()

    def replaced(self, st: DeploymentState, reason: str) -> None:
        """Ask, in the store, every other active deployment of the model to stop."""

        def mark() -> None:
            with self.store.session() as s:
                rows = s.exec(
                    select(Deployment).where(
                        Deployment.model_id == st.model_id,
                        Deployment.id != st.id,
                        col(Deployment.status).in_(DEPLOYMENT_ACTIVE),
                    )
                )
                for row in rows:
                    row.stop_requested = True
                    row.reason = reason
                    s.add(row)
                s.commit()

        self.calls.append(mark)

    def finish(self, st: DeploymentState) -> None:
        """Every replica is stopped: record the final status and forget the deployment."""
        self.states.pop(st.id, None)
        self.unpublish(st)
        st.pool.close()
        self.write(
            st.id,
            status=st.final,
            stopped_at=utcnow(),
            stop_requested=False,
            restart_requested=False,
            reason=st.reason,
        )
        if st.final == "failed":
            log.warning("deployment %s failed: %s", st.id, st.reason)
        else:
            log.info("deployment %s stopped", st.id)

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
        self.router.close()

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
        values = [
            (r.row_id, {**r.gateway.stats(), "output_offset": r.output_offset})
            for r in replicas
            if r.row_id is not None
        ]
        if not values:
            return

        def write() -> None:
            with self.store.session() as s:
                for row_id, stats in values:
                    row = s.get(Replica, row_id)
                    if row is None:
                        continue
                    changed = False
                    for k, v in stats.items():
                        if getattr(row, k) != v:
                            setattr(row, k, v)
                            changed = True
                    if changed:
                        s.add(row)
                s.commit()

        await asyncio.to_thread(write)

    async def stats_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.flush_stats()
            except Exception:  # the next second tries again
                log.exception("could not save replica statistics")
