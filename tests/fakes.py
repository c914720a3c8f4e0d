"""A runtime that runs nothing: replicas are dictionary entries, so the controller's
convergence can be tested in milliseconds, with every fault on demand."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from cdsw_tui.engine.runtime import (
    Exit,
    Found,
    Output,
    Placed,
    ReplicaSpec,
    RuntimeBase,
    RuntimeUnavailable,
)


@dataclass
class FakeReplica:
    name: str
    handle: str
    address: str
    exit: Exit | None = None
    removed: bool = False
    output: bytes = b""
    in_transit: bool = False  # its scheduler is placing it again
    relocated: bool = False  # placed again at ``address``, not yet reported


@dataclass
class FakeRuntime(RuntimeBase):
    name: str = "local"
    replicas: dict[str, FakeReplica] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)  # (what, replica name)
    down: bool = False  # the engine cannot be reached
    slow: bool = False  # replicas never answer their probe (a model that loads forever)
    failing: set[str] = field(default_factory=set)  # names whose start fails to load
    stop_failures: int = 0  # the next stops raise, as an engine that is away
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _check(self) -> None:
        if self.down:
            raise RuntimeUnavailable("no Docker engine answers (fake)")

    def start(self, spec: ReplicaSpec) -> Placed:
        self._check()
        handle = f"h{next(self._ids)}"
        replica = FakeReplica(spec.name, handle, f"fake:{handle}")
        if spec.name in self.failing or "*" in self.failing:
            replica.exit = Exit("exited with status 3", 3)
            replica.output = (
                b'2024-01-01T00:00:00.000Z event {"event": "load_failed", '
                b'"reason": "ModuleNotFoundError: no"}\n'
            )
        self.replicas[handle] = replica
        self.events.append(("start", spec.name))
        return Placed(replica.address, handle)

    def inspect(self, handle: str) -> Exit | None:
        # answered from what it heard (as Docker's runtime does from its event stream)
        replica = self.replicas.get(handle)
        return Exit("the process is gone") if replica is None else replica.exit

    def stop(self, handle: str) -> None:
        self._check()
        if self.stop_failures:
            self.stop_failures -= 1
            raise RuntimeUnavailable("the engine went away (fake)")
        replica = self.replicas.get(handle)
        if replica is not None and replica.exit is None:
            replica.exit = Exit("stopped", -15)
            self.events.append(("stop", replica.name))

    def remove(self, handle: str) -> None:
        self._check()
        replica = self.replicas.pop(handle, None)
        if replica is not None:
            replica.removed = True

    def adopt(self, name: str, handle: str) -> Placed | None:
        self._check()
        replica = self.replicas.get(handle)
        if replica is None or replica.name != name or replica.exit is not None:
            return None
        return Placed(replica.address, handle)

    def list_replicas(self) -> list[Found]:
        self._check()
        return [Found(r.name, r.handle, r.exit is None) for r in self.replicas.values()]

    def read_output(self, handle: str, offset: int, limit: int = 1 << 20) -> Output:
        replica = self.replicas.get(handle)
        data = replica.output[offset:] if replica else b""
        return Output(data, offset + len(data))

    def address(self, handle: str) -> str | None:
        replica = self.replicas.get(handle)
        if replica is None or not replica.relocated:
            return None
        replica.relocated = False
        return replica.address

    def moving(self, handle: str) -> bool:
        replica = self.replicas.get(handle)
        return replica is not None and replica.in_transit

    # -- what the tests do to it ------------------------------------------------------

    def move(self, name: str, *, landed: bool) -> None:
        """Its scheduler takes it off its node (``landed=False``), then runs it elsewhere."""
        for replica in self.replicas.values():
            if replica.name == name and replica.exit is None:
                replica.in_transit = not landed
                if landed:
                    replica.address += "-moved"
                    replica.relocated = True

    def running(self) -> list[str]:
        return sorted(r.name for r in self.replicas.values() if r.exit is None)

    def kill(self, name: str, exit: Exit | None = None) -> None:
        for replica in self.replicas.values():
            if replica.name == name and replica.exit is None:
                replica.exit = exit or Exit("killed (SIGKILL; out of memory or killed by hand)", -9)

    async def probe(self, address: str, timeout: float) -> bool:
        if self.slow:
            return False
        return any(r.address == address and r.exit is None for r in self.replicas.values())
