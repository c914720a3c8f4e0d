"""The one place where a worker's failure becomes what the user sees (Harlequin's
pattern): workers raise, this handler reports. A CdswError is its own one line; anything
else is one line too, with the traceback filed in ``<home>/logs/tui.log`` for whoever
asks. Mixed into every screen and widget that starts workers (Worker.StateChanged does
not bubble, so each worker's node receives it)."""

from __future__ import annotations

import os
import traceback
from datetime import UTC, datetime
from typing import cast

from textual.dom import DOMNode
from textual.worker import Worker, WorkerState

from cdsw_tui.errors import CdswError
from cdsw_tui.widgets.host import host


def file_traceback(home: os.PathLike | str, error: BaseException) -> str:
    """Append ``error``'s traceback to the TUI's log (ours, 0600, never a link); its path."""
    path = os.path.join(home, "logs", "tui.log")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} ")
        fh.write("".join(traceback.format_exception(error)))
    return path


class ReportsWorkerErrors:
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR or event.worker.error is None:
            return
        error = event.worker.error
        node = cast(DOMNode, self)  # mixed into screens
        if isinstance(error, CdswError):
            node.app.notify(error.message, severity="error", timeout=8)
            return
        try:
            where = f"; details in {file_traceback(host(node).wb.home, error)}"
        except OSError:
            where = ""
        node.app.notify(
            f"unexpected error: {type(error).__name__}: {error}"[:300] + where,
            severity="error",
            timeout=15,
        )
