"""Builds: the model's builds, newest first, and the log of the selected one."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label

from cdsw_tui.output import printable
from cdsw_tui.screens.base import update_rows
from cdsw_tui.screens.model.tab import ModelTab
from cdsw_tui.services import builds
from cdsw_tui.services.readmodels import ModelDetail
from cdsw_tui.store import pk
from cdsw_tui.widgets.log_view import LogView
from cdsw_tui.widgets.status import badge, when

RUNNING = ("queued", "building")


class BuildsTab(Vertical, ModelTab):
    DEFAULT_CSS = "BuildsTab #builds-table { height: 12; }"
    ACTIONS = ("cancel_build", "log")
    FOCUS = "#builds-table"

    def __init__(self) -> None:
        super().__init__()
        self.selected: int | None = None  # the build whose log shows
        self.awaited: int | None = None  # a build newer than this is asked for: show it

    def compose(self) -> ComposeResult:
        table: DataTable = DataTable(id="builds-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("Build", "Status", "Created", "Duration", "Snapshot", "Comment", "Reason")
        yield table
        yield Label("", id="build-log-title")
        yield LogView(self._log_files, id="build-log", sources=False)

    def show(self, detail: ModelDetail) -> None:
        rows = []
        for b in detail.builds:
            duration = builds.duration(b)
            rows.append(
                (
                    str(b.number),
                    badge(b.status),
                    when(b.created_at),
                    f"{duration:.1f} s" if duration is not None else "-",
                    b.snapshot[:10],
                    b.comment,
                    printable(b.reason),
                )
            )
        update_rows(
            self.query_one("#builds-table", DataTable), [str(b.number) for b in detail.builds], rows
        )
        newest = detail.builds[0].number if detail.builds else None
        if newest is not None and self.awaited is not None and newest > self.awaited:
            self.awaited = None  # the asked-for build is here: its log, its row
            self.select(newest)
            self.query_one("#builds-table", DataTable).move_cursor(row=0)
        elif self.selected is None and newest is not None:
            self.select(newest)

    def can(self, action: str, detail: ModelDetail | None) -> bool:
        if action == "cancel_build":
            return detail is not None and any(b.status in RUNNING for b in detail.builds)
        return True

    def await_build_after(self, number: int) -> None:
        """A build newer than ``number`` is being asked for: show its log once it is read
        (before: the log stayed on the build shown when it was asked)."""
        self.awaited = number

    def select(self, number: int) -> None:
        """Show the log of build ``number``."""
        self.selected = number
        view = self.query_one("#build-log", LogView)
        view.buffer.clear()
        view.redraw()
        view.tail()
        self.query_one("#build-log-title", Label).update(f"Log of build {number}")

    def _log_files(self) -> list[Path]:
        if self.detail is None or self.selected is None:
            return []
        return [self.wb.build_log_path(pk(self.detail.model), self.selected)]

    @on(DataTable.RowHighlighted, "#builds-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or event.row_key.value is None:
            return
        number = int(event.row_key.value)
        if number != self.selected:
            self.select(number)

    def action_cancel_build(self) -> None:
        if self.detail is None:
            return
        running = [b for b in self.detail.builds if b.status in RUNNING]
        chosen = next(
            (b for b in running if b.number == self.selected), running[0] if running else None
        )
        if chosen is not None:
            self.model_screen.run_service(
                builds.cancel, self.wb, chosen, done=f"build {chosen.number} cancelling"
            )

    def action_log(self, name: str) -> None:
        getattr(self.query_one("#build-log", LogView), f"action_{name}")()
