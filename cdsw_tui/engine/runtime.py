"""The runtime contract: how the controller starts, reaches, watches and stops replicas.

One implementation per backend folder (``engine/backends/<name>/runtime.py``). The
controller knows a replica only through what this module defines: the spec it asks
for, the address the gateway dials, one opaque ``handle`` string (stored as is), an
``Exit`` when it ended, and its output read from an offset. No backend's words (pid,
container id, host path) leave its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class ReplicaSpec:
    """Everything a backend needs to start one replica of a build."""

    name: str
    deployment_id: int
    model_id: int
    artifact: str  # the build's artifact: a folder (local) or an image id (docker)
    env_path: str
    file: str
    function: str
    kernel: str
    environment: dict[str, str]
    cpu: float = 1.0
    memory: int = 2048
    gpu: int = 0
    placement: tuple[str, ...] = ()  # constraints on where it may run (a scheduler's backend)
    uid: int = -1  # the identity model code runs as (REPLICA_UID); -1: the backend's default
    egress: bool = False  # it may open connections out (else: no network, where the backend can)


def runner_arguments(spec: ReplicaSpec, directory: str, socket: str = "") -> list[str]:
    """What every backend passes the replica runner (serving/runner/), after its path;
    without ``socket`` the backend adds where the runner listens."""
    return [
        "--dir",
        directory,
        "--file",
        spec.file,
        "--function",
        spec.function,
        "--name",
        spec.name,
        *(["--socket", socket] if socket else []),
        "--kernel",
        spec.kernel,
    ]


@dataclass(frozen=True)
class Placed:
    """A started (or adopted) replica: where the gateway reaches it, and its handle.

    ``address`` is ``unix:/path/to/socket``, or ``tcp://host:port#key`` for a backend
    whose replicas live on other hosts (the key answers the replica's challenge); only
    the gateway's channel may dial it."""

    address: str
    handle: str


@dataclass(frozen=True)
class Exit:
    """Why a replica is no longer running, in one line."""

    reason: str
    code: int | None = None  # the exit status, negative for a signal; None if unknown
    oom: bool = False  # the runtime itself saw an out-of-memory kill


@dataclass(frozen=True)
class Found:
    """A replica this home's runtime has, running or not (for adoption and GC)."""

    name: str
    handle: str
    running: bool


@dataclass(frozen=True)
class Output:
    """What a replica wrote after ``offset``: whole lines, and the offset to ask next."""

    data: bytes
    offset: int


class RuntimeUnavailable(Exception):
    """The backend itself cannot be reached (an engine is down); try again later."""


class Runtime(Protocol):
    """A backend's replicas. Every method may block: the controller calls them in threads."""

    name: str

    def start(self, spec: ReplicaSpec) -> Placed:
        """Start a replica; returns at once (readiness is the gateway's probe)."""

    def inspect(self, handle: str) -> Exit | None:
        """None while it runs; why it ended otherwise."""

    def stop(self, handle: str) -> None:
        """Stop it and everything it started (process tree or cgroup): no survivor.
        Its output stays readable until ``remove``."""

    def remove(self, handle: str) -> None:
        """Forget a stopped replica: its output, socket and records."""

    def adopt(self, name: str, handle: str) -> Placed | None:
        """The replica ``name`` if it still runs there and is ours (after a restart)."""

    def list_replicas(self) -> list[Found]:
        """Every replica of this home the backend has."""

    def collect(self, keep: set[str]) -> list[str]:
        """Stop and remove every replica whose handle is not in ``keep``; their names."""

    def read_output(self, handle: str, offset: int, limit: int = 1 << 20) -> Output:
        """Stamped output lines (runner format) written after ``offset``."""

    def address(self, handle: str) -> str | None:
        """Where the replica answers now, if its scheduler moved it (a node failed, a task
        was rescheduled) since it was placed; None when it is where it was placed."""

    def moving(self, handle: str) -> bool:
        """Its scheduler stopped it where it was and is placing it again (``address``
        will tell where): not dead, not yet answering."""


class RuntimeBase:
    """What every backend's runtime shares: garbage collection on top of list/stop/remove."""

    name = ""

    def address(self, handle: str) -> str | None:
        return None  # a process or a container stays where it was started

    def moving(self, handle: str) -> bool:
        return False

    def list_replicas(self) -> list[Found]:  # pragma: no cover - every backend defines it
        raise NotImplementedError

    def stop(self, handle: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def remove(self, handle: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def collect(self, keep: set[str]) -> list[str]:
        removed = []
        for found in self.list_replicas():
            if found.handle not in keep:
                self.stop(found.handle)
                self.remove(found.handle)
                removed.append(found.name)
        return removed
