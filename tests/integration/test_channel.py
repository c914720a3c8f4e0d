"""The challenged TCP channel of replicas that other hosts can reach (the swarm runtime):
a real runner on a real port, dialled with and without its key."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdsw_tui.resources import RUNNER
from cdsw_tui.serving.connection import ReplicaConnection, ReplicaConnectionError, health
from cdsw_tui.serving.frames import NONCE_SIZE, PROOF_SIZE, channel_proof
from tests.conftest import free_port


@pytest.fixture
def runner(tmp_path: Path):
    (tmp_path / "m.py").write_text("def add(args):\n    return args['a'] + args['b']\n")
    key = secrets.token_bytes(32)
    (tmp_path / "key").write_text(key.hex())
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), "--dir", str(tmp_path), "--file", "m.py"]
        + ["--function", "add", "--name", "r-1", "--listen", str(port)]
        + ["--key-file", str(tmp_path / "key")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"tcp://127.0.0.1:{port}#{key.hex()}"
    deadline = time.monotonic() + 20
    while not asyncio.run(health(address, 1.0)):
        assert time.monotonic() < deadline, "the runner did not come up"
        time.sleep(0.05)
    yield port, key, proc.pid
    proc.kill()
    proc.wait()


def test_the_gateway_with_the_key_calls_the_replica(runner):
    port, key, _ = runner

    async def two_calls():
        conn = ReplicaConnection(f"tcp://127.0.0.1:{port}#{key.hex()}")
        try:
            first = await conn.call(json.dumps({"request": {"a": 3, "b": 5}}).encode())
            second = await conn.call(json.dumps({"request": {"a": 1, "b": 1}}).encode())
        finally:
            conn.close()
        return first, second

    first, second = asyncio.run(two_calls())
    assert first[0] == 200 and json.loads(first[2])["response"] == 8
    assert json.loads(second[2])["response"] == 2  # the same connection, no second challenge


def test_a_caller_without_the_key_gets_no_answer(runner):
    port, _, _ = runner
    wrong = secrets.token_bytes(32)
    assert not asyncio.run(health(f"tcp://127.0.0.1:{port}#{wrong.hex()}", 2.0))

    async def call_with_wrong_key():
        conn = ReplicaConnection(f"tcp://127.0.0.1:{port}#{wrong.hex()}")
        try:
            return await conn.call(b'{"request": {"a": 1, "b": 2}}')
        finally:
            conn.close()

    with pytest.raises(ReplicaConnectionError):
        asyncio.run(call_with_wrong_key())
    # a raw caller that skips the challenge and sends a frame straight away is dropped
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert len(sock.recv(NONCE_SIZE)) == NONCE_SIZE
        sock.sendall(b"C\x00\x00\x00\x1d" + b'{"request": {"a": 1, "b": 2}}' + b"\0" * 3)
        assert sock.recv(1024) == b""  # closed, nothing answered


def test_a_proof_seen_on_the_wire_cannot_be_replayed(runner):
    port, key, _ = runner
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        seen = channel_proof(key, sock.recv(NONCE_SIZE))
        sock.sendall(seen)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.recv(NONCE_SIZE)  # a new nonce: the old proof no longer fits
        sock.sendall(seen)
        sock.sendall(b"H\x00\x00\x00\x00")
        assert sock.recv(1024) == b""
    assert len(seen) == PROOF_SIZE


def test_a_tcp_address_without_a_key_is_refused():
    async def dial():
        conn = ReplicaConnection("tcp://127.0.0.1:9")
        try:
            await conn.call(b"{}")
        finally:
            conn.close()

    with pytest.raises(ReplicaConnectionError):
        asyncio.run(dial())


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_a_flood_of_unanswered_challenges_is_bounded(runner):
    """300 connections from 127.0.0.2 that never answer the challenge (before: a thread
    each, 3,624 at the issue's peak, and legitimate callers dropped inside the pids
    limit): at most 8 of them are challenged at once, the rest closed at once; each is
    cut after the 2 s challenge; the key's holder on 127.0.0.1 is answered throughout."""
    port, key, pid = runner
    base = threads(pid)
    flood = []
    for _ in range(300):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        flood.append(s)
    try:
        time.sleep(0.3)
        assert threads(pid) <= base + 8 + 2, threads(pid)
        address = f"tcp://127.0.0.1:{port}#{key.hex()}"
        assert all(asyncio.run(health(address, 2.0)) for _ in range(20))
        began = time.monotonic()
        nonces = 0
        for s in flood:  # each was refused, or challenged and cut once its 2 s were up
            try:
                nonces += len(s.recv(NONCE_SIZE)) == NONCE_SIZE
                assert s.recv(1024) == b""
            except ConnectionResetError:
                pass
        assert 0 < nonces <= 8 and time.monotonic() - began < 2 + 1.5
        # a handler's thread ends just after it closes its connection: give it a moment
        deadline = time.monotonic() + 2
        while threads(pid) > base + 2:
            assert time.monotonic() < deadline, threads(pid)
            time.sleep(0.05)
    finally:
        for s in flood:
            s.close()
