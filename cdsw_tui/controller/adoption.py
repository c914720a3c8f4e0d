"""Taking over what the store says runs: a deployment the controller meets for the first
time (after its own restart, or a new one), the replicas a previous controller left
running, and the ones nobody wants any more (garbage collection).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlmodel import col, select

from cdsw_tui.controller import supervision
from cdsw_tui.controller.deployment import DeploymentState
from cdsw_tui.controller.state import Context, Goal, ReplicaState
from cdsw_tui.serving.pool import Pool, PooledReplica
from cdsw_tui.store import (
    DEPLOYMENT_ACTIVE,
    Build,
    Deployment,
    DeploymentStatus,
    Model,
    Project,
    Replica,
    ReplicaStatus,
    pk,
)

if TYPE_CHECKING:
    from cdsw_tui.controller.serving import ServingManager

log = logging.getLogger("cdsw_tui.controller")


def load(mgr: ServingManager, row: Deployment) -> tuple[Context, list[Replica]] | None:
    """The deployment's context and its replica rows that are not stopped (in a thread)."""
    with mgr.wb.store.session() as s:
        model = s.get(Model, row.model_id)
        build = s.get(Build, row.build_id)
        project = s.get(Project, model.project_id) if model else None
        if model is None or build is None or project is None:
            return None
        replicas = list(
            s.exec(
                select(Replica)
                .where(Replica.deployment_id == row.id, Replica.status != ReplicaStatus.STOPPED)
                .order_by(col(Replica.id))
            )
        )
    return Context(row, model, project, build), replicas


def admit(
    mgr: ServingManager, row: Deployment, found: tuple[Context, list[Replica]]
) -> DeploymentState:
    """A state for a deployment seen for the first time, with the replicas its rows name:
    a serving deployment's are adopted, a rollout's leftovers stopped (it starts over)."""
    ctx, rows = found
    dep_id = pk(row)
    pool = Pool(dep_id, row.model_id, build_number=ctx.build.number)
    pool.wanted = row.replicas
    if row.stop_requested or row.status == DeploymentStatus.STOPPING:
        goal = Goal.STOP
    elif row.status == DeploymentStatus.DEPLOYED:
        goal = Goal.SERVE
    else:
        goal = Goal.ROLLOUT
    st = DeploymentState(dep_id, row.model_id, ctx, pool, goal, mgr, reason=row.reason)
    for replica in rows:
        r = ReplicaState(
            name=replica.name,
            row_id=pk(replica),
            status=ReplicaStatus.STOPPING,
            gateway=PooledReplica(replica.name, "", dep_id),
            handle=replica.handle,
            restarts=replica.restarts,
            reason=replica.reason,
            output_offset=replica.output_offset,
        )
        for stat in ("received", "processed", "success", "failure", "busy_waits"):
            setattr(r.gateway, stat, getattr(replica, stat))
        st.replicas[r.name] = r
        if goal == Goal.SERVE:
            r.status = ReplicaStatus.STARTING
            mgr.spawn(r, adopt(mgr, st, r))
    if goal == Goal.SERVE or (goal == Goal.ROLLOUT and mgr.router.pools.get(row.model_id) is None):
        mgr.publisher.publish(st)  # calls wait for its replicas instead of hearing "not deployed"
    return st


async def adopt(mgr: ServingManager, st: DeploymentState, r: ReplicaState) -> None:
    """A replica a previous controller left running: back in the pool if it answers."""
    try:
        runtime = await mgr.runtime(st)
        placed = await asyncio.to_thread(runtime.adopt, r.name, r.handle) if r.handle else None
    except Exception:  # the runtime is away: replace it once it is back
        placed = None
    if placed is not None and await mgr.probe(placed.address, 2.0):
        r.gateway.moved(placed.address)
        if st.goal == Goal.STOP:
            r.status = ReplicaStatus.STOPPING
            return
        r.status = ReplicaStatus.RUNNING
        st.pool.add(r.gateway)
        log.info("adopted replica %s", r.name)
        return
    await supervision.restart(mgr, st, r, "lost while the controller was down", None)


def wanted(mgr: ServingManager) -> tuple[set[str], set[str]]:
    """(handles of the replicas active deployments still count on, runtimes any build used)."""
    with mgr.wb.store.session() as s:
        active = select(Deployment.id).where(col(Deployment.status).in_(DEPLOYMENT_ACTIVE))
        handles = set(
            s.exec(
                select(Replica.handle).where(
                    col(Replica.deployment_id).in_(active),
                    Replica.status != ReplicaStatus.STOPPED,
                    Replica.handle != "",
                )
            )
        )
        runtimes = set(s.exec(select(Build.runtime).distinct()))
    return handles, runtimes


def collect(mgr: ServingManager) -> None:
    """Stop and remove replicas no deployment knows: a stop a dead controller left half
    done, or a start whose handle it never wrote down. Runs once, before the first pass
    starts anything (in a thread)."""
    keep, runtimes = wanted(mgr)
    for name in sorted(runtimes):
        try:
            runtime = mgr.runtimes.get(name)
            removed = runtime.collect(keep)
        except Exception as exc:  # an engine that is away: its turn comes later
            log.warning("cannot look for leftover %s replicas: %s", name, exc)
            continue
        for replica in removed:
            log.info("removed replica %s: no deployment wants it", replica)
