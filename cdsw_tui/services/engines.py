"""Engine images for the runtimes that build from one (Docker's): make and list them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def build(tag: str, *, with_r: bool, log: Callable[[str], None]) -> str:
    from cdsw_tui.engine.backends.docker.images import build_engine

    return build_engine(tag, with_r=with_r, log=log)


def list_engines() -> list[dict]:
    from cdsw_tui.engine.backends.docker.images import list_engines as listing

    return listing()


def start_registry(home: Path, port: int) -> tuple[str, bool]:
    """This home's own image registry for the swarm runtime: (address, newly started)."""
    from cdsw_tui.engine.backends.swarm.registry import start

    return start(home, port)


def stop_registry(home: Path) -> str:
    """Stop this home's registry; the address it had, or "" if none ran."""
    from cdsw_tui.engine.backends.swarm.registry import stop

    return stop(home)
