"""Shared fixtures: a fresh CDSW_TUI_HOME per test, the real CLI, and controller cleanup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cdsw_tui.config import load_settings
from cdsw_tui.services.context import Workbench
from cdsw_tui.services.lock import state


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768 and up), as 8787 is: a port
    the kernel hands out to outgoing connections could be taken by one of them while a
    test's controller restarts (a kill -9 test), and the new one could not listen."""
    import random

    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "home"
    monkeypatch.setenv("CDSW_TUI_HOME", str(path))
    monkeypatch.setenv("CDSW_TUI_POLL_INTERVAL", "0.05")
    monkeypatch.setenv("CDSW_TUI_GATEWAY_PORT", str(free_port()))
    yield path
    stop_controller(path)
    stop_replicas(path)
    unmount_under(path)


def unmount_under(path: Path) -> None:
    """What was mounted under a test's home (a Docker replica's socket-folder tmpfs,
    whose container a fixture removed behind the runtime's back) is unmounted."""
    prefix = f"{path}/"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        where = line.split()[1]
        if where.startswith(prefix):
            subprocess.run(["umount", "-l", where], capture_output=True, check=False)


def stop_controller(path: Path, sig: int = signal.SIGTERM) -> None:
    """SIGTERM: as ``controller stop`` does, its keeper first (else the keeper could be
    starting a controller again right now). Another signal: to the controller alone."""
    if sig == signal.SIGTERM and path.exists():
        from cdsw_tui.services import background

        background.stop(path, timeout=10)
        return
    st = state(path) if path.exists() else None
    if st and st.running and st.pid:
        try:
            os.kill(st.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and state(path).running:
            time.sleep(0.05)


def replica_pid(replica) -> int | None:
    """The process of a local replica, from its runtime handle (``pid:start:name``)."""
    head = (replica.handle or "").split(":", 1)[0]
    return int(head) if head.isdigit() else None


def stop_replicas(path: Path) -> None:
    """Replicas outlive their controller by design; a test must not leave them behind."""
    if not path.exists():
        return
    from cdsw_tui.engine.backends.local.runtime import LocalRuntime

    runtime = LocalRuntime(path)
    for found in runtime.list_replicas():
        runtime.stop(found.handle)
        runtime.remove(found.handle)


@pytest.fixture
def wb(home: Path) -> Iterator[Workbench]:
    bench = Workbench(load_settings(home))
    yield bench
    bench.close()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


class Cli:
    """Runs the installed entry point as a user would, in a subprocess."""

    def __init__(self, home: Path, cwd: Path) -> None:
        self.home = home
        self.cwd = cwd

    def __call__(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        env: dict | None = None,
        input: str | None = None,
    ) -> Result:
        full_env = dict(os.environ, CDSW_TUI_HOME=str(self.home), CDSW_TUI_POLL_INTERVAL="0.05")
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "cdsw_tui", *args],
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=full_env,
            timeout=timeout,
            input=input,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"cdsw-tui {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
            )
        return result


@pytest.fixture
def cli(home: Path, tmp_path: Path) -> Cli:
    return Cli(home, tmp_path)


def write_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        if name.endswith(".sh"):
            path.chmod(0o755)
    return root


ADD = """\
def add(args):
    return args["a"] + args["b"]
"""


@pytest.fixture
def plain_project(tmp_path: Path) -> Path:
    """A project without cdsw-build.sh: its builds need no pip and take well under a second."""
    return write_project(tmp_path / "plain", {"add_numbers.py": ADD})
