"""The controller, as the faces see it: is it running, and start it if not."""

from __future__ import annotations

from cdsw_tui.controller.lock import ControllerState, state
from cdsw_tui.controller.spawn import ensure_running
from cdsw_tui.services.context import Workbench


def status(wb: Workbench) -> ControllerState:
    return state(wb.home)


def ensure(wb: Workbench) -> tuple[ControllerState, bool]:
    """Returns the state and whether this call started the controller."""
    return ensure_running(wb)
