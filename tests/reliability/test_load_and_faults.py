"""Load and faults against 127.0.0.1 only, bounded in count and time.

Figures are printed (run with -s) and copied into RELIABILITY.md."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from cdsw_tui.services import deployments, models
from tests.conftest import replica_pid
from tests.reliability.conftest import Cluster, running_replicas, wait_for_replicas

pytestmark = pytest.mark.slow


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


KINDS = ("valid", "invalid_json", "wrong_key", "oversize", "model_error", "no_request")
WEIGHTS = (70, 8, 8, 0.5, 10, 3.5)
EXPECTED = {
    "valid": (200, None),
    "invalid_json": (400, "request.invalid"),
    "wrong_key": (401, "auth.invalid_key"),
    "oversize": (413, "request.too_large"),
    "model_error": (500, "model.error"),
    "no_request": (400, "request.invalid"),
}


def body_for(kind: str, key: str, i: int) -> bytes:
    if kind == "valid":
        return json.dumps({"accessKey": key, "request": {"a": i, "b": 1}}).encode()
    if kind == "invalid_json":
        return b'{"accessKey": "' + key.encode() + b'", "request": {'
    if kind == "wrong_key":
        return json.dumps({"accessKey": "0" * 32, "request": {}}).encode()
    if kind == "oversize":
        return b'{"accessKey": "%s", "request": "%s"}' % (key.encode(), b"x" * (5 * 1024 * 1024))
    if kind == "model_error":
        return json.dumps({"accessKey": key, "request": {"boom": True}}).encode()
    return json.dumps({"accessKey": key}).encode()


async def run_load(
    url: str, key: str, total: int, clients: int
) -> tuple[Counter, list[str], float]:
    rng = random.Random(7)
    plan = rng.choices(KINDS, WEIGHTS, k=total)
    outcomes: Counter = Counter()
    wrong: list[str] = []
    queue = list(enumerate(plan))
    timeout = aiohttp.ClientTimeout(total=30)
    start = time.monotonic()
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=clients)
    ) as session:

        async def client() -> None:
            while queue:
                i, kind = queue.pop()
                status, code = 0, "none"
                try:
                    async with session.post(
                        url + "/model",
                        data=body_for(kind, key, i),
                        headers={"Content-Type": "application/json"},
                    ) as r:
                        status = r.status
                        payload = await r.json(content_type=None)
                        code = payload["error"]["code"] if not payload.get("success") else None
                        if kind == "valid" and payload.get("response") != {"sum": i + 1}:
                            wrong.append(f"{i}: wrong answer {payload}")
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    code = f"client:{type(exc).__name__}"
                outcomes[(kind, status, code)] += 1
                if (status, code) != EXPECTED[kind]:
                    wrong.append(f"{i} {kind}: got {status} {code}")

        await asyncio.gather(*(client() for _ in range(clients)))
    return outcomes, wrong, time.monotonic() - start


def test_20000_mixed_requests_from_50_clients(cluster: Cluster):
    pid = cluster.controller_pid()
    asyncio.run(run_load(cluster.url, cluster.model.access_key, 1000, 50))  # warm up
    before = rss_kb(pid)
    outcomes, wrong, seconds = asyncio.run(
        run_load(cluster.url, cluster.model.access_key, 20000, 50)
    )
    after = rss_kb(pid)
    answered = sum(outcomes.values())
    print(
        f"\nload: {answered} requests in {seconds:.1f} s ({answered / seconds:.0f}/s), "
        f"gateway RSS {before / 1024:.1f} -> {after / 1024:.1f} MB ({(after - before) / before:+.1%})"
    )
    for (kind, status, code), n in sorted(outcomes.items()):
        print(f"  {kind:<13} {status} {code}: {n}")
    assert answered == 20000
    assert wrong == [], wrong[:10]
    assert (after - before) / before < 0.10


def test_a_replica_killed_every_second_under_load(cluster: Cluster):
    wait_for_replicas(cluster, 4)
    stop = threading.Event()
    kills: list[tuple[str, int]] = []

    def killer() -> None:
        rng = random.Random(3)
        while not stop.wait(1.0):
            replicas = running_replicas(cluster)
            if replicas:
                victim = rng.choice(replicas)
                pid = replica_pid(victim)
                if any(pid == killed for _, killed in kills):
                    continue  # killed already; its row says running until the supervisor notices
                try:
                    os.killpg(pid, signal.SIGKILL)
                    kills.append((victim.name, pid))
                except (ProcessLookupError, TypeError):
                    pass

    async def load(seconds: float) -> Counter:
        outcomes: Counter = Counter()
        key = cluster.model.access_key
        end = time.monotonic() + seconds
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def client(n: int) -> None:
                i = 0
                while time.monotonic() < end:
                    i += 1
                    async with session.post(
                        cluster.url + "/model",
                        json={"accessKey": key, "request": {"a": i, "b": n, "s": 0.01}},
                    ) as r:
                        payload = await r.json(content_type=None)
                        outcomes[
                            (r.status, None if payload.get("success") else payload["error"]["code"])
                        ] += 1

            await asyncio.gather(*(client(n) for n in range(20)))
        return outcomes

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        outcomes = asyncio.run(load(8.0))
    finally:
        stop.set()
        thread.join()
    print(f"\nfaults: {len(kills)} replicas killed in 8 s; answers {dict(outcomes)}")
    failed = outcomes.get((502, "replica.failed"), 0)
    assert set(outcomes) <= {(200, None), (502, "replica.failed")}, outcomes
    assert failed <= len(kills)  # only the request in flight on a killed replica fails
    assert outcomes[(200, None)] > 10 * failed
    deadline = time.monotonic() + 30  # the supervisor restarts each killed replica...
    while sum(r.restarts for r in running_replicas(cluster)) < len(kills):
        if time.monotonic() > deadline:
            d = models.active_deployment(cluster.wb, cluster.model)
            rows = [
                (r.name, r.status, r.restarts, r.handle, r.reason)
                for r in deployments.replicas_of(cluster.wb, d)
            ]
            raise AssertionError(f"kills {kills}, replicas {rows}")
        time.sleep(0.1)
    wait_for_replicas(cluster, 4)  # ...and the count is back


def test_trickling_body_times_out_instead_of_hanging(cluster: Cluster):
    import socket

    with socket.create_connection(("127.0.0.1", cluster.port), timeout=20) as s:
        s.sendall(
            b"POST /model HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        s.sendall(b'{"accessKey"')
        start = time.monotonic()
        data = s.recv(4096)
        waited = time.monotonic() - start
    assert b"400" in data.split(b"\r\n")[0] and b"request.invalid" in data
    assert 4 <= waited < 10  # the request timeout (5 s), not forever


def test_locked_store_does_not_crash_the_gateway(cluster: Cluster):
    import sqlite3

    con = sqlite3.connect(cluster.home / "cdsw.db", timeout=1)
    con.execute("BEGIN EXCLUSIVE")
    try:
        import httpx

        key = cluster.model.access_key
        for i in range(20):
            r = httpx.post(
                cluster.url + "/model",
                json={"accessKey": key, "request": {"a": i, "b": 0}},
                timeout=10,
            )
            assert r.status_code == 200 and r.json()["response"] == {"sum": i}
            time.sleep(0.1)
    finally:
        con.rollback()
        con.close()
    assert cluster.controller_pid()  # still the same running controller
