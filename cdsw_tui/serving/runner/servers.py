"""The runner's listeners: frames on a private Unix socket, frames on a challenged TCP
port, and plain HTTP on loopback for the benchmarks."""

from __future__ import annotations

import hmac
import os
import secrets
import socket
import socketserver
from http.server import BaseHTTPRequestHandler

from cdsw_tui.serving.frames import (
    ANSWER_HEAD,
    CHALLENGE_TIMEOUT,
    FLAG_CLOSE,
    KIND_CALL,
    KIND_HEALTH,
    MAX_FRAME,
    NONCE_SIZE,
    PROOF_SIZE,
    REQUEST_HEAD,
    channel_proof,
)
from cdsw_tui.serving.runner.replica import Answer, Replica, error_body


def make_http_handler(replica: Replica) -> type[BaseHTTPRequestHandler]:
    """Plain HTTP/1.1 on a loopback port: the benchmarks' direct baseline."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        server_version = "cdsw-replica"
        sys_version = ""

        def log_message(self, format: str, *args: object) -> None:
            pass  # the gateway logs requests; the replica log is the model's own output

        def _send(self, answer: Answer) -> None:
            status, _, body, close = answer
            head = (
                f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                + ("Connection: close\r\n" if close else "")
                + "\r\n"
            ).encode()
            self.wfile.write(head + body)  # one send: no Nagle wait between head and body
            if close:
                self.wfile.flush()
                replica.ended(answer)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(replica.health())
            else:
                self._send(
                    (404, "", error_body(replica.name, "request.invalid", "unknown path"), False)
                )

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._send(replica.call(self.rfile.read(length)))

    return Handler


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def challenge(sock: socket.socket, key: bytes) -> bool:
    """A TCP caller proves it holds the key before any frame is read."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    sock.settimeout(CHALLENGE_TIMEOUT)
    try:
        sock.sendall(nonce)
        proof = _read_exactly(sock, PROOF_SIZE)
    except OSError:
        return False
    sock.settimeout(None)
    return hmac.compare_digest(proof, channel_proof(key, nonce))


def make_frame_handler(
    replica: Replica, key: bytes | None = None
) -> type[socketserver.BaseRequestHandler]:
    """Frames on the private Unix socket, or on a TCP port after the key's challenge:
    what the gateway and the controller speak."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock = self.request
            if key is not None and not challenge(sock, key):
                return  # no frame is read from a caller without the key
            if key is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rfile = sock.makefile("rb")
            head_size = REQUEST_HEAD.size
            try:
                while True:
                    head = rfile.read(head_size)
                    if len(head) < head_size:
                        return
                    kind, length = REQUEST_HEAD.unpack(head)
                    if length > MAX_FRAME or kind not in (KIND_CALL, KIND_HEALTH):
                        return  # not a frame of ours: drop the connection
                    payload = rfile.read(length)
                    if len(payload) < length:
                        return
                    answer = replica.call(payload) if kind == KIND_CALL else replica.health()
                    status, code, body, close = answer
                    coded = code.encode()
                    flags = FLAG_CLOSE if close else 0
                    sock.sendall(
                        ANSWER_HEAD.pack(status, flags, len(coded), len(body)) + coded + body
                    )
                    if close:
                        replica.ended(answer)
            except OSError:
                return  # the peer went away mid-frame
            finally:
                rfile.close()

    return Handler


class UnixFrameServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """One thread per connection: the gateway keeps one, probes open their own."""

    daemon_threads = True

    def __init__(self, path: str, handler: type, mode: int) -> None:
        self.mode = mode
        super().__init__(path, handler)

    def server_bind(self) -> None:
        # bind by a relative name: a socket path holds at most 107 bytes, the home may be deep
        folder, base = os.path.split(str(self.server_address))
        here = os.getcwd()
        os.chdir(folder or ".")
        try:
            try:
                os.unlink(base)
            except FileNotFoundError:
                pass
            old = os.umask(0o777 & ~self.mode)
            try:
                self.socket.bind(base)
            finally:
                os.umask(old)
        finally:
            os.chdir(here)


class TcpFrameServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Frames on a port other hosts can reach: every connection is challenged first."""

    daemon_threads = True
    allow_reuse_address = True


def read_key(path: str) -> bytes:
    """The channel key (hex) from a file the runtime mounted; the model never gets it
    through the environment."""
    with open(path) as fh:
        key = bytes.fromhex(fh.read().strip())
    if len(key) < 16:
        raise SystemExit("the channel key is too short")
    return key
