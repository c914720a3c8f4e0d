"""One persistent HTTP/1.1 connection to one replica, spoken by hand.

A replica serves one request at a time on one connection, so a full HTTP client (with
pooling, redirects, cookies) is only overhead here; this writes the request in one
send and reads exactly Content-Length bytes back.
"""

from __future__ import annotations

import asyncio


class ReplicaConnectionError(Exception):
    """The replica closed or reset the connection: it died or was stopped."""


class ReplicaConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise ReplicaConnectionError(f"cannot connect: {exc}") from None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
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
            while True:
                line = await self._reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            data = await self._reader.readexactly(length) if length else b""
            return status, data
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


async def health(host: str, port: int, timeout: float) -> bool:
    conn = ReplicaConnection(host, port)
    try:
        status, _ = await asyncio.wait_for(conn.request("GET", "/health"), timeout)
        return status == 200
    except (ReplicaConnectionError, TimeoutError):
        return False
    finally:
        conn.close()
