"""One persistent HTTP/1.1 connection to one replica, spoken by hand.

A replica serves one call at a time, so a full HTTP client (with pooling, redirects,
cookies) is only overhead here; this writes the request in one send and reads exactly
Content-Length bytes back.

Replicas are reached at an address their runtime gave: ``unix:/path`` (a socket only
the controller's user can open) or ``tcp://host:port``. A Unix socket is opened
without following a symlink in its last component and must be a socket: a container
can write in its socket's folder, and the gateway must never be sent elsewhere
(say, to the Docker engine's own socket) by a link planted there.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat


class ReplicaConnectionError(Exception):
    """The replica closed or reset the connection: it died or was stopped."""


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


async def open_stream(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if address.startswith("unix:"):
        return await asyncio.open_unix_connection(sock=open_unix(address[5:]))
    if address.startswith("tcp://"):
        host, _, port = address[6:].rpartition(":")
        return await asyncio.open_connection(host, int(port))
    raise OSError(f"unknown replica address {address!r}")


class ReplicaConnection:
    def __init__(self, address: str) -> None:
        self.address = address
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await open_stream(self.address)
        except (OSError, ValueError) as exc:
            raise ReplicaConnectionError(f"cannot connect: {exc}") from None

    async def request(
        self, method: str, path: str, body: bytes = b"", limit: int | None = None
    ) -> tuple[int, bytes, bool]:
        """(status, body, closing): closing means the replica said it ends after this.
        An answer over ``limit`` bytes raises ResponseTooLarge without being read."""
        if self._writer is None or self._writer.is_closing():
            await self._connect()
        assert self._reader is not None and self._writer is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: replica\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            self._writer.write(head + body)
            status_line = await self._reader.readline()
            if not status_line:
                raise ReplicaConnectionError("the replica closed the connection")
            status = int(status_line.split(b" ", 2)[1])
            length = 0
            closing = False
            while True:
                line = await self._reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection" and value.strip().lower() == b"close":
                    closing = True
            if limit is not None and length > limit:
                self.close()
                raise ResponseTooLarge(length)
            data = await self._reader.readexactly(length) if length else b""
            if closing:
                self.close()
            return status, data, closing
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            OSError,
            ValueError,
            IndexError,
        ) as exc:
            self.close()
            raise ReplicaConnectionError(f"{type(exc).__name__}: {exc}") from None
        except BaseException:
            self.close()  # cancelled or timed out mid-request: the stream is out of step
            raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def health(address: str, timeout: float) -> bool:
    """True once the replica has loaded its model and answers."""
    conn = ReplicaConnection(address)
    try:
        async with asyncio.timeout(timeout):
            status, _, _ = await conn.request("GET", "/health")
        return status == 200
    except (ReplicaConnectionError, TimeoutError):
        return False
    finally:
        conn.close()
