"""The controller's convergence against a fake runtime: no process, no socket, a real
SQLite store. Each test drives passes until the store and the runtime agree."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import select

from cdsw_tui.config import load_settings
from cdsw_tui.controller import adoption, converge
from cdsw_tui.controller.serving import RuntimeSet, ServingManager
from cdsw_tui.engine.runtime import ReplicaSpec
from cdsw_tui.services import deployments, models, projects
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Build, Deployment, Replica
from tests.fakes import FakeRuntime

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def wb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for key in ("CDSW_TUI_RUNTIME", "CDSW_TUI_GATEWAY_PORT"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "m.py").write_text("def f(args):\n    return 1\n")
    bench = Workbench(load_settings(tmp_path / "home"))
    bench.settings.request_timeout = 1
    projects.create(bench, "p", path=tmp_path / "code")
    model = models.create(bench, "p", models.ModelSpec(name="m", file="m.py", function="f"))
    for number in (1, 2):
        with bench.store.session() as s:
            s.add(
                Build(
                    model_id=model.id,
                    number=number,
                    status="built",
                    file="m.py",
                    function="f",
                    kernel="python3",
                    runtime="local",
                    artifact=str(tmp_path / "code"),
                )
            )
            s.commit()
    yield bench
    bench.close()


def manager(wb: Workbench, fake: FakeRuntime) -> ServingManager:
    return ServingManager(wb, RuntimeSet(wb, {"local": fake}), probe=fake.probe)


def die(mgr: ServingManager) -> None:
    """kill -9 of the controller: its tasks end where they are; its replicas live on."""
    for task in mgr.tasks:
        task.cancel()
    mgr.publisher.close()


def restarted(wb: Workbench, fake: FakeRuntime) -> ServingManager:
    """A new controller: garbage collection first, as converge.start does."""
    mgr = manager(wb, fake)
    adoption.collect(mgr)
    return mgr


async def settle(mgr: ServingManager, done: Callable[[], bool], limit: float = 3.0) -> None:
    """Passes, as the controller runs them, until ``done()`` (or fail after ``limit`` s)."""
    deadline = time.monotonic() + limit
    while True:
        await converge.converge(mgr)
        if done():
            return
        assert time.monotonic() < deadline, "did not converge: " + "; ".join(
            f"{st.id} {st.goal} "
            + ",".join(f"{r.name}:{r.status}:{r.working}:{r.reason}" for r in st.replicas.values())
            for st in mgr.states.values()
        )
        await asyncio.sleep(0.005)


def model(wb: Workbench):
    return models.resolve(wb, "p/m")


def status(wb: Workbench, dep_id: int) -> str:
    return deployments.get(wb, dep_id).status


def rows(wb: Workbench, dep_id: int) -> list[Replica]:
    return deployments.replicas_of(wb, deployments.get(wb, dep_id), current=False)


def deploy(wb: Workbench, build: int, replicas: int = 1) -> int:
    return int(deployments.create(wb, model(wb), build_number=build, replicas=replicas).id)


async def test_rollout_starts_every_replica_then_serves(wb):
    fake = FakeRuntime()
    mgr = manager(wb, fake)
    dep = deploy(wb, 1, replicas=2)
    await settle(mgr, lambda: status(wb, dep) == "deployed")
    assert len(fake.running()) == 2
    assert {r.status for r in rows(wb, dep)} == {"running"}
    pool = mgr.router.pools[model(wb).id]
    assert pool.deployment_id == dep and pool.healthy() == 2


async def test_rollback_starts_the_new_replicas_before_the_old_stop(wb):
    fake = FakeRuntime()
    mgr = manager(wb, fake)
    first = deploy(wb, 1, replicas=2)
    await settle(mgr, lambda: status(wb, first) == "deployed")
    old = fake.running()
    second = deploy(wb, 2, replicas=2)
    await settle(mgr, lambda: status(wb, first) == "stopped")
    assert status(wb, second) == "deployed"
    assert deployments.get(wb, first).reason == f"replaced by deployment {second}"
    new = fake.running()
    assert len(new) == 2 and not set(new) & set(old)
    starts = [i for i, (what, name) in enumerate(fake.events) if what == "start" and name in new]
    stops = [i for i, (what, name) in enumerate(fake.events) if what == "stop" and name in old]
    assert max(starts) < min(stops)  # new replicas answered before an old one left
    # and back to build 1
    third = deploy(wb, 1, replicas=1)
    await settle(mgr, lambda: status(wb, second) == "stopped" and status(wb, third) == "deployed")
    assert mgr.router.pools[model(wb).id].deployment_id == third
    assert len(fake.running()) == 1


async def test_a_failed_rollout_leaves_the_previous_deployment_serving(wb):
    fake = FakeRuntime()
    mgr = manager(wb, fake)
    first = deploy(wb, 1)
    await settle(mgr, lambda: status(wb, first) == "deployed")
    fake.failing.add("*")
    second = deploy(wb, 2, replicas=2)
    await settle(mgr, lambda: status(wb, second) == "failed")
    assert "the model failed to load: ModuleNotFoundError" in deployments.get(wb, second).reason
    assert status(wb, first) == "deployed"
    assert mgr.router.pools[model(wb).id].deployment_id == first
    assert len(fake.running()) == 1


async def test_stop_during_a_rollout_does_not_wait_for_it(wb):
    fake = FakeRuntime(slow=True)  # the replicas never answer: the rollout would take 120 s
    mgr = manager(wb, fake)
    dep = deploy(wb, 1, replicas=3)
    await settle(mgr, lambda: len(fake.running()) == 3)
    start = time.monotonic()
    deployments.stop(wb, model(wb))
    await settle(mgr, lambda: status(wb, dep) == "stopped", limit=2)
    assert time.monotonic() - start < 1.0
    assert fake.running() == []
    assert {r.status for r in rows(wb, dep)} == {"stopped"}
    assert model(wb).id not in mgr.router.pools


async def test_a_dead_replica_is_restarted_under_its_name_with_the_reason(wb):
    fake = FakeRuntime()
    mgr = manager(wb, fake)
    dep = deploy(wb, 1)
    await settle(mgr, lambda: status(wb, dep) == "deployed")
    [name] = fake.running()
    before = rows(wb, dep)[0].handle
    fake.kill(name)
    # the row says running a moment before the replica rejoins the pool: wait for both
    await settle(
        mgr,
        lambda: (
            rows(wb, dep)[0].restarts == 1
            and rows(wb, dep)[0].status == "running"
            and mgr.router.pools[model(wb).id].healthy() == 1
        ),
    )
    row = rows(wb, dep)[0]
    assert row.name == name and row.handle != before
    assert "killed (SIGKILL" in row.reason
    assert fake.running() == [name]
    assert mgr.router.pools[model(wb).id].healthy() == 1


async def test_a_replica_the_gateway_saw_fail_is_replaced(wb):
    fake = FakeRuntime()
    mgr = manager(wb, fake)
    dep = deploy(wb, 1)
    await settle(mgr, lambda: status(wb, dep) == "deployed")
    pool = mgr.router.pools[model(wb).id]
    [handle] = pool.replicas.values()
    mgr.replica_failed(pool, handle, "timed out")  # still running, but stuck
    assert pool.healthy() == 0  # out of the pool at once
    await settle(mgr, lambda: rows(wb, dep)[0].restarts == 1 and pool.healthy() == 1)
    assert rows(wb, dep)[0].reason == "timed out"
    assert len(fake.running()) == 1


async def test_a_replica_its_scheduler_moves_rejoins_without_a_restart(wb):
    fake = FakeRuntime()
    mgr = manager(wb, fake)
    dep = deploy(wb, 1, replicas=2)
    await settle(mgr, lambda: status(wb, dep) == "deployed")
    pool = mgr.router.pools[model(wb).id]
    name = fake.running()[0]
    fake.move(name, landed=False)  # stopped on its node: out of the pool while in transit
    await settle(mgr, lambda: pool.healthy() == 1)
    assert name not in pool.replicas
    fake.move(name, landed=True)  # running on another node: back, at its new address
    await settle(mgr, lambda: pool.healthy() == 2)
    assert pool.replicas[name].address.endswith("-moved")
    assert [what for what, _ in fake.events].count("start") == 2  # never started again
    assert all(r.restarts == 0 for r in rows(wb, dep))


async def test_adoption_after_a_controller_restart_keeps_the_same_replicas(wb):
    fake = FakeRuntime()
    first = manager(wb, fake)
    dep = deploy(wb, 1, replicas=2)
    await settle(first, lambda: status(wb, dep) == "deployed")
    handles = sorted(r.handle for r in rows(wb, dep))
    started = len([e for e in fake.events if e[0] == "start"])
    die(first)
    second = restarted(wb, fake)
    await converge.converge(second)
    pool = second.router.pools[model(wb).id]  # published before adoption ends: calls wait
    await settle(second, lambda: pool.healthy() == 2)
    assert sorted(r.handle for r in rows(wb, dep)) == handles
    assert len([e for e in fake.events if e[0] == "start"]) == started  # nothing new started


async def test_adoption_replaces_a_replica_that_died_meanwhile(wb):
    fake = FakeRuntime()
    first = manager(wb, fake)
    dep = deploy(wb, 1, replicas=2)
    await settle(first, lambda: status(wb, dep) == "deployed")
    dead = fake.running()[0]
    fake.kill(dead)
    die(first)
    second = restarted(wb, fake)
    await settle(
        second,
        lambda: (
            second.router.pools[model(wb).id].healthy() == 2
            and {r.status for r in rows(wb, dep)} == {"running"}
        ),
    )
    row = next(r for r in rows(wb, dep) if r.name == dead)
    assert row.restarts == 1 and row.status == "running"
    assert "killed" in row.reason  # the runtime's verdict on it, found at adoption


async def test_a_half_done_rollout_of_a_dead_controller_starts_over(wb):
    fake = FakeRuntime(slow=True)
    first = manager(wb, fake)
    dep = deploy(wb, 1, replicas=2)
    await settle(first, lambda: len(fake.running()) == 2)
    leftovers = fake.running()
    die(first)
    fake.slow = False
    second = restarted(wb, fake)
    await settle(second, lambda: status(wb, dep) == "deployed")
    assert not set(fake.running()) & set(leftovers)  # stopped, and two new ones serve
    assert len(fake.running()) == 2


async def test_runtime_unavailable_fails_a_rollout_with_the_reason(wb):
    fake = FakeRuntime(down=True)
    mgr = manager(wb, fake)
    dep = deploy(wb, 1)
    await settle(mgr, lambda: status(wb, dep) == "failed")
    assert "no Docker engine answers" in deployments.get(wb, dep).reason


async def test_runtime_unavailable_then_back_restarts_the_deployment(wb):
    fake = FakeRuntime()
    mgr = manager(wb, fake)
    dep = deploy(wb, 1)
    await settle(mgr, lambda: status(wb, dep) == "deployed")
    [name] = fake.running()
    fake.kill(name)
    fake.down = True  # the engine went with it
    await settle(mgr, lambda: rows(wb, dep)[0].status == "restarting")
    assert status(wb, dep) == "deployed"
    fake.down = False
    await settle(mgr, lambda: rows(wb, dep)[0].status == "running", limit=4)
    assert fake.running() == [name]


async def test_an_unfinished_stop_is_retried_until_done(wb):
    fake = FakeRuntime()
    mgr = manager(wb, fake)
    first = deploy(wb, 1)
    await settle(mgr, lambda: status(wb, first) == "deployed")
    fake.stop_failures = 2  # the old deployment's stop fails twice
    import cdsw_tui.controller.supervision as supervision

    supervision.RETRY_STOP, saved = 0.01, supervision.RETRY_STOP
    try:
        second = deploy(wb, 2)
        await settle(mgr, lambda: status(wb, first) == "stopped")
    finally:
        supervision.RETRY_STOP = saved
    assert status(wb, second) == "deployed" and len(fake.running()) == 1
    assert fake.stop_failures == 0


async def test_scale_up_and_down_without_a_new_deployment(wb):
    fake = FakeRuntime()
    mgr = manager(wb, fake)
    dep = deploy(wb, 1)
    await settle(mgr, lambda: status(wb, dep) == "deployed")
    deployments.scale(wb, model(wb), 3)
    await settle(mgr, lambda: mgr.router.pools[model(wb).id].healthy() == 3)
    deployments.scale(wb, model(wb), 1)
    await settle(mgr, lambda: len(deployments.replicas_of(wb, deployments.get(wb, dep))) == 1)
    assert len(fake.running()) == 1 and len(deployments.list_deployments(wb)) == 1


async def test_restart_replaces_replicas_one_by_one(wb):
    fake = FakeRuntime()
    mgr = manager(wb, fake)
    dep = deploy(wb, 1, replicas=2)
    await settle(mgr, lambda: status(wb, dep) == "deployed")
    old = set(fake.running())
    deployments.restart(wb, model(wb))
    pool = mgr.router.pools[model(wb).id]
    lowest = [2]

    def done() -> bool:
        lowest[0] = min(lowest[0], pool.healthy())
        return not deployments.get(wb, dep).restart_requested

    await settle(mgr, done)
    assert lowest[0] >= 1  # never without a ready replica
    current = {r.name for r in deployments.replicas_of(wb, deployments.get(wb, dep))}
    assert len(current) == 2 and not current & old and set(fake.running()) == current


async def test_garbage_collection_removes_replicas_nobody_wants(wb):
    fake = FakeRuntime()
    mgr = manager(wb, fake)
    dep = deploy(wb, 1)
    await settle(mgr, lambda: status(wb, dep) == "deployed")
    fake.start(ReplicaSpec("stray-1-9-aaaaa", 9, 1, "", "", "m.py", "f", "python3", {}))
    assert "stray-1-9-aaaaa" in fake.running()
    adoption.collect(mgr)
    assert fake.running() == [rows(wb, dep)[0].name]


async def test_a_replica_whose_handle_was_never_saved_is_collected(wb):
    fake = FakeRuntime(slow=True)
    first = manager(wb, fake)
    dep = deploy(wb, 1)
    await settle(first, lambda: len(fake.running()) == 1 and rows(wb, dep)[0].handle != "")
    die(first)
    with wb.store.session() as s:  # as if the controller died before writing it down
        row = s.get(Replica, rows(wb, dep)[0].id)
        row.handle = ""
        s.add(row)
        s.commit()
    fake.slow = False
    orphan = fake.running()
    second = restarted(wb, fake)
    assert fake.running() == []
    await settle(second, lambda: status(wb, dep) == "deployed")
    assert fake.running() and fake.running() != orphan


def test_the_deployment_table_keeps_one_rollout_per_model(wb):
    deploy(wb, 1)
    with pytest.raises(Exception, match="already in progress"):
        deploy(wb, 2)
    with wb.store.session() as s:
        assert len(list(s.exec(select(Deployment)))) == 1
