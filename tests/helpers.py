"""Helpers that test modules share (a test module never imports another): the store,
errors, replicas, Pilot, Docker and swarm."""

from __future__ import annotations

import json
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from cdsw_tui.services import models


def dump(home: Path) -> list[str]:
    """Everything in the store, to prove a refused command changed nothing."""
    con = sqlite3.connect(home / "cdsw.db")
    try:
        return list(con.iterdump())
    finally:
        con.close()


def one_line_error(result) -> str:
    assert result.code != 0, result.out
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    return lines[0]


def replica_socket(home: Path, name: str) -> Path:
    """Where a local replica listens, from its runtime's record (in its jail's /tmp when
    jailed, else beside the record)."""
    import json

    record = json.loads((home / "run" / "local" / f"{name}.json").read_text())
    return Path(record["address"].removeprefix("unix:"))


def host_pid(pid_seen_inside: int, among: list[int]) -> int | None:
    """The host pid of a process that knows itself as ``pid_seen_inside`` (a jailed
    replica's processes see their own PID namespace's numbers)."""
    for pid in among:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and int(line.split()[-1]) == pid_seen_inside:
                return pid
    return None


# -- the workbench through Pilot ---------------------------------------------------

SIZE = (120, 40)


async def wait_for(pilot, predicate, tries: int = 100) -> None:
    """Until ``predicate()`` holds, up to ``tries`` pauses of 50 ms (an app's workers run
    meanwhile; wait on them with ``app.workers.wait_for_complete()`` where one is known)."""
    for _ in range(tries):
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached")


async def open_model(pilot, app, ref: str, tab: str = "overview"):
    """Open a model's screen (on ``tab``) and wait until it shows the model."""
    from cdsw_tui.screens.model import ModelScreen

    app.open_model(ref, tab)
    await wait_for(
        pilot, lambda: isinstance(app.screen, ModelScreen) and app.screen.detail is not None
    )
    return app.screen


async def from_project(pilot, app, project: str, key: str, screen_type: type):
    """Open a project's screen, press ``key`` there and wait for the screen it opens."""
    from cdsw_tui.screens.project import ProjectScreen

    app.open_project(project)
    await wait_for(pilot, lambda: isinstance(app.screen, ProjectScreen))
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, screen_type))
    return app.screen


# -- Docker and swarm ----------------------------------------------------------------

ENGINE = os.environ.get("CDSW_TUI_ENGINE_IMAGE", "cdsw-tui/engine:latest")


def docker_problem() -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:
        return f"no Docker engine reachable ({type(exc).__name__})"
    try:
        client.images.get(ENGINE)
    except Exception:
        return f"engine image {ENGINE} missing (cdsw-tui engine build)"
    return None


def remove_containers(home: Path) -> None:
    """A test's containers gone (the home's teardown unmounts what was mounted for them)."""
    import docker

    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"label": f"cdsw.home={home}"}):
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass  # the controller, still running, removed it meanwhile


def services(home: Path) -> dict[str, dict]:
    import docker

    api = docker.from_env().api
    return {s["Spec"]["Name"]: s for s in api.services(filters={"label": f"cdsw.home={home}"})}


def call(wb, ref: str, request: object = None, *, timeout: float = 60, **kw) -> httpx.Response:
    """Call the model ``ref`` through the home's gateway with its access key."""
    key = models.resolve(wb, ref).access_key
    return httpx.post(
        wb.settings.gateway_url + "/model",
        json={"accessKey": key, "request": {} if request is None else request},
        timeout=timeout,
        **kw,
    )


def create_model(cli, name: str, fn: str, *extra: str, project: str = "p", file: str = "m.py"):
    """``model create p/NAME --file m.py --function FN --wait``: built and deployed."""
    return cli(
        "model", "create", f"{project}/{name}", "--file", file, "--function", fn, "--wait", *extra
    )


def settle(home: Path, count: int) -> None:
    """Wait until the home has ``count`` services (a stopping replica's goes last)."""
    deadline = time.monotonic() + 60
    while len(services(home)) != count:
        assert time.monotonic() < deadline, f"{len(services(home))} services, not {count}"
        time.sleep(0.2)


@contextmanager
def traffic(wb, ref: str, request: dict | None = None) -> Iterator[tuple[list[dict], list[str]]]:
    """Three callers in a loop until the block ends: (answers, failures)."""
    stop = threading.Event()
    answers: list[dict] = []
    failures: list[str] = []
    key = models.resolve(wb, ref).access_key

    def load() -> None:
        with httpx.Client(timeout=60, trust_env=False) as client:
            while not stop.is_set():
                r = client.post(
                    wb.settings.gateway_url + "/model",
                    json={"accessKey": key, "request": request or {}},
                )
                if r.status_code == 200:
                    answers.append(r.json())
                else:
                    failures.append(r.text)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        yield answers, failures
    finally:
        stop.set()
        for t in threads:
            t.join()


# -- raw HTTP ---------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}  # a call's content type (others get 415)


def post_bytes(body: bytes, path: str = "/model", headers: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Wire:
    """One raw connection to the gateway, reading answers one by one."""

    def __init__(self, port: int, timeout: float = 15, source: str = "") -> None:
        """``source``: the local address it comes from (127.0.0.2: another peer)."""
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The next answer: status, headers (lower-case names), body."""
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"closed before an answer: {self.buffer!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert self._fill(), "closed in the middle of an answer"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self) -> bool:
        """True when the gateway closed the connection (and sent nothing more)."""
        try:
            return not self._fill() and not self.buffer
        except (ConnectionResetError, TimeoutError):
            return False

    def close(self) -> None:
        self.sock.close()


class Served:
    """A home of its own with a controller on a free port, driven through the CLI in
    subprocesses (for module-scoped fixtures: one controller for a module's tests).
    ``config`` is added to its config.toml; the project ``srv`` holds ``files``."""

    def __init__(
        self,
        root: Path,
        files: dict[str, str],
        config: str = "",
        nofile: tuple[int, int] | None = None,
    ) -> None:
        """``nofile``: the file limits (soft, hard) its commands, and so its controller,
        start with."""
        from tests.conftest import free_port, write_project

        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)  # a test may have mounted a disk there
        self.port = free_port()
        (self.home / "config.toml").write_text(
            f"gateway_port = {self.port}\nbusy_timeout = 1\nrequest_timeout = 3\n"
            f"poll_interval = 0.05\n{config}"
        )
        self.env = dict(os.environ, CDSW_TUI_HOME=str(self.home))
        for key in [k for k in self.env if k.startswith("CDSW_TUI_") and k != "CDSW_TUI_HOME"]:
            del self.env[key]
        self.url = f"http://127.0.0.1:{self.port}"
        self.project = write_project(root / "project", files)
        self.keys: dict[str, str] = {}
        self._wb = None
        self.nofile = nofile

    @property
    def wb(self):
        from cdsw_tui.config import load_settings
        from cdsw_tui.services.context import Workbench

        if self._wb is None:
            self._wb = Workbench(load_settings(self.home))
        return self._wb

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "cdsw_tui", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            preexec_fn=self._limits if self.nofile else None,
        )
        if check and proc.returncode:
            raise AssertionError(proc.stderr)
        return proc

    def _limits(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def key(self, name: str) -> str:
        return json.loads(self.cli("model", "show", f"srv/{name}", "--show-key", "--json").stdout)[
            "access_key"
        ]

    def wait_deployed(self, names: list[str], timeout: float = 120) -> None:
        from cdsw_tui.services import deployments

        for name in names:
            model = models.resolve(self.wb, f"srv/{name}")
            deadline = time.monotonic() + timeout
            while (d := models.active_deployment(self.wb, model)) is None or d.status != "deployed":
                assert time.monotonic() < deadline, (
                    f"{name} did not deploy: {deployments.list_deployments(self.wb, model)}"
                )
                time.sleep(0.1)

    def close(self) -> None:
        from tests.conftest import stop_controller, stop_replicas, unmount_under

        if self._wb is not None:
            self._wb.close()
        stop_controller(self.home)
        stop_replicas(self.home)
        unmount_under(self.home)
