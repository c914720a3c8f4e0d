"""One replica's operations, each run as the replica's one task: start it and wait until
it answers, replace it when it died, drain and stop it. Each sets the replica's status
itself when it ends; the pass (rollout.py) decides which operation comes next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from cdsw_tui.controller.state import Goal, ReplicaState
from cdsw_tui.engine.runtime import Exit, Runtime
from cdsw_tui.serving.frames import (
    EVENT_LOAD_FAILED,
    EVENT_OUT_OF_MEMORY,
    EXIT_IMPORT_FAILED,
    EXIT_OUT_OF_MEMORY,
)
from cdsw_tui.store import ReplicaStatus, utcnow

if TYPE_CHECKING:
    from cdsw_tui.controller.deployment import DeploymentState
    from cdsw_tui.controller.serving import ServingManager

log = logging.getLogger("cdsw_tui.controller")
RETRY_STOP = 2.0
TIMED_OUT = "timed out"


class Aborted(Exception):
    """A stop was asked while the replica started."""


class StartFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def explain(r: ReplicaState, exit: Exit) -> str:
    """One line: the runner's own verdict if it gave one, else the runtime's and the last
    line the replica wrote on stderr."""
    for event in reversed(r.events):
        if event.get("event") == EVENT_LOAD_FAILED:
            return f"the model failed to load: {event.get('reason', '')}"
        if event.get("event") == EVENT_OUT_OF_MEMORY:
            return f"out of memory: {event.get('reason', '')}"
    if exit.oom:
        return exit.reason
    if exit.code == EXIT_IMPORT_FAILED:
        return "the model failed to load" + (f": {r.last_stderr}" if r.last_stderr else "")
    if exit.code == EXIT_OUT_OF_MEMORY:
        return "out of memory: the model reached its memory limit"
    return f"{exit.reason}: {r.last_stderr}" if r.last_stderr else exit.reason


async def _dispose(
    mgr: ServingManager, st: DeploymentState, r: ReplicaState, runtime: Runtime
) -> None:
    """Stop what runs under ``r.handle``, file its last output, forget it."""
    if not r.handle:
        return
    await asyncio.to_thread(runtime.stop, r.handle)
    await asyncio.to_thread(mgr.ship, st, r)
    await asyncio.to_thread(runtime.remove, r.handle)
    r.handle = ""


async def _placed_and_ready(mgr: ServingManager, st: DeploymentState, r: ReplicaState) -> None:
    if r.row_id is None:
        r.row_id = await mgr.writer.new_replica(st.id, r.name)
    runtime = await mgr.runtime(st)
    if r.handle:  # the one before could not be stopped (its runtime could not tell): now
        await _dispose(mgr, st, r, runtime)  # or this start fails, never two side by side
    spec = await mgr.writer.run(mgr.specs.spec, st.ctx, r.name)
    if r.abort:
        raise Aborted
    placed = await asyncio.to_thread(runtime.start, spec)
    r.handle, r.output_offset = placed.handle, 0
    r.events.clear()
    r.last_stderr = ""
    r.gateway.moved(placed.address)
    deadline = time.monotonic() + mgr.health_timeout
    try:
        await mgr.writer.set_replica(
            r.row_id,
            status=ReplicaStatus.STARTING,
            handle=r.handle,
            output_offset=0,
        )
        while True:
            if r.abort:
                raise Aborted
            exit = await asyncio.to_thread(runtime.inspect, r.handle)
            if exit is not None:
                await asyncio.to_thread(mgr.ship, st, r)
                raise StartFailed(explain(r, exit))
            if await mgr.probe(placed.address, 1.0):
                return
            if time.monotonic() > deadline:
                raise StartFailed(f"the replica was not ready within {mgr.health_timeout:g} s")
            await asyncio.sleep(0.02)
    except Exception:  # it must not outlive a start that did not succeed
        try:
            await _dispose(mgr, st, r, runtime)
        except Exception as exc:  # the runtime is away: the next start removes it
            log.warning("could not stop replica %s: %s", r.name, exc)
        raise


async def start(mgr: ServingManager, st: DeploymentState, r: ReplicaState) -> None:
    """Start ``r`` (again) and wait until it answers; then it joins the pool."""
    r.status = ReplicaStatus.STARTING
    try:
        await _placed_and_ready(mgr, st, r)
    except Aborted:
        if r.row_id is not None:  # the row first: the pass ends the deployment once all stopped
            await mgr.writer.set_replica(r.row_id, status=ReplicaStatus.STOPPED, handle="")
        r.status = ReplicaStatus.STOPPED
        return
    except Exception as exc:  # StartFailed, or the runtime refused
        reason = exc.reason if isinstance(exc, StartFailed) else _one_line(exc)
        await _failed_to_start(mgr, st, r, reason)
        return
    if r.abort or st.goal == Goal.STOP:
        r.status = ReplicaStatus.STOPPING  # the pass retires it
        return
    assert r.row_id is not None  # written before it was started
    await mgr.writer.set_replica(
        r.row_id,
        status=ReplicaStatus.RUNNING,
        started_at=utcnow(),
        restarts=r.restarts,
    )
    if r.abort or st.goal == Goal.STOP:  # a stop came while the row was written
        r.status = ReplicaStatus.STOPPING
        return
    r.status = ReplicaStatus.RUNNING
    st.pool.add(r.gateway)
    if st.crash_reason and not any(
        x.status == ReplicaStatus.RESTARTING for x in st.replicas.values()
    ):
        st.crash_reason = ""
        await mgr.writer.clear_reason(st.id, "replica ")


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[-1][:300] if text.strip() else type(exc).__name__


async def _failed_to_start(
    mgr: ServingManager, st: DeploymentState, r: ReplicaState, reason: str
) -> None:
    r.reason = reason
    stopping = r.abort or st.goal == Goal.STOP
    if stopping or (st.goal == Goal.ROLLOUT and not r.restarts):
        if r.row_id is not None:  # the row first: the pass acts once the state says so
            await mgr.writer.set_replica(
                r.row_id, status=ReplicaStatus.STOPPED, reason=reason, handle=""
            )
        # nothing runs (it was disposed of); a rollout fails with this reason
        r.status = ReplicaStatus.STOPPED if stopping else ReplicaStatus.FAILED
        return
    await _back_off(mgr, st, r, reason)


async def _back_off(mgr: ServingManager, st: DeploymentState, r: ReplicaState, reason: str) -> None:
    delay, crashloop = r.backoff()
    r.status = ReplicaStatus.RESTARTING
    r.reason = reason
    r.restarts += 1
    r.not_before = time.monotonic() + delay
    if r.row_id is not None:
        await mgr.writer.set_replica(
            r.row_id,
            status=ReplicaStatus.RESTARTING,
            reason=reason,
            restarts=r.restarts,
            handle=r.handle,
        )
    if crashloop:
        st.crash_reason = f"replica {r.name} keeps failing: {reason}"
        await mgr.writer.set_deployment(st.id, reason=st.crash_reason)


async def restart(
    mgr: ServingManager, st: DeploymentState, r: ReplicaState, reason: str, exit: Exit | None
) -> None:
    """Replace a replica that died or stopped answering; a new one starts after a back-off."""
    r.status = ReplicaStatus.RESTARTING
    st.pool.remove(r.name)
    r.gateway.conn.close()
    try:
        runtime = await mgr.runtime(st)
        if r.handle and exit is None and not reason.startswith(TIMED_OUT):
            # a broken connection may come before the runtime's verdict; a replica its
            # runtime is moving (Swarm rescheduling a task) is waited for, then rejoins
            verdict_by = time.monotonic() + 1.0
            move_by = time.monotonic() + mgr.health_timeout
            while time.monotonic() < move_by:
                exit = await asyncio.to_thread(runtime.inspect, r.handle)
                if exit is not None:
                    break
                moved = await asyncio.to_thread(runtime.address, r.handle)
                if moved:
                    await rejoin(mgr, st, r, moved)
                    return
                if time.monotonic() > verdict_by and (
                    r.abort or not await asyncio.to_thread(runtime.moving, r.handle)
                ):
                    break
                await asyncio.sleep(0.05)
        if r.handle:
            await asyncio.to_thread(mgr.ship, st, r)
        if exit is not None:
            reason = explain(r, exit)
        await asyncio.to_thread(mgr.note, st, r, f"replica stopped: {reason}; restarting")
        log.warning("replica %s failed (%s); restarting", r.name, reason)
        await _dispose(mgr, st, r, runtime)
    except Exception as exc:  # the runtime is away: start again later
        log.warning("replica %s: %s", r.name, _one_line(exc))
    await _back_off(mgr, st, r, reason)


async def rejoin(mgr: ServingManager, st: DeploymentState, r: ReplicaState, address: str) -> None:
    """Its runtime moved the replica (Swarm rescheduled its task): back in the pool at its
    new address once it answers there; replaced if it does not."""
    r.status = ReplicaStatus.STARTING
    st.pool.remove(r.name)
    r.gateway.conn.close()
    await asyncio.to_thread(mgr.note, st, r, "replica moved by its runtime; rejoining")
    log.info("replica %s moved; rejoining", r.name)
    runtime = await mgr.runtime(st)
    deadline = time.monotonic() + mgr.health_timeout
    while not await mgr.probe(address, 1.0):
        exit = await asyncio.to_thread(runtime.inspect, r.handle)
        if r.abort or st.goal == Goal.STOP:
            r.status = ReplicaStatus.STOPPING
            return
        if exit is not None or time.monotonic() > deadline:
            why = "it did not answer at its new place" if exit is None else exit.reason
            await restart(mgr, st, r, why, exit)
            return
        await asyncio.sleep(0.1)
    r.gateway.moved(address)
    if r.abort or st.goal == Goal.STOP:
        r.status = ReplicaStatus.STOPPING
        return
    r.status = ReplicaStatus.RUNNING
    st.pool.add(r.gateway)


async def retire(mgr: ServingManager, st: DeploymentState, r: ReplicaState) -> None:
    """Out of the pool, the call in flight finished, then stopped; retried until done."""
    if r.status == ReplicaStatus.RUNNING:
        r.status = ReplicaStatus.DRAINING
    st.pool.remove(r.name)
    if r.status == ReplicaStatus.DRAINING and r.row_id is not None:
        await mgr.writer.set_replica(r.row_id, status=ReplicaStatus.DRAINING)
    deadline = time.monotonic() + mgr.settings.request_timeout + 1
    while r.gateway.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    r.gateway.conn.close()
    r.status = ReplicaStatus.STOPPING
    try:
        if r.handle:
            runtime = await mgr.runtime(st)
            await _dispose(mgr, st, r, runtime)
    except Exception as exc:  # try again on a later pass
        r.not_before = time.monotonic() + RETRY_STOP
        log.warning("could not stop replica %s (%s); trying again", r.name, _one_line(exc))
        return
    if r.row_id is not None:
        await mgr.flush_stats([r])
        await mgr.writer.set_replica(r.row_id, status=ReplicaStatus.STOPPED, handle="")
    r.status = ReplicaStatus.STOPPED
