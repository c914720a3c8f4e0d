"""One persistent connection to one replica, speaking the runner's frames.

A replica serves one call at a time, so a call is one write of a length-prefixed frame
and one answer frame back, read by an asyncio protocol (no stream reader, no HTTP
parser, no JSON parse: the status and error code are in the frame's head). The frame
layout is ``serving/frames.py``, shared with the runner.

Replicas are reached at an address their runtime gave: ``unix:/path`` (a socket only
the controller's user can open) or ``tcp://host:port#key`` (a port other hosts may
reach: the connection first answers the replica's challenge with the key, which the
address carries and nothing prints). A Unix socket is opened
without following a symlink in its last component and must be a socket: a container
can write in its socket's folder, and the gateway must never be sent elsewhere
(say, to the Docker engine's own socket) by a link planted there.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
from collections.abc import Callable
from typing import cast

from cdsw_tui.serving.frames import (
    ANSWER_HEAD,
    FLAG_CLOSE,
    KIND_CALL,
    KIND_HEALTH,
    NONCE_SIZE,
    REQUEST_HEAD,
    channel_proof,
)


class ReplicaConnectionError(Exception):
    """The replica closed or reset the connection: it died or was stopped."""


class OutOfFiles(Exception):
    """The gateway could not open a connection for want of files (EMFILE, ENFILE) or
    memory: nothing is known of the replica, which must not be taken for dead."""


_OUT_OF_FILES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class ResponseTooLarge(Exception):
    """The replica's answer is over the limit; it was not read (the connection is closed)."""

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


def open_unix(path: str) -> socket.socket:
    """A connected, non-blocking socket to ``path``, refusing links and non-sockets."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ConnectionRefusedError(f"{path} is not a socket")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)  # a full backlog fails at once instead of blocking the loop
        try:
            # through the descriptor: the very file checked above, and no path length limit
            sock.connect(f"/proc/self/fd/{fd}")
        except BaseException:
            sock.close()
            raise
    finally:
        os.close(fd)
    return sock


def parse_tcp(address: str) -> tuple[str, int, bytes]:
    """``tcp://host:port#key`` as (host, port, key); the key is required."""
    where, _, key = address[6:].partition("#")
    host, _, port = where.rpartition(":")
    if not key:
        raise ValueError("a TCP replica address needs its channel key")
    return host.strip("[]"), int(port), bytes.fromhex(key)


async def open_tcp(address: str) -> socket.socket:
    """A connected socket that has answered the replica's challenge."""
    host, port, key = parse_tcp(address)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, target = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, target)
        nonce = b""
        while len(nonce) < NONCE_SIZE:
            chunk = await loop.sock_recv(sock, NONCE_SIZE - len(nonce))
            if not chunk:
                raise ConnectionResetError("the replica closed the connection before its challenge")
            nonce += chunk
        await loop.sock_sendall(sock, channel_proof(key, nonce))
    except BaseException:
        sock.close()
        raise
    return sock


class _FrameProtocol(asyncio.Protocol):
    """Reads answer frames off the socket and hands each to the call waiting for it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.limit = 0
        self.buffer = bytearray()
        self.end = 0  # the answer's whole length, once its head is in
        self.lost: str | None = None
        self.on_answer: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream's (uvloop's transports are not asyncio.Transport subclasses)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self._fail("the replica sent bytes nobody asked for")
            return
        buffer = self.buffer
        if not buffer and self.end == 0 and len(data) >= _HEAD:
            # the common case: the whole answer in one read, sliced once
            status, flags, code_length, body_length = ANSWER_HEAD.unpack_from(data)
            end = _HEAD + code_length + body_length
            if len(data) == end and not (self.limit and body_length > self.limit):
                code = data[_HEAD : _HEAD + code_length].decode("ascii", "replace")
                self.waiter = None
                closing = bool(flags & FLAG_CLOSE)
                waiter.set_result((status, code, data[_HEAD + code_length :], closing))
                if not closing and self.on_answer is not None:
                    self.on_answer()
                return
        buffer += data
        if self.end == 0:
            if len(buffer) < _HEAD:
                return
            _, _, code_length, body_length = ANSWER_HEAD.unpack_from(buffer)
            if self.limit and body_length > self.limit:
                self.waiter = None
                waiter.set_exception(ResponseTooLarge(body_length))
                self.close()
                return
            self.end = _HEAD + code_length + body_length
        if len(buffer) < self.end:
            return
        if len(buffer) > self.end:
            self._fail("the replica answered more than it was asked")
            return
        status, flags, code_length, _ = ANSWER_HEAD.unpack_from(buffer)
        code = buffer[_HEAD : _HEAD + code_length].decode("ascii", "replace")
        with memoryview(buffer) as view:
            body = bytes(view[_HEAD + code_length :])
        buffer.clear()
        self.end = 0
        self.waiter = None
        closing = bool(flags & FLAG_CLOSE)
        waiter.set_result((status, code, body, closing))
        if not closing and self.on_answer is not None:
            self.on_answer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (
            "the replica closed the connection" if exc is None else f"{type(exc).__name__}: {exc}"
        )
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ReplicaConnectionError(self.lost))

    def _fail(self, why: str) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ReplicaConnectionError(why))
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


_HEAD = ANSWER_HEAD.size
Answer = tuple[int, str, bytes, bool]  # status, error code ("" on success), body, closing


class ReplicaConnection:
    """One persistent framed connection to one replica; one call at a time on it.

    ``on_answer`` is called as soon as an answer that keeps the connection open has
    been read, before the caller's task runs: the pool hands the replica on from there.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._protocol: _FrameProtocol | None = None
        self.on_answer: Callable[[], None] | None = None

    async def connect(self) -> _FrameProtocol:
        loop = asyncio.get_running_loop()
        address = self.address
        try:
            if address.startswith("unix:"):
                _, protocol = await loop.create_unix_connection(
                    _FrameProtocol, sock=open_unix(address[5:])
                )
            elif address.startswith("tcp://"):
                _, protocol = await loop.create_connection(
                    _FrameProtocol, sock=await open_tcp(address)
                )
            else:
                raise OSError(f"unknown replica address {address!r}")
        except OSError as exc:
            if exc.errno in _OUT_OF_FILES:
                raise OutOfFiles(exc.strerror or str(exc)) from None
            raise ReplicaConnectionError(f"cannot connect: {exc}") from None
        except ValueError as exc:
            raise ReplicaConnectionError(f"cannot connect: {exc}") from None
        protocol.on_answer = self.on_answer
        self._protocol = protocol
        return protocol

    @property
    def ready(self) -> bool:
        """Connected, so a frame can go out without waiting."""
        protocol = self._protocol
        return (
            protocol is not None
            and protocol.lost is None
            and protocol.transport is not None
            and not protocol.transport.is_closing()
        )

    def send(
        self, payload: bytes, limit: int = 0, kind: bytes = KIND_CALL
    ) -> asyncio.Future[Answer]:
        """Write one frame now (the connection must be ready); its answer comes in the
        future. An answer over ``limit`` bytes (0: no limit) fails with ResponseTooLarge
        without being read, and the connection is closed."""
        protocol = self._protocol
        assert protocol is not None and protocol.transport is not None
        waiter = asyncio.get_running_loop().create_future()
        protocol.waiter = waiter
        protocol.limit = limit
        protocol.transport.write(REQUEST_HEAD.pack(kind, len(payload)) + payload)
        return waiter

    async def answer(self, sent: asyncio.Future[Answer]) -> Answer:
        """The answer to a frame sent with ``send``."""
        try:
            answer = await sent
        except BaseException:
            self.close()  # failed, cancelled or timed out mid-call: the stream is out of step
            raise
        if answer[3]:
            self.close()
        return answer

    def settle(self, sent: asyncio.Future[Answer]) -> Answer:
        """The answer of a frame whose future is done (what it raised, raised)."""
        try:
            answer = sent.result()
        except BaseException:
            self.close()  # failed or timed out mid-call: the stream is out of step
            raise
        if answer[3]:
            self.close()
        return answer

    async def request(self, kind: bytes, payload: bytes = b"", limit: int = 0) -> Answer:
        if not self.ready:
            await self.connect()
        return await self.answer(self.send(payload, limit, kind))

    async def call(self, body: bytes, limit: int = 0) -> Answer:
        return await self.request(KIND_CALL, body, limit)

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.close()


async def health(address: str, timeout: float) -> bool:
    """True once the replica has loaded its model and answers."""
    conn = ReplicaConnection(address)
    try:
        async with asyncio.timeout(timeout):
            status, _, _, _ = await conn.request(KIND_HEALTH)
        return status == 200
    except (ReplicaConnectionError, TimeoutError):
        return False
    finally:
        conn.close()
