"""A deployment the controller runs: its replicas, and the step that compares what the
store wants with what runs and starts the operations that close the gap.

Ray Serve's DeploymentState is the model: each replica has an explicit status, and
every pass of the controller steps every deployment (level-triggered), so a missed
event or a failed step is simply seen again on the next pass. Nothing here waits:
operations run as each replica's task (supervision.py), and the next step looks at
where they got.

- rollout: start its replicas; once all answer, take over the model's calls and ask
  the deployment it replaces to stop (in the store, so that stop survives a restart);
  if one cannot start, the rollout fails and the previous deployment keeps serving.
- serve: replace replicas that died, keep the replica count, restart one by one.
- stop: take the pool away from the router, drain, stop; retried until every replica
  is stopped, then the final status is recorded. A stop never waits for a rollout: a
  replica that is starting is told to stop where it is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cdsw_tui.controller import supervision
from cdsw_tui.controller.state import Context, Goal, ReplicaState
from cdsw_tui.services.deployments import replica_name
from cdsw_tui.serving.pool import Pool, PooledReplica
from cdsw_tui.store import Deployment, DeploymentStatus, ReplicaStatus, utcnow

if TYPE_CHECKING:
    from cdsw_tui.controller.serving import ServingManager

log = logging.getLogger("cdsw_tui.controller")
# start failures that say a replica does not fit where its runtime can place it
DOES_NOT_FIT = ("no suitable node", "insufficient resources", "not enough memory")


@dataclass(eq=False)
class DeploymentState:
    id: int
    model_id: int
    ctx: Context
    pool: Pool
    goal: Goal
    ctl: ServingManager  # the controller this deployment runs in
    replicas: dict[str, ReplicaState] = field(default_factory=dict)
    final: str = "stopped"  # the status a stop ends in
    reason: str = ""
    restarting: bool = False  # a rolling restart is under way
    pairs: dict[str, str] = field(default_factory=dict)  # new replica -> the one it replaces
    crash_reason: str = ""  # what the deployment's reason says about a crash loop
    cap: int = 0  # replicas it may keep while a successor takes its place one by one (0: all)
    squeezed: bool = False  # rolling out one replica at a time: they do not fit beside the old

    def alive(self) -> list[ReplicaState]:
        return [r for r in self.replicas.values() if r.alive]

    # -- the step -------------------------------------------------------------------------

    def step(self, row: Deployment | None) -> None:
        """One pass over this deployment; ``row`` is what the store wants (None: gone)."""
        if self.goal != Goal.STOP and (
            row is None or row.stop_requested or row.status == DeploymentStatus.STOPPING
        ):
            self.begin_stop("stopped", row.reason if row is not None else "")
        if row is not None:
            self.pool.wanted = row.replicas  # what /health/<project>/<model> says is wanted
        self._retire_leftovers()
        if self.goal == Goal.STOP:
            self._step_stop()
        elif self.goal == Goal.ROLLOUT:
            assert row is not None
            self._step_rollout(row)
        else:
            assert row is not None
            self._step_serve(row)
        for name in [n for n, r in self.replicas.items() if r.status == ReplicaStatus.STOPPED]:
            if self.goal != Goal.STOP:
                del self.replicas[name]  # its row keeps its history

    def new_replica(self) -> ReplicaState:
        name = replica_name(self.ctx.model, self.id)
        r = ReplicaState(
            name=name,
            row_id=None,
            status=ReplicaStatus.STARTING,
            gateway=PooledReplica(name, "", self.id),
        )
        self.replicas[r.name] = r
        self.ctl.spawn(r, supervision.start(self.ctl, self, r))
        return r

    def retire(self, r: ReplicaState) -> None:
        """Take ``r`` out of service: a starting one stops where it is, a ready one drains."""
        r.abort = True
        self.pool.remove(r.name)
        if r.status == ReplicaStatus.RUNNING:
            r.status = ReplicaStatus.DRAINING
        elif r.status == ReplicaStatus.RESTARTING and not r.working:
            r.status = ReplicaStatus.STOPPING
        if not r.working and r.status in (ReplicaStatus.DRAINING, ReplicaStatus.STOPPING):
            self.ctl.spawn(r, supervision.retire(self.ctl, self, r))

    def begin_stop(self, final: str, reason: str) -> None:
        self.goal = Goal.STOP
        self.final, self.reason = final, reason
        self.ctl.publisher.unpublish(self)  # new calls go to its successor, or get 503
        for r in self.replicas.values():
            if r.status not in (ReplicaStatus.STOPPED, ReplicaStatus.FAILED):
                self.retire(r)
        if final == "stopped":
            self.ctl.writer.write(self.id, status=DeploymentStatus.STOPPING)

    def _retire_leftovers(self) -> None:
        now = time.monotonic()
        for r in self.replicas.values():
            leaving = r.status in (ReplicaStatus.DRAINING, ReplicaStatus.STOPPING) or (
                r.status == ReplicaStatus.RESTARTING and r.abort  # told to stop as it restarted
            )
            if leaving and not r.working and now >= r.not_before:
                self.ctl.spawn(r, supervision.retire(self.ctl, self, r))

    def _step_stop(self) -> None:
        if any(
            r.status not in (ReplicaStatus.STOPPED, ReplicaStatus.FAILED)
            for r in self.replicas.values()
        ):
            return
        self._finish()

    def _finish(self) -> None:
        """Every replica is stopped: record the final status and leave the controller."""
        self.ctl.states.pop(self.id, None)
        self.ctl.publisher.unpublish(self)
        self.pool.close()
        self.ctl.writer.write(
            self.id,
            status=self.final,
            stopped_at=utcnow(),
            stop_requested=False,
            restart_requested=False,
            reason=self.reason,
        )
        if self.final == "failed":
            log.warning("deployment %s failed: %s", self.id, self.reason)
        else:
            log.info("deployment %s stopped", self.id)

    def _step_rollout(self, row: Deployment) -> None:
        if row.status == DeploymentStatus.PENDING:
            self.ctl.writer.write(self.id, status=DeploymentStatus.DEPLOYING, reason="")
            row.status = DeploymentStatus.DEPLOYING
        failed = next((r for r in self.replicas.values() if r.status == ReplicaStatus.FAILED), None)
        if failed is not None:
            why = self._make_room(failed)
            if why:
                self.begin_stop("failed", why)
                return
            del self.replicas[failed.name]  # stopped and recorded; another takes its place
        for _ in range(row.replicas - len(self.alive())):
            self.new_replica()
        alive = self.alive()
        if len(alive) >= row.replicas and all(r.status == ReplicaStatus.RUNNING for r in alive):
            self._take_over()

    def _make_room(self, failed: ReplicaState) -> str:
        """A new replica that does not fit beside the deployment it replaces (swarm: "no
        suitable node"): one of the old replicas makes room, as Kubernetes' maxUnavailable
        1 does, and the rollout goes on one replica at a time; at least one replica keeps
        serving. What the rollout fails with ("": it goes on)."""
        if not any(sign in failed.reason for sign in DOES_NOT_FIT):
            return failed.reason
        old = next(
            (
                d
                for d in self.ctl.states.values()
                if d.model_id == self.model_id and d is not self and d.goal == Goal.SERVE
            ),
            None,
        )
        serving = [r for r in old.alive() if r.status == ReplicaStatus.RUNNING] if old else []
        ours = [r for r in self.alive() if r.status == ReplicaStatus.RUNNING]
        if old is None or not (serving or ours):
            return failed.reason  # nothing to make room with: not even one fits
        leaving = (ReplicaStatus.DRAINING, ReplicaStatus.STOPPING)
        if self.squeezed and (
            any(r.status in leaving for r in old.replicas.values())
            or any(r.status == ReplicaStatus.STARTING for r in self.alive())
        ):
            return ""  # room is being made: this one is started again, and waits for it
        if not self.squeezed:
            self.squeezed = True
            self.reason = (
                "rolling out one replica at a time: the new replicas do not fit beside the "
                f"old ones ({failed.reason[:200]})"
            )
            self.ctl.writer.write(self.id, reason=self.reason)
            log.info("deployment %s: %s", self.id, self.reason)
        if len(serving) == 1 and not ours:
            return (
                f"{failed.reason}; not even one new replica fits while the last old one "
                "serves (lower --cpu or --memory, or add a node)"
            )
        if len(serving) > 1:
            old.cap = len(old.alive()) - 1
            old.retire(min(serving, key=lambda r: (r.gateway.busy, -r.restarts)))
        else:  # the old deployment's last replica is what is left: ours serve from now on
            self._take_over()
        return ""

    def _take_over(self) -> None:
        """Every replica answers: this deployment serves the model's calls from now on."""
        self.goal = Goal.SERVE
        self.ctl.publisher.publish(self)
        self.ctl.writer.write(
            self.id,
            status=DeploymentStatus.DEPLOYED,
            deployed_at=utcnow(),
            reason=self.reason if self.squeezed else "",  # how it was rolled out
        )
        reason = f"replaced by deployment {self.id}"
        for other in list(self.ctl.states.values()):
            if other.model_id == self.model_id and other is not self and other.goal != Goal.STOP:
                other.begin_stop("stopped", reason)
        self.ctl.writer.replaced(self.model_id, self.id, reason)

    def _step_serve(self, row: Deployment) -> None:
        ctl, now = self.ctl, time.monotonic()
        for r in list(self.replicas.values()):
            if r.working:
                continue
            if r.status == ReplicaStatus.RUNNING and r.failed:
                reason, exit = r.failed, r.exit
                r.failed, r.exit, r.moved = "", None, ""
                ctl.spawn(r, supervision.restart(ctl, self, r, reason, exit))
            elif r.status == ReplicaStatus.RUNNING and r.moved:
                address, r.moved = r.moved, ""
                ctl.spawn(r, supervision.rejoin(ctl, self, r, address))
            elif r.status == ReplicaStatus.RESTARTING and now >= r.not_before:
                ctl.spawn(r, supervision.start(ctl, self, r))
        if row.restart_requested or self.restarting:
            self._step_restart()
            return
        alive = self.alive()
        wanted = min(row.replicas, self.cap) if self.cap else row.replicas
        if len(alive) < wanted:
            for _ in range(wanted - len(alive)):
                self.new_replica()
        elif len(alive) > wanted:
            # the ones not serving first, then the idle ones
            order = sorted(
                alive,
                key=lambda r: (r.status == ReplicaStatus.RUNNING, r.gateway.busy, r.restarts == 0),
            )
            for r in order[: len(alive) - wanted]:
                self.retire(r)

    def _step_restart(self) -> None:
        """Replica by replica: the new one answers before the one it replaces leaves."""
        if not self.restarting:
            self.restarting = True
            self.pairs.clear()
            for r in self.alive():
                r.retiring = True
        for new_name, old_name in list(self.pairs.items()):
            new, old = self.replicas.get(new_name), self.replicas.get(old_name)
            if new is None or new.status in (
                ReplicaStatus.FAILED,
                ReplicaStatus.RESTARTING,
                ReplicaStatus.STOPPED,
            ):
                why = new.reason if new is not None else "the new replica went away"
                self._end_restart(f"restart failed: {why}")
                if new is not None and new.status != ReplicaStatus.STOPPED:
                    self.retire(new)
                return
            if new.status == ReplicaStatus.RUNNING:
                del self.pairs[new_name]
                if old is not None and old.status != ReplicaStatus.STOPPED:
                    self.retire(old)
        if self.pairs:
            return
        waiting = [r for r in self.replicas.values() if r.retiring and r.alive]
        if waiting:
            new = self.new_replica()
            self.pairs[new.name] = waiting[0].name
        elif not any(
            r.retiring and r.status != ReplicaStatus.STOPPED for r in self.replicas.values()
        ):
            self._end_restart("")

    def _end_restart(self, reason: str) -> None:
        self.restarting = False
        self.pairs.clear()
        for r in self.replicas.values():
            r.retiring = False
        values: dict[str, Any] = {"restart_requested": False}
        if reason:
            values["reason"] = reason
        self.ctl.writer.write(self.id, **values)
