"""The controller's pass: what the store wants, compared with what runs, every time.

A pass reads the active deployments (in a thread), admits the ones it meets for the
first time (adoption), asks the runtimes which ready replicas died (one thread call),
steps every deployment (rollout), and writes what changed in one transaction.
Kubernetes controllers and Ray Serve's DeploymentState work this way: level-triggered,
so a missed event or a failed step is simply seen again on the next pass.
"""

from __future__ import annotations

import asyncio
import logging

from cdsw_tui.config import GATEWAY_SOCKET
from cdsw_tui.controller import adoption
from cdsw_tui.controller.serving import ServingManager
from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.engine.runtime import Exit
from cdsw_tui.services import calls
from cdsw_tui.serving.gateway import start_gateway
from cdsw_tui.serving.tls import server_context
from cdsw_tui.store import DeploymentStatus, ReplicaStatus

log = logging.getLogger("cdsw_tui.controller")


async def start(mgr: ServingManager) -> None:
    """Take over what runs before the gateway answers: calls to a deployment being
    adopted wait for its replicas instead of hearing 'not deployed'."""
    tls = server_context(mgr.settings.tls_cert, mgr.settings.tls_key) if mgr.settings.tls else None
    await mgr.writer.run(mgr.publisher.load)
    mgr.publisher.start(asyncio.get_running_loop())
    mgr.gateway.identity = await mgr.writer.run(calls.new_identity, mgr.wb.home)
    await mgr.writer.run(adoption.collect, mgr)
    await converge(mgr)
    mgr.runner = await start_gateway(
        mgr.gateway,
        mgr.settings.gateway_host,
        mgr.settings.gateway_port,
        tls,
        unix_path=mgr.wb.home / GATEWAY_SOCKET,  # for containers, mounted into them
        unix_owner=replica_identity(mgr.settings.replica_uid).uid,
    )
    log.info("gateway listening on %s", mgr.settings.gateway_url)


async def converge(mgr: ServingManager) -> None:
    mgr.wake.clear()
    rows = await mgr.writer.run(mgr.writer.active_deployments)
    for dep_id, row in rows.items():
        if dep_id not in mgr.states:
            found = await mgr.writer.run(adoption.load, mgr, row)
            if found is None:
                mgr.writer.write(
                    dep_id, status=DeploymentStatus.FAILED, reason="its model or build is gone"
                )
                continue
            mgr.states[dep_id] = adoption.admit(mgr, row, found)
    await watch(mgr)
    for st in list(mgr.states.values()):
        st.step(rows.get(st.id))
    await mgr.writer.flush()


async def watch(mgr: ServingManager) -> None:
    """Ask the runtimes, in one thread, whether the ready replicas still run."""
    ready = [
        (st, r)
        for st in mgr.states.values()
        for r in st.replicas.values()
        if r.status == ReplicaStatus.RUNNING and r.handle and not r.working and not r.failed
    ]
    if not ready:
        return

    def inspect() -> list:
        verdicts: list[tuple[Exit | None, str | None, bool]] = []
        for st, r in ready:
            runtime = mgr.runtimes.made.get(st.ctx.build.runtime)
            try:
                exit = runtime.inspect(r.handle) if runtime else None
                if exit is not None or runtime is None:
                    verdicts.append((exit, None, False))
                    continue
                moved = runtime.address(r.handle)
                verdicts.append((None, moved, not moved and runtime.moving(r.handle)))
            except Exception:  # cannot tell now: ask again next pass
                verdicts.append((None, None, False))
        return verdicts

    verdicts = await asyncio.to_thread(inspect)
    for (st, r), (exit, moved, moving) in zip(ready, verdicts, strict=True):
        if r.status != ReplicaStatus.RUNNING or r.working:
            continue
        if moved:
            r.moved = moved  # the pass has it rejoin there
        elif moving:  # out of the pool now; the restart waits for its new place
            st.pool.remove(r.name)
            r.failed = "its runtime is placing it again"
        if exit is not None:
            st.pool.remove(r.name)
            r.failed, r.exit = exit.reason, exit
