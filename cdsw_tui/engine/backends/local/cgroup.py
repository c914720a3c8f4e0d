"""A cgroup per local replica, so ``--memory`` bounds its whole process tree (children,
daemons and its /dev/shm included) and the kernel says when it killed one for memory.

cgroup v2 where the host has it (the unified hierarchy with the memory controller),
else v1's memory and pids hierarchies, as this host mounts them; no systemd needed.
Each replica's group sits in ``cdsw-tui-<home id>`` at the hierarchy's top, made by
the controller (root). The jail's first process joins it before anything else runs.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PIDS_MAX = 1024


@dataclass(frozen=True)
class Layout:
    version: int  # 2, 1, or 0 for none
    memory: Path  # the hierarchy holding the memory controller
    pids: Path | None = None  # v1's pids hierarchy, if mounted


def _detect() -> Layout:
    unified = ROOT / "cgroup.controllers"
    if unified.is_file() and "memory" in unified.read_text().split():
        return Layout(2, ROOT)
    if (ROOT / "memory" / "memory.limit_in_bytes").is_file():
        pids = ROOT / "pids"
        return Layout(1, ROOT / "memory", pids if (pids / "cgroup.procs").is_file() else None)
    return Layout(0, ROOT)


_lock = threading.Lock()
_layout: Layout | None = None


def layout() -> Layout:
    global _layout
    with _lock:
        if _layout is None:
            _layout = _detect()
        return _layout


class Cgroups:
    """The replicas' cgroups of one home."""

    def __init__(self, home: Path) -> None:
        self.name = f"cdsw-tui-{hashlib.sha256(str(home).encode()).hexdigest()[:10]}"
        self.layout = layout()

    @property
    def available(self) -> bool:
        return self.layout.version in (1, 2) and os.geteuid() == 0

    def _groups(self, replica: str) -> list[Path]:
        found = [self.layout.memory / self.name / replica]
        if self.layout.pids is not None:
            found.append(self.layout.pids / self.name / replica)
        return found

    def make(self, replica: str, memory_mb: int) -> tuple[str, ...]:
        """A group bounding ``replica``'s tree to ``memory_mb`` (no swap) and PIDS_MAX
        processes; the cgroup.procs files its first process writes itself into."""
        if not self.available:
            return ()
        limit = str(memory_mb * 1024 * 1024)
        if self.layout.version == 2:
            top = self.layout.memory / self.name
            _enable(self.layout.memory)
            top.mkdir(exist_ok=True)
            _enable(top)
            group = top / replica
            group.mkdir(exist_ok=True)
            _write(group / "memory.max", limit)
            _write(group / "memory.swap.max", "0", missing_ok=True)
            _write(group / "pids.max", str(PIDS_MAX), missing_ok=True)
            return (str(group / "cgroup.procs"),)
        memory, *pids = self._groups(replica)
        memory.mkdir(parents=True, exist_ok=True)
        _write(memory / "memory.limit_in_bytes", limit)
        _write(memory / "memory.memsw.limit_in_bytes", limit, missing_ok=True)
        procs = [str(memory / "cgroup.procs")]
        for group in pids:
            group.mkdir(parents=True, exist_ok=True)
            _write(group / "pids.max", str(PIDS_MAX))
            procs.append(str(group / "cgroup.procs"))
        return tuple(procs)

    def oom_killed(self, replica: str) -> bool:
        """Whether the kernel killed a process of the group for its memory limit."""
        group = self.layout.memory / self.name / replica
        source = "memory.events" if self.layout.version == 2 else "memory.oom_control"
        try:
            for line in (group / source).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip() not in ("", "0"):
                    return True
        except OSError:
            pass
        return False

    def remove(self, replica: str) -> None:
        """Its groups, once its processes are gone (a group still in use stays)."""
        if not self.available:
            return
        for group in self._groups(replica):
            try:
                group.rmdir()
            except OSError:
                pass


def _enable(group: Path) -> None:
    for controller in ("+memory", "+pids"):
        try:
            _write(group / "cgroup.subtree_control", controller)
        except OSError:
            pass  # enabled already by whoever manages the parent, or not ours to change


def _write(path: Path, value: str, *, missing_ok: bool = False) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
