"""The runner's listeners: frames on a private Unix socket, frames on a challenged TCP
port, and plain HTTP on loopback for the benchmarks."""

from __future__ import annotations

import hmac
import os
import secrets
import socket
import socketserver
import threading
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
            if key is not None:
                proved = challenge(sock, key)
                server = self.server
                if isinstance(server, TcpFrameServer) and not server.passed(sock):
                    return  # as many served as it takes: this one ends
                if not proved:
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


class TcpFrameServer(socketserver.TCPServer):
    """Frames on a port other hosts can reach: every connection is challenged first.

    Threads are bounded: at most MAX_CHALLENGED connections are being challenged at once
    (each for CHALLENGE_TIMEOUT at most), MAX_CHALLENGED_PER_PEER from one address, so a
    flood from one host cannot take the slots the gateway's host needs; beyond, a new
    connection is closed at once, before a thread is made for it."""

    allow_reuse_address = True
    request_queue_size = 128
    MAX_CHALLENGED = 64
    MAX_CHALLENGED_PER_PEER = 8
    MAX_SERVED = 64  # connections past the challenge (the gateway keeps one, probes come and go)

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        super().__init__(address, handler)
        self._lock = threading.Lock()
        self._peers: dict[str, int] = {}  # connections being challenged, per address
        self._peer_of: dict[int, str] = {}  # id(request) -> its address, while challenged
        self._passed: set[int] = set()
        self.challenged = 0
        self.served = 0

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        peer = client_address[0] if isinstance(client_address, tuple) else "?"
        with self._lock:
            mine = self._peers.get(peer, 0)
            if self.challenged >= self.MAX_CHALLENGED or mine >= self.MAX_CHALLENGED_PER_PEER:
                self.shutdown_request(request)  # refused: no thread, no nonce
                return
            self.challenged += 1
            self._peers[peer] = mine + 1
            self._peer_of[id(request)] = peer
        threading.Thread(target=self._serve, args=(request, client_address), daemon=True).start()

    def passed(self, request: socket.socket) -> bool:
        """Called by the handler once the challenge is over: its slot is given back, and
        a slot among the served is taken (False: none is left; the connection ends)."""
        with self._lock:
            self._release(self._peer_of.pop(id(request), "?"))
            if self.served >= self.MAX_SERVED:
                return False
            self.served += 1
            self._passed.add(id(request))
            return True

    def _release(self, peer: str) -> None:
        self.challenged -= 1
        left = self._peers.get(peer, 1) - 1
        if left:
            self._peers[peer] = left
        else:
            self._peers.pop(peer, None)

    def _serve(self, request: socket.socket, client_address: object) -> None:
        try:
            self.RequestHandlerClass(request, client_address, self)  # type: ignore[arg-type]
        except Exception:
            pass  # a broken peer: its connection ends, the server goes on
        finally:
            self.shutdown_request(request)
            with self._lock:
                if id(request) in self._passed:
                    self._passed.discard(id(request))
                    self.served -= 1
                elif id(request) in self._peer_of:  # it never finished its challenge
                    self._release(self._peer_of.pop(id(request)))


def read_key(path: str) -> bytes:
    """The channel key (hex) from a file the runtime mounted; the model never gets it
    through the environment."""
    with open(path) as fh:
        key = bytes.fromhex(fh.read().strip())
    if len(key) < 16:
        raise SystemExit("the channel key is too short")
    return key
