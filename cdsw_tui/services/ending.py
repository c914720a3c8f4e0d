"""How builds and runs end from the faces' side: a cancel (a queued one at once, a
running one by a flag the controller sees) and a wait that gives up, rather than
hanging, once no controller has run for a while (nothing would end it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cdsw_tui.errors import CdswError, NotFound
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import utcnow
from cdsw_tui.waiting import poll_until

CONTROLLER_GRACE = 3.0  # seconds without a controller before a wait gives up
Row = TypeVar("Row")


def cancel(wb: Workbench, table: type, row_id: Any, final: Sequence[str], label: str) -> Any:
    """``label`` names the row in messages ("build 3", "run 2")."""
    with wb.store.session() as s:
        row = s.get(table, row_id)
        if row is None:
            raise NotFound(f"{label} no longer exists")
        if row.status in final:
            raise CdswError(f"{label} is already {row.status}")
        if row.status == "queued":
            row.status = "cancelled"
            row.reason = "cancelled before it started"
            row.finished_at = utcnow()
        else:
            row.cancel_requested = True
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def wait(
    wb: Workbench,
    fetch: Callable[[], Row],
    final: Sequence[str],
    timeout: float | None,
    interval: float,
) -> tuple[Row, bool]:
    """The row once its status is final (or as it is after ``timeout``), and whether the
    wait ended because no controller ran to finish it."""
    from cdsw_tui.services.lock import state

    gone_since: list[float] = []

    def ended(row: Any) -> bool:
        if row.status in final:
            return True
        if state(wb.home).running:
            gone_since.clear()
        elif not gone_since:
            gone_since.append(time.monotonic())
        return bool(gone_since) and time.monotonic() - gone_since[0] > CONTROLLER_GRACE

    row = poll_until(fetch, timeout, done=ended, interval=interval)
    return row, getattr(row, "status", None) not in final and bool(gone_since)
