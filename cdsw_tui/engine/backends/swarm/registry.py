"""Where swarm builds are pushed: the ``REGISTRY`` setting, or a registry of this home's
own started with ``cdsw-tui registry start`` (Debian's ``docker-registry`` on 127.0.0.1,
enough for a one-node swarm; Docker trusts a registry on 127.0.0.0/8 without TLS)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from cdsw_tui.config import load_settings
from cdsw_tui.engine import process
from cdsw_tui.errors import CdswError
from cdsw_tui.waiting import poll_until

BINARY = "docker-registry"
DEFAULT_PORT = 5000
CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""
NO_REGISTRY = (
    "the swarm runtime needs a registry every node can pull from: set REGISTRY "
    "(host:port) or run 'cdsw-tui registry start'"
)


def folder(home: Path) -> Path:
    return home / "registry"


def answers(address: str, timeout: float = 2.0) -> bool:
    """A registry (API v2) answers at ``address``."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def started(home: Path) -> str:
    """The address of this home's own registry, if one was started; "" otherwise."""
    try:
        return (folder(home) / "address").read_text().strip()
    except OSError:
        return ""


def resolve(home: Path) -> str:
    """The registry builds are pushed to, or one line saying how to get one."""
    configured = load_settings(home).registry
    if configured:
        return configured.removeprefix("http://").rstrip("/")
    address = started(home)
    if address and answers(address):
        return address
    if address:
        raise CdswError(
            f"the registry at {address} does not answer; run 'cdsw-tui registry start' again"
        )
    raise CdswError(NO_REGISTRY)


def start(home: Path, port: int = DEFAULT_PORT) -> tuple[str, bool]:
    """Start this home's registry on 127.0.0.1:``port`` unless it runs; (address, new)."""
    address = started(home)
    if address and answers(address):
        return address, False
    binary = shutil.which(BINARY)
    if binary is None:
        raise CdswError("docker-registry is not installed (apt-get install -y docker-registry)")
    address = f"127.0.0.1:{port}"
    if answers(address):
        raise CdswError(f"something else answers on {address} already; pick --port")
    base = process.private_dir(folder(home))
    data = process.private_dir(base / "data")
    config = base / "config.yml"
    config.write_text(CONFIG.format(data=data, port=port))
    config.chmod(0o600)
    logs = process.private_dir(home / "logs")
    log_fd = os.open(
        logs / "registry.log",
        os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        proc = subprocess.Popen(
            [binary, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,  # outlives the command that started it
            cwd=base,
        )
    finally:
        os.close(log_fd)
    if not poll_until(lambda: answers(address, 0.5), 15, interval=0.1):
        raise CdswError(f"the registry did not answer on {address}; see {logs}/registry.log")
    (base / "address").write_text(address + "\n")
    (base / "pid").write_text(f"{proc.pid}\n")
    return address, True


def stop(home: Path) -> str:
    """Stop this home's registry (its images stay in its folder); its address, or ""."""
    base = folder(home)
    address = started(home)
    try:
        pid = int((base / "pid").read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            ours = BINARY.encode() in fh.read()  # not a pid some other process reuses
    except (OSError, ValueError):
        ours = False
    if ours:
        os.kill(pid, signal.SIGTERM)
        poll_until(lambda: not os.path.exists(f"/proc/{pid}"), 10)
    for name in ("address", "pid"):
        (base / name).unlink(missing_ok=True)
    return address if ours else ""
