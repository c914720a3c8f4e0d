"""The replica runner: serves one model function over HTTP, one request at a time.

Standard library only, so it runs inside any engine image or virtual environment:

    python replica.py --dir BUILD_DIR --file F --function FN --name REPLICA
                      [--port 0] [--port-file P] [--log FILE] [--memory-mb N]

``POST /call`` takes the gateway's body (``{"accessKey": ..., "request": ...}``) and
answers SPEC's JSON with this replica's name as ``ReplicaID``. ``GET /health`` answers
only once the model file imported. With ``--log``, everything written to stdout and
stderr (by Python or by C code) lands in that file, one timestamped line each, marked
with its stream, so the log survives whoever started the replica.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import threading
import time
import traceback
import types
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

EXIT_IMPORT_FAILED = 3


def _stamp() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def capture_output(path: str) -> None:
    """Send fd 1 and 2 through pipes into ``path``, a timestamped line at a time.

    A full disk must not stop the model: lines that cannot be written are counted and
    dropped (the pipes keep draining, so a print never blocks), and a note says so once
    writing works again.
    """
    log = open(path, "ab", buffering=0)
    lock = threading.Lock()
    dropped = [0, ""]

    def write(data: bytes) -> None:
        with lock:
            try:
                if dropped[0]:
                    note = f"{_stamp()} stderr [cdsw-tui] {dropped[0]} log lines dropped: {dropped[1]}\n"
                    log.write(note.encode())
                    dropped[0] = 0
                log.write(data)
            except OSError as exc:
                dropped[0] += data.count(b"\n")
                dropped[1] = exc.strerror or str(exc)

    def pump(read_fd: int, stream: str) -> None:
        pending = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if lines:
                    head = f"{_stamp()} {stream} ".encode()
                    write(b"".join(head + line + b"\n" for line in lines))
        if pending:
            write(f"{_stamp()} {stream} ".encode() + pending + b"\n")

    for fd, stream in ((1, "stdout"), (2, "stderr")):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, fd)
        os.close(write_fd)
        threading.Thread(target=pump, args=(read_fd, stream), daemon=True).start()
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)


def install_cdsw_module(metrics_path: str | None) -> None:
    """``import cdsw`` as real CDSW/CML model scripts do: model_metrics and track_metric."""
    module = types.ModuleType("cdsw")
    state = threading.local()
    lock = threading.Lock()

    def track_metric(key: str, value: object) -> None:
        record = {
            "time": time.time(),
            "key": str(key),
            "value": value,
            "uuid": getattr(state, "uuid", None),
            "replica": os.environ.get("CDSW_REPLICA_ID", ""),
        }
        if metrics_path:
            line = json.dumps(record, default=str) + "\n"
            with lock, open(metrics_path, "a", encoding="utf-8") as fh:
                fh.write(line)

    def model_metrics(fn):  # noqa: ANN001, ANN202
        def wrapper(args):  # noqa: ANN001, ANN202
            state.uuid = str(uuid.uuid4())
            try:
                return {"uuid": state.uuid, "prediction": fn(args)}
            finally:
                state.uuid = None

        wrapper.__name__ = getattr(fn, "__name__", "model")
        wrapper.__doc__ = getattr(fn, "__doc__", None)
        return wrapper

    module.track_metric = track_metric
    module.model_metrics = model_metrics
    sys.modules["cdsw"] = module


def load_function(directory: str, file: str, function: str):  # noqa: ANN201
    path = os.path.join(directory, file)
    sys.path.insert(0, os.path.dirname(path))
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


def load_r_function(directory: str, file: str, function: str):  # noqa: ANN201, C901
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


def make_handler(fn, name: str):  # noqa: ANN001, ANN201
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        server_version = "cdsw-replica"
        sys_version = ""

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # the gateway logs requests; the replica log is the model's own output

        def _send(self, status: int, body: bytes) -> None:
            head = (
                f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            self.wfile.write(head + body)  # one send: no Nagle wait between head and body

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._send(
                    200,
                    json.dumps({"status": "ready", "replica": name, "pid": os.getpid()}).encode(),
                )
            else:
                self._send(404, error_body(name, "request.invalid", "unknown path"))

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
                request = body["request"] if isinstance(body, dict) and "request" in body else body
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                self._send(400, error_body(name, "request.invalid", f"the body is not JSON: {exc}"))
                return
            try:
                result = fn(request)
            except InvalidResponse as exc:
                self._send(500, error_body(name, "model.invalid_response", str(exc)[:2000]))
                return
            except Exception as exc:  # the model's own failure: report it, keep serving
                traceback.print_exc()
                sys.stderr.flush()
                message = f"{type(exc).__name__}: {exc}"
                self._send(500, error_body(name, "model.error", message[:2000]))
                return
            if isinstance(result, RawJSON):
                self._send(
                    200,
                    f'{{"success": true, "response": {result}, "ReplicaID": {json.dumps(name)}}}'.encode(),
                )
                return
            try:
                payload = json.dumps(
                    {"success": True, "response": result, "ReplicaID": name}, allow_nan=False
                )
            except (TypeError, ValueError, RecursionError) as exc:
                self._send(
                    500,
                    error_body(
                        name,
                        "model.invalid_response",
                        f"the function returned something that is not JSON: {exc}",
                    ),
                )
                return
            self._send(200, payload.encode())

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--function", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--log")
    parser.add_argument("--metrics")
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--kernel", default="python3", choices=["python3", "r"])
    args = parser.parse_args(argv)

    if args.log:
        capture_output(args.log)
    if args.memory_mb > 0:
        import resource

        limit = args.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    os.chdir(args.dir)
    server = HTTPServer(
        (args.host, args.port), make_handler(None, args.name), bind_and_activate=True
    )
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(str(server.server_address[1]))
        os.replace(tmp, args.port_file)
    install_cdsw_module(args.metrics)
    print(f"replica {args.name} loading {args.file}:{args.function}", flush=True)
    try:
        loader = load_r_function if args.kernel == "r" else load_function
        fn = loader(args.dir, args.file, args.function)
    except BaseException as exc:  # noqa: BLE001  (any import failure ends the replica, explained)
        traceback.print_exc()
        print(
            f"replica {args.name} failed to load the model: {type(exc).__name__}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        sys.stderr.flush()
        time.sleep(0.2)  # let the log pump write the traceback
        os._exit(EXIT_IMPORT_FAILED)
    server.RequestHandlerClass = make_handler(fn, args.name)
    print(f"replica {args.name} ready on port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
