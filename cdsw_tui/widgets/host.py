"""What screens and widgets may ask of the app they run in, typed: the workbench, the one
log watcher, the controller, and navigation. Screens sit below the app and cannot import
it; WorkbenchApp has all of this."""

from __future__ import annotations

from typing import Protocol, cast

from textual.dom import DOMNode

from cdsw_tui.services.context import Workbench
from cdsw_tui.services.logwatch import LogWatcher


class Host(Protocol):
    wb: Workbench
    log_watcher: LogWatcher

    def ensure_controller(self) -> None: ...

    def open_project(self, name: str) -> None: ...

    def open_model(self, ref: str, tab: str = "overview") -> None: ...


def host(node: DOMNode) -> Host:
    """The app ``node`` runs in, as a Host."""
    return cast(Host, node.app)
