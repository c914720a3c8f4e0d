"""Helpers the benchmarks share: a scratch home with a controller, and a lean HTTP load loop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cdsw_tui.config import load_settings
from cdsw_tui.resources import RUNNER
from cdsw_tui.services.context import Workbench
from cdsw_tui.services.lock import state
from cdsw_tui.serving.connection import ReplicaConnection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scratch:
    """A temporary CDSW_TUI_HOME with its own gateway port and a controller process."""

    def __init__(self, **settings: object) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)
        self.home = self.root / "home"
        self.home.mkdir()
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"  # what the load client calls
        lines = [f"gateway_port = {self.port}", "poll_interval = 0.05"]
        lines += [
            f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in settings.items()
        ]
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")
        os.environ["CDSW_TUI_HOME"] = str(self.home)
        self.wb = Workbench(load_settings(self.home))
        self.controller: subprocess.Popen | None = None
        self.cleanups: list = []

    def start_controller(self) -> None:
        log = open(self.home / "controller.out", "ab")
        self.controller = subprocess.Popen(
            [sys.executable, "-P", "-m", "cdsw_tui", "serve"],
            stdout=log,
            stderr=log,
            env=dict(os.environ, CDSW_TUI_HOME=str(self.home)),
            start_new_session=True,
        )
        while not state(self.home).running:
            time.sleep(0.02)

    def close(self) -> None:
        from cdsw_tui.services import deployments, models

        for cleanup in self.cleanups:
            cleanup()

        for model in models.list_models(self.wb):
            try:
                deployments.stop(self.wb, model)
            except Exception:
                pass
        deadline = time.monotonic() + 15
        while any(models.active_deployment(self.wb, m) for m in models.list_models(self.wb)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if self.controller is not None:
            self.controller.send_signal(signal.SIGTERM)
            self.controller.wait(timeout=15)
        self.wb.close()
        self.tmp.cleanup()


@dataclass
class Figures:
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self, label: str) -> str:
        return (
            f"  {label:<34} {self.rps:8.0f} req/s   p50 {self.p(0.5):6.2f} ms   "
            f"p99 {self.p(0.99):6.2f} ms   errors {self.errors}"
        )


class HttpConnection:
    """A lean keep-alive HTTP/1.1 client: one request in one send, Content-Length back.
    The same client measures the gateway and every peer, so their figures compare."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._writer is None or self._writer.is_closing():
            where = self.address.removeprefix("tcp://").removeprefix("tls://")
            host, _, port = where.rpartition(":")
            self._reader, self._writer = await asyncio.open_connection(
                host, int(port), ssl=TRUST.get(self.address)
            )
        assert self._reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self._writer.write(head + body)
        status_line = await self._reader.readline()
        if not status_line:
            self.close()
            raise ConnectionError("closed")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        chunked = closing = False
        while (line := await self._reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
            elif name == b"connection" and value == b"close":
                closing = True
        if chunked:  # some peers (uvicorn, BentoML) stream their answers
            parts = []
            while size := int((await self._reader.readline()).split(b";")[0], 16):
                parts.append(await self._reader.readexactly(size + 2))
            await self._reader.readline()
            data = b"".join(p[:-2] for p in parts)
        else:
            data = await self._reader.readexactly(length) if length else b""
        if closing:
            self.close()
        return status, data

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


class FrameConnection:
    """The gateway's own framed channel, to call a replica on its Unix socket directly."""

    def __init__(self, address: str) -> None:
        self.conn = ReplicaConnection(address)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        status, _, data, _ = await self.conn.call(body)
        return status, data

    def close(self) -> None:
        self.conn.close()


TRUST: dict[str, ssl.SSLContext] = {}  # tls:// addresses and what their client trusts


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command
    docs/gateway.md gives (PEM files in ``folder``)."""
    cert, key = folder / "gateway.pem", folder / "gateway.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def https_scratch() -> tuple[Scratch, str]:
    """A second scratch home whose gateway serves HTTPS with a certificate of its own,
    and the tls:// address the load client calls it at (trusting that certificate)."""
    folder = Path(tempfile.mkdtemp(prefix="cdsw-bench-tls-"))
    cert, key = self_signed(folder)
    s = Scratch(tls_cert=str(cert), tls_key=str(key))
    s.address = f"tls://127.0.0.1:{s.port}"
    TRUST[s.address] = ssl.create_default_context(cafile=str(cert))
    return s, s.address


def connect(address: str) -> HttpConnection | FrameConnection:
    return FrameConnection(address) if address.startswith("unix:") else HttpConnection(address)


def raw_replica(
    directory: str, file: str, function: str, python: str = sys.executable
) -> tuple[str, subprocess.Popen]:
    """The runner alone on a loopback port, speaking plain HTTP (``--port``): the
    single-hop floor every gateway is measured against."""
    port_file = Path(tempfile.mkdtemp()) / "port"
    proc = subprocess.Popen(
        [
            python,
            "-s",
            str(RUNNER),
            "--dir",
            directory,
            "--file",
            file,
            "--function",
            function,
            "--name",
            "raw",
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not port_file.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the raw replica ended with status {proc.returncode}")
        time.sleep(0.02)
    address = tcp(int(port_file.read_text()))
    wait_answer(address, "GET", "/health", b"", proc, timeout=30, poll=0.02)
    return address, proc


def wait_answer(
    address: str,
    method: str,
    path: str,
    body: bytes,
    proc: subprocess.Popen,
    timeout: float,
    poll: float = 0.2,
) -> None:
    """Until what ``proc`` serves at ``address`` answers 200 (RuntimeError if it ends or
    does not answer in time)."""

    async def ask() -> None:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"it ended with status {proc.returncode} while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"it did not answer within {timeout:g} s")
            conn = HttpConnection(address)
            try:
                if (await conn.request(method, path, body))[0] == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            await asyncio.sleep(poll)

    asyncio.run(ask())


def tcp(port: int) -> str:
    """The address of something listening on a loopback port (the gateway)."""
    return f"tcp://127.0.0.1:{port}"


async def load(
    address: str,
    path: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    shared: bool = False,
    warmup: float = 0.3,
) -> Figures:
    """``concurrency`` callers for ``seconds``; ``shared`` makes them queue on one connection
    (what a perfect one-connection balancer in front of one replica would do)."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + warmup + seconds
    measure_from = time.perf_counter() + warmup
    lock = asyncio.Lock()
    shared_conn = connect(address)

    async def worker() -> None:
        nonlocal errors
        conn = shared_conn if shared else connect(address)
        while (now := time.perf_counter()) < stop_at:
            if shared:
                async with lock:
                    t0 = time.perf_counter()
                    status, _ = await conn.request("POST", path, body)
            else:
                t0 = now
                status, _ = await conn.request("POST", path, body)
            t1 = time.perf_counter()
            if t0 >= measure_from:
                latencies.append(t1 - (t0 if shared else now))
                if status != 200:
                    errors += 1
        if not shared:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    shared_conn.close()
    return Figures(len(latencies), seconds, latencies, errors)


def wait_first_answer(s: Scratch, model, deployment_id: int) -> None:
    """Call the model through the gateway until it answers 200 from a deployed deployment."""
    from cdsw_tui.services import deployments

    body = json.dumps({"accessKey": model.access_key, "request": {"a": 3, "b": 5}}).encode()

    async def ask() -> None:
        while True:
            conn = HttpConnection(s.address)
            try:
                status, _ = await conn.request("POST", "/model", body)
                if status == 200 and deployments.get(s.wb, deployment_id).status == "deployed":
                    return
            except Exception:  # the gateway answers once the controller listens
                pass
            finally:
                conn.close()
            await asyncio.sleep(0.005)

    asyncio.run(ask())


def build(s: Scratch, model) -> tuple[float, object]:
    """A new build of ``model``, waited for: (seconds, the build); the run ends unless built."""
    from cdsw_tui.services import builds

    start = time.perf_counter()
    b = builds.request(s.wb, model)
    while (b := builds.refresh(s.wb, b)).status not in ("built", "failed", "cancelled", "timedout"):
        time.sleep(0.05)
    if b.status != "built":
        raise SystemExit(f"build {b.number} of {model.name} {b.status}: {b.reason}")
    return time.perf_counter() - start, b


def first_answer(s: Scratch, model, replicas: int, **resources: object) -> float:
    """Seconds from a new deployment of the newest build to its first answer."""
    from cdsw_tui.services import deployments

    start = time.perf_counter()
    d = deployments.create(s.wb, model, replicas=replicas, **resources)
    wait_first_answer(s, model, int(d.id))
    return time.perf_counter() - start


def stopped(s: Scratch, model) -> None:
    """Stop the model's deployment and wait until it is no longer active."""
    from cdsw_tui.services import deployments, models

    deployments.stop(s.wb, model)
    while models.active_deployment(s.wb, model):
        time.sleep(0.05)


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every process below it: a jailed local replica's
    handle is its jail's first process, the runner a child of it."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
        todo.extend(int(c) for c in children)
    return total or float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values)
