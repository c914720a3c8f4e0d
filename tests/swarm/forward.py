"""A TCP forwarder (standard library only), run on this machine and inside the worker
nodes of the multi-node test: ``python3 forward.py LISTEN_HOST LISTEN_PORT TO_HOST TO_PORT``.

Worker nodes pull from the registry at ``127.0.0.1:P`` (a loopback registry needs no
TLS), which inside a node is the node itself: there this forwards to this machine's
bridge address, and here from that address to the registry on loopback."""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        far_reader, far_writer = await asyncio.open_connection(sys.argv[3], int(sys.argv[4]))
    except OSError:
        writer.close()
        return
    await asyncio.gather(
        _pipe(reader, far_writer), _pipe(far_reader, writer), return_exceptions=True
    )


async def main() -> None:
    server = await asyncio.start_server(_handle, sys.argv[1], int(sys.argv[2]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
