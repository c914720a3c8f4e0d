"""The runtime interface: starts, finds and stops replicas (one implementation per backend)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class ReplicaSpec:
    name: str
    deployment_id: int
    model_id: int
    artifact: Path
    env_path: str
    file: str
    function: str
    kernel: str
    environment: dict[str, str]
    log_path: Path
    metrics_path: Path
    run_dir: Path
    cpu: float = 1.0
    memory: int = 2048
    gpu: int = 0
    image: str = ""


@dataclass
class Running:
    """Where a started replica answers, and how to find it again after a restart."""

    port: int
    pid: int | None = None
    container_id: str = ""
    advisory: list[str] = field(default_factory=list)


class ReplicaExited(Exception):
    def __init__(self, reason: str, oom: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.oom = oom


class Runtime(Protocol):
    def start(self, spec: ReplicaSpec, timeout: float) -> Running:
        """Start a replica and return once it listens (not necessarily ready)."""

    def exited(self, running: Running) -> ReplicaExited | None:
        """None while it runs; why it ended otherwise."""

    def stop(self, running: Running) -> None: ...

    def adopt(self, name: str, running: Running) -> bool:
        """True if the replica ``name`` still runs there and is ours."""
