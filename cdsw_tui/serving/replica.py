"""The replica runner: serves one model function, one call at a time.

Standard library only, so it runs inside any engine image or virtual environment:

    python replica.py --dir BUILD_DIR --file F --function FN --name REPLICA
                      (--socket PATH | --listen PORT --key-file K | --port N [--port-file P])
                      [--memory-mb N]

On its Unix socket (``--socket``), which only the gateway can reach, it speaks frames
(below). On a TCP port open to other hosts (``--listen``, for a runtime whose replicas
live elsewhere) it speaks the same frames after a challenge: it sends ``NONCE_SIZE``
random bytes and drops the connection unless the next ``PROOF_SIZE`` bytes are
``channel_proof(key, nonce)``, so only a holder of the replica's key (the gateway) can
call it, and a proof seen on the wire cannot be replayed. On a loopback TCP port
(``--port``, a benchmark's direct baseline) it speaks plain HTTP/1.1 (``POST /call``,
``GET /health``). Either way a call carries the
gateway's body (``{"accessKey": ..., "request": ...}``) and is answered in SPEC's JSON
with this replica's name as ``ReplicaID``. Calls run one at a time, while a health
probe answers on its own connection at any moment, so a held connection cannot starve
the controller's probe.

Frames: a request is ``REQUEST_HEAD`` (kind, payload length) then the payload, the
caller's raw body; an answer is ``ANSWER_HEAD`` (HTTP status, flags, error code length,
body length), the error code (ASCII, empty on success) and the body. The gateway thus
needs neither an HTTP parser nor a JSON parse to learn how a call ended, and the
replica needs no header parsing at all. A connection that sends anything else is
dropped.

Output leaves through the process's own stdout, which the runtime captures (a file of
the controller's, or ``docker logs``): every line written on fd 1 or 2, by Python or by
C code, becomes ``<UTC time> <stream> <text>``. Streams other than stdout and stderr
carry the runner's own records (``metric``, ``event``), which the controller files
elsewhere. The exit statuses and stream names below are the contract with the
controller, which imports them from here.
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import hashlib
import hmac
import importlib.util
import json
import os
import secrets
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXIT_IMPORT_FAILED = 3
EXIT_OUT_OF_MEMORY = 4
STREAM_METRIC = "metric"  # a cdsw.track_metric record (JSON)
STREAM_EVENT = "event"  # the runner's own verdict (JSON), e.g. why the model did not load
EVENT_LOAD_FAILED = "load_failed"
EVENT_OUT_OF_MEMORY = "out_of_memory"
STAMP_LENGTH = len("2024-01-01T00:00:00.000Z")
MAX_LINE = 64 * 1024  # output without a newline is cut into lines of this size
PR_SET_CHILD_SUBREAPER = 36
REQUEST_HEAD = struct.Struct(">cI")  # kind, payload length
ANSWER_HEAD = struct.Struct(">HBBI")  # status, flags, error code length, body length
KIND_CALL = b"C"
KIND_HEALTH = b"H"
FLAG_CLOSE = 1  # the replica ends after this answer (it ran out of memory)
MAX_FRAME = 1 << 31  # a payload length past this is not a frame of ours
NONCE_SIZE = 16
PROOF_SIZE = 32
CHALLENGE_TIMEOUT = 5.0  # seconds a TCP caller has to prove it holds the key


def channel_proof(key: bytes, nonce: bytes) -> bytes:
    """What a caller sends back for ``nonce``: HMAC-SHA256 under the replica's key."""
    return hmac.new(key, b"cdsw-channel " + nonce, hashlib.sha256).digest()


def stamp() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class Output:
    """Writes stamped lines to the runtime's capture (the original fd 1).

    A full disk must not stop the model: lines that cannot be written are counted and
    dropped (the pipes keep draining, so a print never blocks), and a note says so once
    writing works again.
    """

    def __init__(self) -> None:
        self.fd = os.dup(1)
        os.set_inheritable(self.fd, False)
        self.lock = threading.Lock()
        self.dropped = 0
        self.why = ""
        self.pumps: list[threading.Thread] = []

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def write(self, data: bytes) -> None:
        with self.lock:
            try:
                # shared: the reader that empties a spool file takes it exclusively
                fcntl.flock(self.fd, fcntl.LOCK_SH)
            except OSError:
                pass  # a pipe (docker logs): nothing to share
            try:
                if self.dropped:
                    note = f"{stamp()} stderr [cdsw-tui] {self.dropped} log lines dropped: {self.why}\n"
                    self._write_all(note.encode())
                    self.dropped = 0
                self._write_all(data)
            except OSError as exc:
                self.dropped += max(1, data.count(b"\n"))
                self.why = exc.strerror or str(exc)
            finally:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                except OSError:
                    pass

    def record(self, stream: str, payload: object) -> None:
        self.write(f"{stamp()} {stream} {json.dumps(payload, default=str)}\n".encode())

    def capture(self) -> None:
        """Send fd 1 and 2 through pipes that stamp each line with its time and stream."""

        def pump(read_fd: int, stream: str) -> None:
            pending = b""
            with os.fdopen(read_fd, "rb", buffering=0) as pipe:
                while True:
                    chunk = pipe.read(65536)
                    if not chunk:
                        break
                    pending += chunk  # at most MAX_LINE before: linear, bounded
                    *lines, pending = pending.split(b"\n")
                    while len(pending) >= MAX_LINE:
                        lines.append(pending[:MAX_LINE])
                        pending = pending[MAX_LINE:]
                    if lines:
                        head = f"{stamp()} {stream} ".encode()
                        self.write(b"".join(head + line + b"\n" for line in lines))
            if pending:
                self.write(f"{stamp()} {stream} ".encode() + pending + b"\n")

        for fd, stream in ((1, "stdout"), (2, "stderr")):
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, fd)
            os.close(write_fd)
            pumping = threading.Thread(target=pump, args=(read_fd, stream), daemon=True)
            pumping.start()
            self.pumps.append(pumping)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        atexit.register(self.finish)  # an uncaught error's traceback reaches the log too

    def finish(self) -> None:
        """Everything written so far into the log, before the process ends."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(null, fd)  # our end of the pipes closes: the pumps read to the end
        os.close(null)
        for pumping in self.pumps:
            pumping.join(timeout=1)


def become_subreaper() -> None:
    """Orphans of the model's processes (daemons, setsid children) stay below us, so a
    stop finds every one of them."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


PYLIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pylib")


def install_cdsw_module(output: Output | None) -> None:
    """``import cdsw`` and ``import cml`` as real CDSW/CML model scripts do (pylib/, beside
    this file in every runtime): what a call tracks leaves as one ``metric`` record."""
    if PYLIB not in sys.path:
        sys.path.insert(0, PYLIB)
    import cdsw

    replica = os.environ.get("CDSW_REPLICA_ID", "")

    def sink(record: dict) -> None:
        if output is not None:
            output.record(STREAM_METRIC, dict(record, replica=replica))

    cdsw._sink = sink


def load_function(directory: str, file: str, function: str):
    path = os.path.join(directory, file)
    # the project root and the model file's folder (first), as CDSW runs a model
    for folder in (directory, os.path.dirname(path)):
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("__cdsw_model__", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["__cdsw_model__"] = module
    spec.loader.exec_module(module)
    fn = getattr(module, function, None)
    if not callable(fn):
        raise AttributeError(f"{file} has no function {function!r}")
    return fn


class InvalidResponse(Exception):
    """The function's result cannot be encoded as JSON."""


class RawJSON(str):
    """A result that is JSON text already (R encoded it): written as it is."""


class RError(Exception):
    """An error raised by R code; its message is R's own."""


OK_PREFIX = b'{"ok": true, "result": '


def load_r_function(directory: str, file: str, function: str):
    """Start Rscript with replica.R; requests go as JSON lines on its stdin, answers come
    back on a pipe of their own so the model's prints reach the log untouched."""
    import shutil
    import subprocess

    rscript = shutil.which("Rscript")
    if rscript is None:
        raise RuntimeError(
            "R is not installed here: Rscript was not found on PATH "
            "(apt-get install r-base-core r-cran-jsonlite, or use an engine made with 'engine build --r')"
        )
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "replica.R")
    answer_read, answer_write = os.pipe()
    proc = subprocess.Popen(
        [rscript, "--vanilla", script, file, function, str(answer_write)],
        cwd=directory,
        stdin=subprocess.PIPE,
        pass_fds=(answer_write,),
    )
    os.close(answer_write)
    answers = os.fdopen(answer_read, "rb")
    ready = answers.readline()
    if not ready:
        raise RuntimeError(f"R stopped while loading {file} (status {proc.wait()})")
    status = json.loads(ready)
    if not status.get("ready"):
        raise RuntimeError(f"R could not load {file}: {status.get('error')}")
    assert proc.stdin is not None

    def call(request: object) -> object:
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
            line = answers.readline()
        except BrokenPipeError:
            line = b""
        if not line:
            print(
                "R stopped while handling a request; the replica ends", file=sys.stderr, flush=True
            )
            time.sleep(0.2)
            os._exit(1)
        if line.startswith(OK_PREFIX):
            return RawJSON(line[len(OK_PREFIX) :].rstrip().removesuffix(b"}").decode())
        reply = json.loads(line)
        if reply.get("code") == "model.invalid_response":
            raise InvalidResponse(reply.get("error", ""))
        raise RError(reply.get("error", "R raised an error"))

    return call


def error_body(name: str, code: str, message: str) -> bytes:
    return json.dumps(
        {"success": False, "error": {"code": code, "message": message}, "ReplicaID": name}
    ).encode()


Answer = tuple[int, str, bytes, bool]  # status, error code ("" on success), body, close


class Replica:
    """The model function, called by one request at a time."""

    def __init__(self, name: str, output: Output | None, memory_mb: int) -> None:
        self.name = name
        self.quoted = json.dumps(name)
        self.output = output
        self.memory_mb = memory_mb
        self.fn = None
        self.lock = threading.Lock()

    def call(self, raw: bytes) -> Answer:
        """(status, error code, body, close): close means the replica ends after this."""
        name = self.name
        if self.fn is None:
            return (
                503,
                "model.not_deployed",
                error_body(name, "model.not_deployed", "still loading"),
                False,
            )
        try:
            body = json.loads(raw)
            request = body["request"] if isinstance(body, dict) and "request" in body else body
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return self._failed(400, "request.invalid", f"the body is not JSON: {exc}")
        try:
            with self.lock:
                result = self.fn(request)
        except MemoryError:
            return self._out_of_memory()
        except InvalidResponse as exc:
            return self._failed(500, "model.invalid_response", str(exc)[:2000])
        except Exception as exc:  # the model's own failure: report it, keep serving
            traceback.print_exc()
            sys.stderr.flush()
            return self._failed(500, "model.error", f"{type(exc).__name__}: {exc}"[:2000])
        if isinstance(result, RawJSON):
            payload = f'{{"success": true, "response": {result}, "ReplicaID": {self.quoted}}}'
            return 200, "", payload.encode(), False
        try:
            payload = json.dumps(
                {"success": True, "response": result, "ReplicaID": name}, allow_nan=False
            )
        except MemoryError:
            return self._out_of_memory()
        except (TypeError, ValueError, RecursionError) as exc:
            message = f"the function returned something that is not JSON: {exc}"
            return self._failed(500, "model.invalid_response", message)
        return 200, "", payload.encode(), False

    def health(self) -> Answer:
        ready = self.fn is not None
        body = {"status": "ready" if ready else "loading", "replica": self.name}
        return (200 if ready else 503), "", json.dumps(body).encode(), False

    def _failed(self, status: int, code: str, message: str) -> Answer:
        return status, code, error_body(self.name, code, message), False

    def _out_of_memory(self) -> Answer:
        """The heap is at its limit: this process cannot be trusted to serve again."""
        limit = f" of {self.memory_mb} MB" if self.memory_mb else ""
        message = f"MemoryError: the model ran out of memory (limit{limit}); the replica restarts"
        print(f"replica {self.name}: {message}", file=sys.stderr, flush=True)
        if self.output is not None:
            self.output.record(STREAM_EVENT, {"event": EVENT_OUT_OF_MEMORY, "reason": message})
        return 500, "model.error", error_body(self.name, "model.error", message), True

    def ended(self, answer: Answer) -> None:
        """After an answer that closes: the replica exits, its output written first."""
        time.sleep(0.1)  # let the log pump write what the model printed
        os._exit(EXIT_OUT_OF_MEMORY)


def make_http_handler(replica: Replica):
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


def _read_exactly(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def challenge(sock, key: bytes) -> bool:
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


def make_frame_handler(replica: Replica, key: bytes | None = None):
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
        folder, base = os.path.split(self.server_address)  # type: ignore[arg-type]
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--function", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--socket", help="listen on this Unix socket")
    parser.add_argument("--socket-mode", default="600", help="octal mode of the socket")
    parser.add_argument("--listen", type=int, help="frames on 0.0.0.0:PORT, challenged")
    parser.add_argument("--key-file", help="the channel key of --listen (hex)")
    parser.add_argument("--port", type=int, help="listen on 127.0.0.1:PORT instead (benchmarks)")
    parser.add_argument("--port-file")
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--kernel", default="python3", choices=["python3", "r"])
    args = parser.parse_args(argv)

    output = Output()
    output.capture()
    become_subreaper()
    if args.memory_mb > 0:
        import resource

        limit = args.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    replica = Replica(args.name, output, args.memory_mb)
    if args.socket:
        server: socketserver.BaseServer = UnixFrameServer(
            os.path.abspath(args.socket), make_frame_handler(replica), int(args.socket_mode, 8)
        )
        where = args.socket
    elif args.listen is not None:
        if not args.key_file:
            parser.error("--listen needs --key-file: no replica is callable without the key")
        server = TcpFrameServer(
            ("0.0.0.0", args.listen), make_frame_handler(replica, read_key(args.key_file))
        )
        where = f"port {server.server_address[1]} (challenged)"
    else:
        server = ThreadingHTTPServer(("127.0.0.1", args.port or 0), make_http_handler(replica))
        server.daemon_threads = True
        where = f"127.0.0.1:{server.server_address[1]}"
        if args.port_file:
            tmp = args.port_file + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(str(server.server_address[1]))
            os.replace(tmp, args.port_file)
    os.chdir(args.dir)
    install_cdsw_module(output)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True
    ).start()
    print(f"replica {args.name} loading {args.file}:{args.function}", flush=True)
    try:
        loader = load_r_function if args.kernel == "r" else load_function
        replica.fn = loader(args.dir, args.file, args.function)
    except BaseException as exc:  # any import failure ends the replica, explained
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}"
        print(
            f"replica {args.name} failed to load the model: {reason}", file=sys.stderr, flush=True
        )
        if output is not None:
            output.record(STREAM_EVENT, {"event": EVENT_LOAD_FAILED, "reason": reason[:2000]})
        output.finish()  # the traceback into the log
        os._exit(EXIT_IMPORT_FAILED)
    print(f"replica {args.name} ready on {where}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
