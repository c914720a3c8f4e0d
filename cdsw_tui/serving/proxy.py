"""The way from the front to the gateway's aiohttp application, for every request but a
call: the request re-framed (a clean head, its whole body, a length, ``Connection:
close``) over a socket pair made for it, and the answer read whole."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

MAX_ANSWER = 64 * 1024 * 1024
PEER = b"x-cdsw-peer"  # the caller's address, added by the front (controller/apps_proxy.py)
# not passed on: the front answers for the connection and has decoded the body
HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"content-encoding",
        b"te",
        b"upgrade",
    )
)


async def through(
    app: Callable[[], asyncio.Protocol],
    method: bytes,
    url: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> bytes:
    """The application's whole answer to this request (head and body)."""
    loop = asyncio.get_running_loop()
    mine, theirs = socket.socketpair()
    try:
        mine.setblocking(False)
        await loop.connect_accepted_socket(app, theirs)
    except BaseException:
        mine.close()
        theirs.close()
        raise
    out = [method + b" " + url + b" HTTP/1.1"]
    out += [n + b": " + v for n, v in headers if n.lower() not in HOP]
    out += [b"Content-Length: %d" % len(body), b"Connection: close", b"", body]
    try:
        await loop.sock_sendall(mine, b"\r\n".join(out))
        answer = bytearray()
        while chunk := await loop.sock_recv(mine, 65536):
            answer += chunk
            if len(answer) > MAX_ANSWER:
                raise OSError("the answer is too large")
    finally:
        mine.close()
    return bytes(answer)


def relayed(answer: bytes, close: bool, extra: bytes = b"") -> bytes:
    """The application's answer with the front's own connection header (and ``extra``
    header lines, each ending in CRLF)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = [
        line
        for line in head.split(b"\r\n")
        if line.partition(b":")[0].strip().lower() not in (b"connection", b"keep-alive")
    ]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n" + body
