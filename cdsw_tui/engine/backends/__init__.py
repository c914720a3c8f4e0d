"""The runtime backends: one folder each, one registry line each.

A backend folder holds its builder (``builder.py``), its runtime (``runtime.py``) and,
in its ``__init__.py``, a ``BACKEND`` entry saying what it can do. Every list of
runtimes and every "advisory" note in the product derives from these entries, so
adding a backend is a new folder plus a line in ``REGISTRY`` below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cdsw_tui.errors import ValidationError

if TYPE_CHECKING:
    from cdsw_tui.engine.builder import Builder
    from cdsw_tui.engine.runs import Runner
    from cdsw_tui.engine.runtime import Runtime
    from cdsw_tui.engine.snapshot import SnapshotRepo

RESOURCES = ("cpu", "memory", "gpu")

# name -> the package of its folder (imported lazily: its __init__ must stay light)
REGISTRY: dict[str, str] = {
    "local": "cdsw_tui.engine.backends.local",
    "docker": "cdsw_tui.engine.backends.docker",
    "swarm": "cdsw_tui.engine.backends.swarm",
}


@dataclass(frozen=True)
class Backend:
    """What one backend is and can do; its builder and runtime are made on demand."""

    name: str
    label: str  # shown in forms: what the runtime is, in a few words
    package: str
    enforces: frozenset[str]  # resources the runtime holds a replica to
    engine_image: bool  # builds start from an engine image (a project setting)
    r: str  # where R comes from: "host" (Rscript on this machine) or "engine"
    spans_hosts: bool = False

    def advisory(self) -> list[str]:
        """Resources recorded but not enforced here."""
        return [r for r in RESOURCES if r not in self.enforces]

    def builder(self, snapshots: SnapshotRepo) -> Builder:
        return importlib.import_module(f"{self.package}.builder").make_builder(snapshots)

    def runtime(self, home: Path) -> Runtime:
        return importlib.import_module(f"{self.package}.runtime").make_runtime(home)

    def runner(self, home: Path) -> Runner:
        """What runs the project's scripts (jobs, one-off runs) on this runtime."""
        return importlib.import_module(f"{self.package}.runs").make_runner(home)

    def preflight(self) -> None:
        """Raise a CdswError saying what is missing, if the runtime's module checks."""
        check = getattr(importlib.import_module(f"{self.package}.runtime"), "preflight", None)
        if check is not None:
            check()

    def caveat(self) -> str:
        """What replicas of this runtime will lack compared with CDSW, in one line ("" when
        nothing), if the runtime's module says."""
        say = getattr(importlib.import_module(f"{self.package}.runtime"), "caveat", None)
        return say() if say is not None else ""

    def forget_steps(self, home: Path, keep: set[str]) -> list[str]:
        """Remove what the backend keeps for build steps outside the home (dependency
        images) that no build stands on and ``keep`` does not name; notes."""
        module = importlib.import_module(f"{self.package}.builder")
        forget = getattr(module, "forget_steps", None)
        return forget(home, keep) if forget else []

    def forget_model(self, home: Path, model_id: int) -> list[str]:
        """Remove what the backend keeps for a deleted model outside the home; notes."""
        module = importlib.import_module(f"{self.package}.builder")
        forget = getattr(module, "forget_model", None)
        return forget(home, model_id) if forget else []


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Backend:
    package = REGISTRY.get(name)
    if package is None:
        raise ValidationError(
            f"runtime must be one of {', '.join(REGISTRY)}, not {name!r}", field="runtime"
        )
    return importlib.import_module(package).BACKEND


def all_backends() -> list[Backend]:
    return [get(name) for name in REGISTRY]
