"""The controller's serving half: rollouts, stops, restarts, scaling, supervision and adoption.

Everything here runs on the controller's event loop, next to the gateway; store writes
and runtime calls (process or container work) go to threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import col, select

from cdsw_tui.engine.runtime import ReplicaExited, ReplicaSpec, Running
from cdsw_tui.errors import CdswError
from cdsw_tui.services import env as env_service
from cdsw_tui.services.context import Workbench
from cdsw_tui.services.deployments import replica_name
from cdsw_tui.serving.connection import health
from cdsw_tui.serving.gateway import Gateway, start_gateway
from cdsw_tui.serving.metrics import GatewayMetrics
from cdsw_tui.serving.pool import Pool, ReplicaHandle
from cdsw_tui.serving.router import Router
from cdsw_tui.store import DEPLOYMENT_ACTIVE, Build, Deployment, Model, Project, Replica, utcnow

log = logging.getLogger("cdsw_tui.controller")
HEALTH_TIMEOUT = 120.0
CRASHLOOP_WINDOW = 60.0
CRASHLOOP_COUNT = 3


@dataclass
class Context:
    """What every replica of one deployment shares."""

    deployment: Deployment
    model: Model
    project: Project
    build: Build


def log_tail(path: Path, lines: int = 12) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 16384))
            return fh.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return []


def failure_reason(exited: ReplicaExited, tail: list[str]) -> str:
    """One line: the runner's own verdict if it gave one, else the last stderr line."""
    for line in reversed(tail):
        if "failed to load the model:" in line:
            return (
                "the model failed to load: " + line.split("failed to load the model:", 1)[1].strip()
            )
    for line in reversed(tail):
        if " stderr " in line and line.strip():
            return f"{exited.reason}: {line.split(' stderr ', 1)[1].strip()}"
    return exited.reason


class ServingManager:
    def __init__(self, wb: Workbench, runtimes: dict[str, object]) -> None:
        self.wb = wb
        self.runtimes = runtimes
        self.router = Router(wb.settings.db_path)
        self.metrics = GatewayMetrics()
        self.gateway = Gateway(
            wb.settings, self.router, self.metrics, on_replica_failed=self.replica_failed
        )
        self.pools: dict[int, Pool] = {}  # deployment id -> pool, draining ones included
        self.contexts: dict[int, Context] = {}
        self.tasks: dict[int, asyncio.Task] = {}
        self.background: set[asyncio.Task] = set()
        self.failures: dict[str, deque[float]] = {}
        self.scale_failed_at: dict[int, float] = {}
        self.restarting: Counter[tuple[int, str]] = Counter()
        self.runner = None

    # -- store helpers (in threads) -------------------------------------------------

    async def _db(self, fn, *args):  # noqa: ANN001, ANN202
        return await asyncio.to_thread(fn, *args)

    def _set_deployment(self, dep_id: int, **values: object) -> None:
        self.wb.store.update(Deployment, dep_id, **values)

    def _set_replica(self, row_id: int, **values: object) -> None:
        self.wb.store.update(Replica, row_id, updated_at=utcnow(), **values)

    def _new_replica_row(self, dep_id: int, name: str) -> int:
        with self.wb.store.session() as s:
            row = Replica(deployment_id=dep_id, name=name, status="starting")
            s.add(row)
            s.commit()
            s.refresh(row)
            return int(row.id)  # type: ignore[arg-type]

    def _load_context(self, dep_id: int) -> Context | None:
        with self.wb.store.session() as s:
            d = s.get(Deployment, dep_id)
            if d is None:
                return None
            model = s.get(Model, d.model_id)
            build = s.get(Build, d.build_id)
            project = s.get(Project, model.project_id) if model else None
            if model is None or build is None or project is None:
                return None
            return Context(d, model, project, build)

    def _runtime(self, ctx: Context):  # noqa: ANN202
        """The runtime of the build; Docker's is made on first use (it needs a reachable engine)."""
        name = ctx.build.runtime
        if name not in self.runtimes:
            if name != "docker":
                raise CdswError(f"unknown runtime {name!r}")
            from cdsw_tui.engine.docker_runtime import DockerRuntime

            self.runtimes[name] = DockerRuntime(self.wb.home)
        return self.runtimes[name]

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self.router.refresh(force=True)
        await asyncio.to_thread(self._remove_orphan_containers)
        self.runner = await start_gateway(
            self.gateway, self.wb.settings.gateway_host, self.wb.settings.gateway_port
        )
        log.info("gateway listening on %s", self.wb.settings.gateway_url)

    def _remove_orphan_containers(self) -> None:
        """Containers of this home whose replica is no longer wanted (a stop while we were down)."""
        with self.wb.store.session() as s:
            active = select(Deployment.id).where(col(Deployment.status).in_(DEPLOYMENT_ACTIVE))
            wanted = set(
                s.exec(
                    select(Replica.name).where(
                        col(Replica.deployment_id).in_(active), Replica.status != "stopped"
                    )
                )
            )
            has_docker = s.exec(select(Build).where(Build.runtime == "docker")).first() is not None
        if not has_docker:
            return
        try:
            from cdsw_tui.engine.docker_runtime import DockerRuntime

            runtime = self.runtimes.get("docker") or DockerRuntime(self.wb.home)
            self.runtimes["docker"] = runtime
        except CdswError:
            return
        for cid, name in runtime.ours():
            if name not in wanted:
                log.info("removing container %s of replica %s: no longer wanted", cid[:12], name)
                runtime.stop(Running(port=0, container_id=cid))

    async def close(self) -> None:
        """Leave replicas running: a new controller adopts them."""
        for task in [*self.tasks.values(), *self.background]:
            task.cancel()
        await self._flush_stats()
        if self.runner is not None:
            await self.runner.cleanup()
        self.router.close()

    def _spawn(self, dep_id: int, coro) -> None:  # noqa: ANN001
        task = asyncio.create_task(coro)
        self.tasks[dep_id] = task

        def done(t: asyncio.Task) -> None:
            if self.tasks.get(dep_id) is t:
                del self.tasks[dep_id]
            if not t.cancelled() and t.exception() is not None:
                log.error("deployment %s task failed", dep_id, exc_info=t.exception())

        task.add_done_callback(done)

    def _background(self, coro) -> None:  # noqa: ANN001
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- reconcile: desired state in the store -> tasks ------------------------------------

    def _active(self) -> list[Deployment]:
        with self.wb.store.session() as s:
            return list(
                s.exec(
                    select(Deployment)
                    .where(col(Deployment.status).in_(DEPLOYMENT_ACTIVE))
                    .order_by(Deployment.id)
                )
            )

    async def reconcile(self) -> None:
        for d in await self._db(self._active):
            dep_id = int(d.id)  # type: ignore[arg-type]
            if dep_id in self.tasks:
                continue
            pool = self.pools.get(dep_id)
            if d.stop_requested or d.status == "stopping":
                self._spawn(dep_id, self.stop_deployment(dep_id, "stopped"))
            elif d.status in ("pending", "deploying"):
                self._spawn(dep_id, self.rollout(dep_id))
            elif pool is None:
                self._spawn(dep_id, self.adopt(dep_id))
            elif d.restart_requested:
                self._spawn(dep_id, self.restart(dep_id))
            elif d.replicas != len(pool.replicas) + self._restarting(dep_id) and (
                time.monotonic() - self.scale_failed_at.get(dep_id, 0.0) > 5.0  # back off
            ):
                self._spawn(dep_id, self.scale(dep_id, d.replicas))

    def _restarting(self, dep_id: int) -> int:
        return sum(1 for (dep, _name), n in self.restarting.items() if dep == dep_id and n > 0)

    # -- one replica ------------------------------------------------------------------------

    def _spec(self, ctx: Context, name: str) -> ReplicaSpec:
        d, model = ctx.deployment, ctx.model
        logs = self.wb.home / "logs" / "replicas" / f"m{model.id}"
        variables = env_service.resolve(self.wb, model, d)
        variables.update(
            {
                "CDSW_PROJECT": ctx.project.name,
                "CDSW_PROJECT_ID": str(ctx.project.id),
                "CDSW_MODEL_ID": str(model.id),
                "CDSW_MODEL_NAME": model.name,
                "CDSW_BUILD_NUMBER": str(ctx.build.number),
                "CDSW_DEPLOYMENT_ID": str(d.id),
                "CDSW_REPLICA_ID": name,
            }
        )
        return ReplicaSpec(
            name=name,
            deployment_id=int(d.id),  # type: ignore[arg-type]
            model_id=int(model.id),  # type: ignore[arg-type]
            artifact=Path(ctx.build.artifact),
            env_path=ctx.build.env_path,
            file=ctx.build.file,
            function=ctx.build.function,
            kernel=ctx.build.kernel,
            environment=variables,
            log_path=logs / f"d{d.id}" / f"{name}.log",
            metrics_path=logs / "metrics.jsonl",
            run_dir=self.wb.home / "run",
            cpu=d.cpu,
            memory=d.memory,
            gpu=d.gpu,
            image=ctx.build.artifact,
        )

    async def start_replica(
        self, ctx: Context, name: str, row_id: int, restarts: int = 0
    ) -> ReplicaHandle:
        """Start, wait until healthy; ReplicaExited (with a one-line reason) otherwise."""
        runtime = self._runtime(ctx)
        spec = await self._db(self._spec, ctx, name)
        running: Running = await asyncio.to_thread(runtime.start, spec, 60.0)
        await self._db(
            lambda: self._set_replica(
                row_id,
                status="starting",
                pid=running.pid,
                port=running.port,
                container_id=running.container_id,
            )
        )
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while True:
            exited = runtime.exited(running)
            if exited is not None:
                tail = await asyncio.to_thread(log_tail, spec.log_path)
                raise ReplicaExited(failure_reason(exited, tail), oom=exited.oom)
            if await health("127.0.0.1", running.port, 1.0):
                break
            if time.monotonic() > deadline:
                await asyncio.to_thread(runtime.stop, running)
                raise ReplicaExited(f"the replica was not ready within {HEALTH_TIMEOUT:g} s")
            await asyncio.sleep(0.02)
        await self._db(
            lambda: self._set_replica(
                row_id, status="running", started_at=utcnow(), restarts=restarts
            )
        )
        return ReplicaHandle(
            name=name,
            row_id=row_id,
            deployment_id=int(ctx.deployment.id),  # type: ignore[arg-type]
            running=running,
            restarts=restarts,
        )

    # -- rollout --------------------------------------------------------------------------

    async def rollout(self, dep_id: int) -> None:
        ctx = await self._db(self._load_context, dep_id)
        if ctx is None:
            return
        d = ctx.deployment
        await self._db(lambda: self._set_deployment(dep_id, status="deploying", reason=""))
        await self._kill_leftovers(dep_id, ctx)  # a rollout a dead controller left half done
        names = [replica_name(ctx.model, dep_id) for _ in range(d.replicas)]
        rows = [await self._db(self._new_replica_row, dep_id, n) for n in names]
        results = await asyncio.gather(
            *(self.start_replica(ctx, n, r) for n, r in zip(names, rows, strict=True)),
            return_exceptions=True,
        )
        handles = [r for r in results if isinstance(r, ReplicaHandle)]
        errors = [r for r in results if not isinstance(r, ReplicaHandle)]
        if errors:
            runtime = self._runtime(ctx)
            for h in handles:
                await asyncio.to_thread(runtime.stop, h.running)
            first = errors[0]
            if isinstance(first, ReplicaExited):
                reason = first.reason
            elif isinstance(first, CdswError):
                reason = first.message
            else:
                reason = f"{type(first).__name__}: {first}"
            for row_id in rows:
                await self._db(lambda r=row_id: self._set_replica(r, status="stopped"))
            await self._db(
                lambda: self._set_deployment(
                    dep_id, status="failed", reason=reason, stopped_at=utcnow()
                )
            )
            log.warning("deployment %s failed: %s", dep_id, reason)
            return
        pool = Pool(dep_id, int(ctx.model.id))  # type: ignore[arg-type]
        for h in handles:
            pool.add(h)
        self.pools[dep_id] = pool
        self.contexts[dep_id] = ctx
        self.router.pools[pool.model_id] = pool
        await self._db(
            lambda: self._set_deployment(dep_id, status="deployed", deployed_at=utcnow(), reason="")
        )
        log.info("deployment %s deployed with %d replicas", dep_id, len(handles))
        # the previous deployment stops only now that this one answers
        for other in await self._db(self._active):
            if (
                other.model_id == pool.model_id
                and other.id != dep_id
                and other.id not in self.tasks
            ):
                self._spawn(
                    int(other.id),
                    self.stop_deployment(
                        int(other.id), "stopped", f"replaced by deployment {dep_id}"
                    ),
                )  # type: ignore[arg-type]

    async def _kill_leftovers(self, dep_id: int, ctx: Context) -> None:
        def rows() -> list[Replica]:
            with self.wb.store.session() as s:
                return list(
                    s.exec(
                        select(Replica).where(
                            Replica.deployment_id == dep_id, Replica.status != "stopped"
                        )
                    )
                )

        runtime = self._runtime(ctx)
        for row in await self._db(rows):
            running = Running(port=row.port or 0, pid=row.pid, container_id=row.container_id)
            if runtime.adopt(row.name, running):
                await asyncio.to_thread(runtime.stop, running)
            await self._db(lambda r=row: self._set_replica(int(r.id), status="stopped"))  # type: ignore[arg-type]

    # -- stop -----------------------------------------------------------------------------

    async def stop_deployment(self, dep_id: int, final: str, reason: str = "") -> None:
        await self._db(lambda: self._set_deployment(dep_id, status="stopping"))
        pool = self.pools.get(dep_id)
        ctx = self.contexts.get(dep_id) or await self._db(self._load_context, dep_id)
        if pool is not None:
            if self.router.pools.get(pool.model_id) is pool:
                del self.router.pools[pool.model_id]
            pool.closed = True
            await pool.drain(self.wb.settings.request_timeout + 1)
            runtime = self._runtime(ctx) if ctx else None
            for handle in list(pool.replicas.values()):
                pool.remove(handle.name)
                handle.conn.close()
                if runtime is not None:
                    await asyncio.to_thread(runtime.stop, handle.running)
            await self._flush_stats(pool)
        if ctx is not None:
            await self._kill_leftovers(dep_id, ctx)
        self.pools.pop(dep_id, None)
        self.contexts.pop(dep_id, None)
        await self._db(
            lambda: self._set_deployment(
                dep_id, status=final, stopped_at=utcnow(), stop_requested=False, reason=reason
            )
        )
        log.info("deployment %s %s", dep_id, final)

    # -- adopt after a controller restart ---------------------------------------------------

    async def adopt(self, dep_id: int) -> None:
        ctx = await self._db(self._load_context, dep_id)
        if ctx is None:
            return
        runtime = self._runtime(ctx)

        def rows() -> list[Replica]:
            with self.wb.store.session() as s:
                return list(
                    s.exec(
                        select(Replica).where(
                            Replica.deployment_id == dep_id, Replica.status != "stopped"
                        )
                    )
                )

        pool = Pool(dep_id, int(ctx.model.id))  # type: ignore[arg-type]
        self.pools[dep_id] = pool
        self.contexts[dep_id] = ctx
        self.router.pools[pool.model_id] = pool
        replace: list[Replica] = []
        for row in await self._db(rows):
            running = Running(port=row.port or 0, pid=row.pid, container_id=row.container_id)
            if (
                row.port
                and runtime.adopt(row.name, running)
                and await health("127.0.0.1", row.port, 2.0)
            ):
                handle = ReplicaHandle(
                    name=row.name,
                    row_id=int(row.id),
                    deployment_id=dep_id,  # type: ignore[arg-type]
                    running=running,
                    restarts=row.restarts,
                )
                for stat in ("received", "processed", "success", "failure", "busy_waits"):
                    setattr(handle, stat, getattr(row, stat))
                pool.add(handle)
                log.info("adopted replica %s (pid %s)", row.name, row.pid)
            else:
                replace.append(row)
        for row in replace:
            if row.pid or row.container_id:
                await asyncio.to_thread(runtime.kill_stray, row.name, row.pid)
            self._mark_restarting(dep_id, row.name)
            self._background(
                self._restart_replica(
                    pool,
                    ctx,
                    row.name,
                    int(row.id),
                    row.restarts,
                    "lost while the controller was down",
                )
            )  # type: ignore[arg-type]

    # -- restart and scale ------------------------------------------------------------------

    async def restart(self, dep_id: int) -> None:
        """Replica by replica: the new one is ready before the old one leaves."""
        pool, ctx = self.pools.get(dep_id), self.contexts.get(dep_id)
        if pool is None or ctx is None:
            return
        runtime = self._runtime(ctx)
        for old in list(pool.replicas.values()):
            name = replica_name(ctx.model, dep_id)
            row_id = await self._db(self._new_replica_row, dep_id, name)
            try:
                new = await self.start_replica(ctx, name, row_id)
            except ReplicaExited as exc:
                await self._db(
                    lambda r=row_id, e=exc: self._set_replica(r, status="stopped", reason=e.reason)
                )
                await self._db(
                    lambda e=exc: self._set_deployment(dep_id, reason=f"restart failed: {e.reason}")
                )
                break
            pool.add(new)
            await self._retire(pool, runtime, old)
        await self._db(lambda: self._set_deployment(dep_id, restart_requested=False))

    async def _retire(self, pool: Pool, runtime, handle: ReplicaHandle) -> None:  # noqa: ANN001
        pool.remove(handle.name)
        deadline = time.monotonic() + self.wb.settings.request_timeout + 1
        while handle.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        handle.conn.close()
        await asyncio.to_thread(runtime.stop, handle.running)
        await self._flush_stats(pool, [handle])
        await self._db(lambda: self._set_replica(handle.row_id, status="stopped"))

    async def scale(self, dep_id: int, replicas: int) -> None:
        pool, ctx = self.pools.get(dep_id), self.contexts.get(dep_id)
        if pool is None or ctx is None:
            return
        runtime = self._runtime(ctx)
        current = len(pool.replicas) + self._restarting(dep_id)
        if replicas > current:
            names = [replica_name(ctx.model, dep_id) for _ in range(replicas - current)]
            rows = [await self._db(self._new_replica_row, dep_id, n) for n in names]
            results = await asyncio.gather(
                *(self.start_replica(ctx, n, r) for n, r in zip(names, rows, strict=True)),
                return_exceptions=True,
            )
            failed = False
            for result, row_id in zip(results, rows, strict=True):
                if isinstance(result, ReplicaHandle):
                    pool.add(result)
                else:
                    failed = True
                    self.scale_failed_at[dep_id] = time.monotonic()
                    reason = getattr(result, "reason", str(result))
                    await self._db(
                        lambda r=row_id, why=reason: self._set_replica(
                            r, status="stopped", reason=why
                        )
                    )
                    await self._db(
                        lambda why=reason: self._set_deployment(
                            dep_id, reason=f"scaling failed: {why}"
                        )
                    )
            if not failed and ctx.deployment.reason.startswith("scaling failed"):
                await self._db(lambda: self._set_deployment(dep_id, reason=""))
        else:
            for handle in sorted(pool.replicas.values(), key=lambda h: h.busy)[
                : current - replicas
            ]:
                await self._retire(pool, runtime, handle)

    # -- supervision ------------------------------------------------------------------------

    def replica_failed(self, pool: Pool, handle: ReplicaHandle, reason: str) -> None:
        """Called by the gateway (broken connection, timeout) and by the health sweep."""
        if not handle.alive or pool.replicas.get(handle.name) is not handle or pool.closed:
            return
        pool.remove(handle.name)
        handle.conn.close()
        ctx = self.contexts.get(pool.deployment_id)
        if ctx is None:
            return
        self._mark_restarting(
            pool.deployment_id, handle.name
        )  # now, so scaling does not replace it
        self._background(self._replace_failed(pool, ctx, handle, reason))

    def _mark_restarting(self, dep_id: int, name: str) -> None:
        """Counted, not flagged: a replica can die again while its last restart finishes."""
        self.restarting[(dep_id, name)] += 1

    async def _replace_failed(
        self, pool: Pool, ctx: Context, handle: ReplicaHandle, reason: str
    ) -> None:
        runtime = self._runtime(ctx)
        exited = runtime.exited(handle.running)
        for _ in range(20):  # a broken connection may arrive before the runtime's verdict
            if exited is not None:
                break
            await asyncio.sleep(0.05)
            exited = runtime.exited(handle.running)
        if exited is not None:
            reason = exited.reason
            tail = await asyncio.to_thread(log_tail, self._spec(ctx, handle.name).log_path)
            reason = failure_reason(exited, tail) if "failed to load" in "\n".join(tail) else reason
        await asyncio.to_thread(runtime.stop, handle.running)
        await self._flush_stats(pool, [handle])
        await asyncio.to_thread(
            self._note_in_log, ctx, handle.name, f"replica stopped: {reason}; restarting"
        )
        log.warning("replica %s failed (%s); restarting", handle.name, reason)
        await self._restart_replica(
            pool, ctx, handle.name, handle.row_id, handle.restarts, reason, handle
        )

    async def _restart_replica(
        self,
        pool: Pool,
        ctx: Context,
        name: str,
        row_id: int,
        restarts: int,
        reason: str,
        previous: ReplicaHandle | None = None,
    ) -> None:
        key = (pool.deployment_id, name)
        history = self.failures.setdefault(name, deque(maxlen=10))
        pending = True

        def release() -> None:
            """Stop counting this restart: in the pool or given up, never both, never later."""
            nonlocal pending
            if pending:
                pending = False
                self.restarting[key] -= 1
                if self.restarting[key] <= 0:
                    del self.restarting[key]

        try:
            while not pool.closed:
                now = time.monotonic()
                history.append(now)
                recent = sum(1 for t in history if now - t < CRASHLOOP_WINDOW)
                restarts += 1
                delay = 0.0 if recent <= 1 else min(30.0, 0.5 * 2 ** (recent - 2))
                status = "crashloop" if recent >= CRASHLOOP_COUNT else "restarting"
                await self._db(
                    lambda s=status, n=restarts, why=reason: self._set_replica(
                        row_id, status=s, reason=why, restarts=n
                    )
                )
                if status == "crashloop":
                    await self._db(
                        lambda why=reason: self._set_deployment(
                            pool.deployment_id, reason=f"replica {name} keeps failing: {why}"
                        )
                    )
                await asyncio.sleep(delay)
                if pool.closed:
                    return
                try:
                    handle = await self.start_replica(ctx, name, row_id, restarts)
                except ReplicaExited as exc:
                    reason = exc.reason
                    continue
                except Exception as exc:  # noqa: BLE001  (the runtime itself is away: try again later)
                    reason = f"cannot start: {getattr(exc, 'message', None) or exc}"[:300]
                    continue
                if previous is not None:
                    for stat in ("received", "processed", "success", "failure", "busy_waits"):
                        setattr(handle, stat, getattr(previous, stat))
                if pool.closed:
                    await asyncio.to_thread(self._runtime(ctx).stop, handle.running)
                    return
                pool.add(handle)
                release()  # at once: the scaler must never count it twice
                if recent < CRASHLOOP_COUNT:
                    await self._db(lambda: self._clear_crash_reason(pool.deployment_id))
                return
        finally:
            release()

    def _note_in_log(self, ctx: Context, name: str, text: str) -> None:
        """The controller's own word in a replica's log, marked as such."""
        from cdsw_tui.engine.buildlog import stamp

        try:
            with open(self._spec(ctx, name).log_path, "a", encoding="utf-8") as fh:
                fh.write(f"{stamp()} stderr [cdsw-tui] {text}\n")
        except OSError:
            pass

    def _clear_crash_reason(self, dep_id: int) -> None:
        with self.wb.store.session() as s:
            row = s.get(Deployment, dep_id)
            if row is not None and row.reason.startswith("replica "):
                row.reason = ""
                s.add(row)
                s.commit()

    async def sweep(self) -> None:
        """Find replicas that died between requests."""
        for pool in list(self.pools.values()):
            ctx = self.contexts.get(pool.deployment_id)
            if ctx is None or pool.closed:
                continue
            runtime = self._runtime(ctx)
            for handle in list(pool.replicas.values()):
                exited = runtime.exited(handle.running)
                if exited is not None:
                    self.replica_failed(pool, handle, exited.reason)

    async def _flush_stats(
        self, pool: Pool | None = None, handles: list[ReplicaHandle] | None = None
    ) -> None:
        if handles is None:
            pools = [pool] if pool is not None else list(self.pools.values())
            handles = [h for p in pools for h in p.replicas.values()]
        if not handles:
            return
        values = [
            (
                h.row_id,
                {
                    k: getattr(h, k)
                    for k in ("received", "processed", "success", "failure", "busy_waits")
                },
            )
            for h in handles
        ]

        def write() -> None:
            with self.wb.store.session() as s:
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
                await self._flush_stats()
            except Exception:
                log.exception("could not save replica statistics")


def deploy_after_build(wb: Workbench, build: Build) -> None:
    """A build asked for by 'Deploy Model' becomes a pending deployment once built."""
    from cdsw_tui.services import deployments, models

    if build.status != "built" or not build.deploy_request:
        return
    request = json.loads(build.deploy_request)
    model = models.get_by_id(wb, build.model_id)
    try:
        deployments.create(wb, model, build_id=int(build.id), **request)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001  (recorded on the build; the controller goes on)
        reason = f"built, but not deployed: {getattr(exc, 'message', exc)}"
        wb.store.update(Build, int(build.id), reason=reason)  # type: ignore[arg-type]
