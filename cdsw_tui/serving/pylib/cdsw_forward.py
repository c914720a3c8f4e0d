"""Inside a container: the gateway at 127.0.0.1 (and ``modelservice.$CDSW_DOMAIN``, which
the container's hosts file names as 127.0.0.1), on the gateway's own port, so the URLs
model code and AMP scripts build (``CDSW_API_URL``, ``http://modelservice.<domain>/model``)
reach it with no network at all: each connection is piped, byte for byte (TLS too), to the
gateway's Unix socket, mounted read-only into the container. The gateway still checks
every key. Standard library only, Python 3.9.

    python -m cdsw_forward [--background] [SOCKET [PORT]]
    # default: $CDSW_TUI_GATEWAY_SOCKET, and the port of $CDSW_API_URL
    python -m cdsw_forward --background --expose PORT APP_PORT
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from urllib.parse import urlsplit

CHUNK = 65536


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def _upstream(target: str) -> socket.socket:
    """A Unix socket's path, or ``HOST:PORT``."""
    if target.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(target)
    else:
        host, _, port = target.rpartition(":")
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _serve(client: socket.socket, path: str) -> None:
    try:
        upstream = _upstream(path)
    except OSError:
        client.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def listen(port: int, host: str = "127.0.0.1") -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    return listener


def serve(listener: socket.socket, path: str) -> None:
    """Pipe each connection of ``listener`` to ``path``, in daemon threads."""

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_serve, args=(client, path), daemon=True).start()

    threading.Thread(target=accept, daemon=True, name="cdsw-forward").start()


def start(path: str, port: int) -> socket.socket:
    listener = listen(port)
    serve(listener, path)
    return listener


def from_environment() -> socket.socket | None:
    """The forwarder, when this process was given the gateway's socket; None otherwise
    (or when something else has the port already: the first one forwards)."""
    path = os.environ.get("CDSW_TUI_GATEWAY_SOCKET", "")
    url = os.environ.get("CDSW_API_URL", "")
    if not path or not url:
        return None
    try:
        return start(path, port_of(url))
    except OSError:
        return None


def main() -> None:
    """``--background``: return once it listens (the shell that runs a script then goes
    on knowing the gateway answers), forwarding from a child process. ``--expose PORT
    APP_PORT``: the other way, an application's 127.0.0.1:APP_PORT on 0.0.0.0:PORT of the
    container, which Docker publishes on the host's 127.0.0.1."""
    args = [a for a in sys.argv[1:] if a not in ("--background", "--expose")]
    host = "127.0.0.1"
    if "--expose" in sys.argv:
        host, port, path = "0.0.0.0", int(args[0]), f"127.0.0.1:{int(args[1])}"
    else:
        path = args[0] if args else os.environ.get("CDSW_TUI_GATEWAY_SOCKET", "")
        port = int(args[1]) if len(args) > 1 else port_of(os.environ.get("CDSW_API_URL", ""))
    try:
        listener = listen(port, host)
    except OSError as exc:
        sys.exit(f"cdsw_forward: cannot listen on {host}:{port}: {exc.strerror or exc}")
    if "--background" in sys.argv and os.fork():
        os._exit(0)  # it listens already; the child serves (threads start after the fork)
    serve(listener, path)
    threading.Event().wait()  # until the container ends
    listener.close()


if __name__ == "__main__":
    main()
