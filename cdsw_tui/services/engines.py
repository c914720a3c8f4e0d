"""Engine images for the runtimes that build from one (Docker's): make and list them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def build(
    tag: str | None, *, base: str, with_r: bool, suite: str | None, log: Callable[[str], None]
) -> tuple[str, str]:
    """Make an engine image (named from ``base``, the ENGINE_IMAGE setting, unless ``tag``
    is given) of a Debian suite; (its tag, its image id)."""
    from cdsw_tui.engine.backends.docker.images import build_engine, check_suite, default_tag

    if suite is not None:
        check_suite(suite)  # before a name is made from it
    tag = tag or default_tag(base, with_r=with_r, suite_name=suite)
    return tag, build_engine(tag, with_r=with_r, suite_name=suite, log=log)


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
