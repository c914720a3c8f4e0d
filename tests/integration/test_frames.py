"""The replica channel: the runner's frames on its Unix socket, spoken by the gateway's
connection, against a real runner process."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdsw_tui.resources import RUNNER
from cdsw_tui.serving.connection import ReplicaConnection, ResponseTooLarge, health
from cdsw_tui.serving.frames import ANSWER_HEAD, KIND_CALL, REQUEST_HEAD

MODEL = """\
def add(args):
    return args["a"] + args["b"]


def big(args):
    return "x" * args["n"]


def boom(args):
    raise ValueError("no")
"""


@pytest.fixture
def runner(tmp_path: Path):
    (tmp_path / "model.py").write_text(MODEL)
    sock = tmp_path / "r.sock"
    procs = []

    def start(function: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, str(RUNNER), "--dir", str(tmp_path), "--file", "model.py",
             "--function", function, "--name", f"t-{function}", "--socket", str(sock)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(proc)
        address = f"unix:{sock}"
        deadline = time.monotonic() + 20
        while not asyncio.run(health(address, 1)):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        return address

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def body(request: object) -> bytes:
    return json.dumps({"accessKey": "k", "request": request}).encode()


def test_a_call_answers_status_code_and_body_in_one_frame(runner):
    address = runner("add")

    async def go():
        conn = ReplicaConnection(address)
        try:
            answers = [await conn.call(body({"a": i, "b": 1})) for i in range(3)]
            bad = await conn.call(b"{not json")
        finally:
            conn.close()
        return answers, bad

    answers, bad = asyncio.run(go())
    assert [json.loads(b)["response"] for _, _, b, _ in answers] == [1, 2, 3]
    assert {(s, c, closing) for s, c, _, closing in answers} == {(200, "", False)}
    assert bad[:2] == (400, "request.invalid") and json.loads(bad[2])["success"] is False


def test_the_error_code_travels_in_the_frame_head(runner):
    address = runner("boom")

    async def go():
        conn = ReplicaConnection(address)
        try:
            return await conn.call(body({}))
        finally:
            conn.close()

    status, code, data, _ = asyncio.run(go())
    assert (status, code) == (500, "model.error")
    assert json.loads(data)["error"]["message"] == "ValueError: no"


def test_what_is_not_a_frame_is_dropped_and_the_replica_serves_on(runner, tmp_path: Path):
    runner("add")
    for junk in (
        b"POST /call HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        REQUEST_HEAD.pack(b"Z", 2) + b"{}",
        REQUEST_HEAD.pack(KIND_CALL, 2**32 - 1),
    ):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(tmp_path / "r.sock"))
            s.sendall(junk)
            assert s.recv(100) == b""  # closed without an answer
    with socket.socket(socket.AF_UNIX) as s:  # a good frame, byte by byte
        s.settimeout(5)
        s.connect(str(tmp_path / "r.sock"))
        frame = REQUEST_HEAD.pack(KIND_CALL, len(body({"a": 2, "b": 2}))) + body({"a": 2, "b": 2})
        for i in range(len(frame)):
            s.send(frame[i : i + 1])
        head = s.recv(ANSWER_HEAD.size, socket.MSG_WAITALL)
        status, flags, code_length, length = ANSWER_HEAD.unpack(head)
        assert (status, flags, code_length) == (200, 0, 0)
        assert json.loads(s.recv(length, socket.MSG_WAITALL))["response"] == 4


def test_an_answer_over_the_limit_is_not_read(runner):
    address = runner("big")

    async def go():
        conn = ReplicaConnection(address)
        try:
            small = await conn.call(body({"n": 10}), limit=1000)
            with pytest.raises(ResponseTooLarge):
                await conn.call(body({"n": 5_000_000}), limit=1000)
            large = await conn.call(body({"n": 3_000_000}))  # a new connection, read whole
        finally:
            conn.close()
        return small, large

    small, large = asyncio.run(go())
    assert json.loads(small[2])["response"] == "x" * 10
    assert len(json.loads(large[2])["response"]) == 3_000_000
