"""The runtimes the faces may offer, and what each enforces, from the backend registry."""

from __future__ import annotations

from cdsw_tui.engine import backends
from cdsw_tui.errors import CdswError, ValidationError


def names() -> tuple[str, ...]:
    return backends.names()


def choices() -> list[tuple[str, str]]:
    """(label, name) of every runtime, for a form's select."""
    return [(b.label, b.name) for b in backends.all_backends()]


def advisory(runtime: str) -> list[str]:
    """Resources recorded but not enforced on ``runtime`` (empty for an unknown one)."""
    try:
        return backends.get(runtime).advisory()
    except Exception:  # a runtime no longer registered: nothing to say
        return []


def uses_engine(runtime: str) -> bool:
    try:
        return backends.get(runtime).engine_image
    except Exception:  # a runtime no longer registered
        return False


def r_from_host(runtime: str) -> bool:
    """R models of ``runtime`` use this machine's Rscript (not an engine's)."""
    try:
        return backends.get(runtime).r == "host"
    except Exception:  # a runtime no longer registered
        return False


def uses_python(runtime: str) -> bool:
    """Builds of ``runtime`` make environments with an interpreter of this machine's."""
    try:
        return not backends.get(runtime).engine_image
    except Exception:  # a runtime no longer registered
        return False


def preflight(runtime: str) -> None:
    """One clear line now, before anything is written, if ``runtime`` cannot work here
    (the swarm runtime on an engine that is no swarm manager)."""
    try:
        backends.get(runtime).preflight()
    except CdswError as exc:
        raise ValidationError(exc.message, field="runtime") from None


def caveat(runtime: str) -> str:
    """What replicas of ``runtime`` lack here compared with CDSW ("" when nothing)."""
    try:
        return backends.get(runtime).caveat()
    except Exception:  # a runtime no longer registered: nothing to say
        return ""
