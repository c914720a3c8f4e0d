"""The pool's hand-off rules, with a stand-in for the replica connection (pure logic;
tests/integration/test_gateway.py and tests/reliability run it against real replicas)."""

from __future__ import annotations

import asyncio

import pytest

from cdsw_tui.serving.pool import Pool, PoolClosed, PooledReplica


class Conn:
    """Records frames; ``answer()`` plays the replica answering the one in flight."""

    def __init__(self) -> None:
        self.ready = True
        self.sent: list[bytes] = []
        self.pending: asyncio.Future | None = None
        self.on_answer = None

    def send(self, payload: bytes, limit: int = 0) -> asyncio.Future:
        assert self.pending is None or self.pending.done(), "two frames in flight"
        self.sent.append(payload)
        self.pending = asyncio.get_running_loop().create_future()
        return self.pending

    def answer(self) -> None:
        assert self.pending is not None
        self.pending.set_result((200, "", b"ok", False))
        self.on_answer()

    def close(self) -> None:
        pass


def handle(name: str) -> PooledReplica:
    h = PooledReplica(name, f"unix:/nowhere/{name}", 1)
    h.conn = Conn()  # type: ignore[assignment]
    return h


async def test_an_answer_sends_the_next_waiting_call_before_any_task_runs():
    pool = Pool(1, 1)
    r = handle("r")
    pool.add(r)
    first = pool.try_acquire()
    assert first.handle is r and pool.try_acquire() is None
    lease_a = first.lease
    r.conn.send(b"A")
    waiters = [asyncio.ensure_future(pool.acquire(5, body, 0)) for body in (b"B", b"C")]
    await asyncio.sleep(0)
    r.conn.answer()  # inside the read callback, no task has run yet
    assert r.conn.sent == [b"A", b"B"]
    pool.release(r, lease_a)  # A's own release, after its answer freed r: a no-op
    assert r.busy and r.conn.sent == [b"A", b"B"]
    (got, lease_b, sent), waited = await waiters[0]
    assert got is r and sent is not None and waited and lease_b == lease_a + 1
    r.conn.answer()
    assert r.conn.sent == [b"A", b"B", b"C"]  # first come, first served
    (_, lease_c, _), _ = await waiters[1]
    pool.release(r, lease_b)  # B's task runs only now: its release must not free C's call
    assert r.busy and lease_c == lease_b + 1
    r.conn.answer()
    assert not r.busy and pool.inflight == 0 and pool.try_acquire().handle is r


async def test_a_waiter_that_times_out_leaves_the_replica_free():
    pool = Pool(1, 1)
    r = handle("r")
    pool.add(r)
    held = pool.try_acquire()
    with pytest.raises(TimeoutError):
        await pool.acquire(0.05, b"late", 0)
    assert pool.waiting == 0
    pool.release(r, held.lease)
    assert not r.busy and pool.try_acquire().handle is r  # not handed to the one who left


async def test_a_cancelled_waiter_handed_a_sent_call_frees_the_replica_on_its_answer():
    pool = Pool(1, 1)
    r = handle("r")
    pool.add(r)
    held = pool.try_acquire()
    waiter = asyncio.ensure_future(pool.acquire(5, b"B", 0))
    await asyncio.sleep(0)
    pool.release(r, held.lease)  # hands r to B and sends B's frame
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert r.busy and r.conn.sent == [b"B"]
    r.conn.answer()
    assert not r.busy and pool.inflight == 0


async def test_closing_wakes_every_waiter():
    pool = Pool(1, 1)
    waiters = [asyncio.ensure_future(pool.acquire(5, b"x", 0)) for _ in range(3)]
    await asyncio.sleep(0)
    pool.close()
    for w in waiters:
        with pytest.raises(PoolClosed):
            await w
    with pytest.raises(PoolClosed):
        await pool.acquire(5, b"x", 0)


async def test_a_replica_not_connected_is_handed_without_a_frame():
    pool = Pool(1, 1)
    r = handle("r")
    r.conn.ready = False
    waiter = asyncio.ensure_future(pool.acquire(5, b"B", 0))
    await asyncio.sleep(0)
    pool.add(r)
    (got, _, sent), waited = await waiter
    assert got is r and sent is None and r.conn.sent == []  # the caller connects and sends


async def test_a_removed_replica_is_not_handed_out():
    pool = Pool(1, 1)
    a, b = handle("a"), handle("b")
    pool.add(a)
    pool.add(b)
    pool.remove("a")
    assert pool.try_acquire().handle is b and pool.try_acquire() is None
