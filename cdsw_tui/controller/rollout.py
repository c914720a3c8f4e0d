"""One pass over one deployment: compare what the store wants with what runs, and start
the operations that close the gap (level-triggered). Nothing here waits: operations
run as each replica's task, and the next pass looks at where they got.

- rollout: start its replicas; once all answer, take over the model's calls and ask
  the deployment it replaces to stop (in the store, so that stop survives a restart);
  if one cannot start, the rollout fails and the previous deployment keeps serving.
- serve: replace replicas that died, keep the replica count, restart one by one.
- stop: take the pool away from the router, drain, stop; retried until every replica
  is stopped, then the final status is recorded. A stop never waits for a rollout: a
  replica that is starting is told to stop where it is.
"""

from __future__ import annotations

import time

from cdsw_tui.controller import supervision
from cdsw_tui.controller.serving import ServingManager
from cdsw_tui.controller.state import DeploymentState, Goal, ReplicaState
from cdsw_tui.store import Deployment, DeploymentStatus, ReplicaStatus, utcnow


def step(mgr: ServingManager, st: DeploymentState, row: Deployment | None) -> None:
    if st.goal != Goal.STOP and (
        row is None or row.stop_requested or row.status == DeploymentStatus.STOPPING
    ):
        begin_stop(mgr, st, "stopped", row.reason if row is not None else "")
    _retire_leftovers(mgr, st)
    if st.goal == Goal.STOP:
        _step_stop(mgr, st)
    elif st.goal == Goal.ROLLOUT:
        assert row is not None
        _step_rollout(mgr, st, row)
    else:
        assert row is not None
        _step_serve(mgr, st, row)
    for name in [n for n, r in st.replicas.items() if r.status == ReplicaStatus.STOPPED]:
        if st.goal != Goal.STOP:
            del st.replicas[name]  # its row keeps its history


def new_replica(mgr: ServingManager, st: DeploymentState) -> ReplicaState:
    r = mgr.new_replica_state(st)
    st.replicas[r.name] = r
    mgr.spawn(r, supervision.start(mgr, st, r))
    return r


def retire(mgr: ServingManager, st: DeploymentState, r: ReplicaState) -> None:
    """Take ``r`` out of service: a starting one stops where it is, a ready one drains."""
    r.abort = True
    st.pool.remove(r.name)
    if r.status == ReplicaStatus.RUNNING:
        r.status = ReplicaStatus.DRAINING
    elif r.status == ReplicaStatus.RESTARTING and not r.working:
        r.status = ReplicaStatus.STOPPING
    if not r.working and r.status in (ReplicaStatus.DRAINING, ReplicaStatus.STOPPING):
        mgr.spawn(r, supervision.retire(mgr, st, r))


def _retire_leftovers(mgr: ServingManager, st: DeploymentState) -> None:
    now = time.monotonic()
    for r in st.replicas.values():
        leaving = r.status in (ReplicaStatus.DRAINING, ReplicaStatus.STOPPING) or (
            r.status == ReplicaStatus.RESTARTING and r.abort  # told to stop while it restarted
        )
        if leaving and not r.working and now >= r.not_before:
            mgr.spawn(r, supervision.retire(mgr, st, r))


def begin_stop(mgr: ServingManager, st: DeploymentState, final: str, reason: str) -> None:
    st.goal = Goal.STOP
    st.final, st.reason = final, reason
    mgr.unpublish(st)  # new calls go to the deployment that replaces it, or get 503
    for r in st.replicas.values():
        if r.status not in (ReplicaStatus.STOPPED, ReplicaStatus.FAILED):
            retire(mgr, st, r)
    if final == "stopped":
        mgr.write(st.id, status=DeploymentStatus.STOPPING)


def _step_stop(mgr: ServingManager, st: DeploymentState) -> None:
    if any(
        r.status not in (ReplicaStatus.STOPPED, ReplicaStatus.FAILED) for r in st.replicas.values()
    ):
        return
    mgr.finish(st)


def _step_rollout(mgr: ServingManager, st: DeploymentState, row: Deployment) -> None:
    if row.status == DeploymentStatus.PENDING:
        mgr.write(st.id, status=DeploymentStatus.DEPLOYING, reason="")
        row.status = DeploymentStatus.DEPLOYING
    failed = next((r for r in st.replicas.values() if r.status == ReplicaStatus.FAILED), None)
    if failed is not None:
        begin_stop(mgr, st, "failed", failed.reason)
        return
    alive = st.alive()
    for _ in range(row.replicas - len(alive)):
        new_replica(mgr, st)
    alive = st.alive()
    if len(alive) >= row.replicas and all(r.status == ReplicaStatus.RUNNING for r in alive):
        _take_over(mgr, st)


def _take_over(mgr: ServingManager, st: DeploymentState) -> None:
    """Every replica answers: this deployment serves the model's calls from now on."""
    st.goal = Goal.SERVE
    mgr.publish(st)
    mgr.write(st.id, status=DeploymentStatus.DEPLOYED, deployed_at=utcnow(), reason="")
    reason = f"replaced by deployment {st.id}"
    for other in list(mgr.states.values()):
        if other.model_id == st.model_id and other is not st and other.goal != Goal.STOP:
            begin_stop(mgr, other, "stopped", reason)
    mgr.replaced(st, reason)


def _step_serve(mgr: ServingManager, st: DeploymentState, row: Deployment) -> None:
    now = time.monotonic()
    for r in list(st.replicas.values()):
        if r.working:
            continue
        if r.status == ReplicaStatus.RUNNING and r.failed:
            reason, exit = r.failed, r.exit
            r.failed, r.exit, r.moved = "", None, ""
            mgr.spawn(r, supervision.restart(mgr, st, r, reason, exit))
        elif r.status == ReplicaStatus.RUNNING and r.moved:
            address, r.moved = r.moved, ""
            mgr.spawn(r, supervision.rejoin(mgr, st, r, address))
        elif r.status == ReplicaStatus.RESTARTING and now >= r.not_before:
            mgr.spawn(r, supervision.start(mgr, st, r))
    if row.restart_requested or st.restarting:
        _step_restart(mgr, st, row)
        return
    alive = st.alive()
    if len(alive) < row.replicas:
        for _ in range(row.replicas - len(alive)):
            new_replica(mgr, st)
    elif len(alive) > row.replicas:
        # the ones not serving first, then the idle ones
        order = sorted(
            alive,
            key=lambda r: (r.status == ReplicaStatus.RUNNING, r.gateway.busy, r.restarts == 0),
        )
        for r in order[: len(alive) - row.replicas]:
            retire(mgr, st, r)


def _step_restart(mgr: ServingManager, st: DeploymentState, row: Deployment) -> None:
    """Replica by replica: the new one answers before the one it replaces leaves."""
    if not st.restarting:
        st.restarting = True
        st.pairs.clear()
        for r in st.alive():
            r.retiring = True
    for new_name, old_name in list(st.pairs.items()):
        new, old = st.replicas.get(new_name), st.replicas.get(old_name)
        if new is None or new.status in (
            ReplicaStatus.FAILED,
            ReplicaStatus.RESTARTING,
            ReplicaStatus.STOPPED,
        ):
            why = new.reason if new is not None else "the new replica went away"
            _end_restart(mgr, st, f"restart failed: {why}")
            if new is not None and new.status != ReplicaStatus.STOPPED:
                retire(mgr, st, new)
            return
        if new.status == ReplicaStatus.RUNNING:
            del st.pairs[new_name]
            if old is not None and old.status != ReplicaStatus.STOPPED:
                retire(mgr, st, old)
    if st.pairs:
        return
    waiting = [r for r in st.replicas.values() if r.retiring and r.alive]
    if waiting:
        new = new_replica(mgr, st)
        st.pairs[new.name] = waiting[0].name
    elif not any(r.retiring and r.status != ReplicaStatus.STOPPED for r in st.replicas.values()):
        _end_restart(mgr, st, "")


def _end_restart(mgr: ServingManager, st: DeploymentState, reason: str) -> None:
    st.restarting = False
    st.pairs.clear()
    for r in st.replicas.values():
        r.retiring = False
    values: dict = {"restart_requested": False}
    if reason:
        values["reason"] = reason
    mgr.write(st.id, **values)
