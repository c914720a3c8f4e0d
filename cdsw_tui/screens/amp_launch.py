"""An AMP's launch: its tasks in order, filling in as the controller runs them (status,
time, what each made), and the log of the selected task's run, build or application.
``g`` goes on from a failed task (``cdsw-tui amp run``)."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Label

from cdsw_tui.output import printable
from cdsw_tui.screens.base import ListScreen
from cdsw_tui.store import AmpTask
from cdsw_tui.widgets.log_view import LogView
from cdsw_tui.widgets.status import badge, dash


class TaskRow:
    def __init__(self, task: AmpTask, log: Path | None) -> None:
        self.task, self.log = task, log


class AmpLaunchScreen(ListScreen):
    DEFAULT_CSS = "AmpLaunchScreen #tasks-table { height: auto; max-height: 14; }"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="nav.back"),
        Binding("g", "go_on", "Go On", id="amp.go_on", tooltip="run the failed task again"),
    ]

    def __init__(self, project_name: str) -> None:
        super().__init__(id=f"amp-{project_name}")
        self.project_name = project_name
        self.state = ""
        self.shown: Path | None = None
        self.pointed = False  # the cursor was put on the failed task once

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(f"AMP launch of [b]{self.project_name}[/b]", id="title", classes="screen-title")
        table: DataTable = DataTable(id="tasks-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("#", "Task", "Name", "Status", "Took", "Result")
        yield table
        yield Label("", id="empty-hint", classes="hint")
        yield Label("", id="launch-state", classes="hint")
        yield LogView(self._log_files, id="task-log", sources=False)
        yield Footer()

    def load(self) -> tuple[str, list[TaskRow]]:
        from cdsw_tui.services import amps, projects

        project = projects.get(self.wb, self.project_name)
        tasks = amps.tasks_of(self.wb, project)
        return amps.state(self.wb, project), [TaskRow(t, amps.log_path(self.wb, t)) for t in tasks]

    def show(self, data: tuple[str, list[TaskRow]]) -> None:
        from cdsw_tui.services import amps

        self.state, rows = data
        cells = [
            (
                str(r.task.position + 1),
                r.task.type,
                printable(r.task.name),
                badge(r.task.status),
                dash(amps.took(r.task)),
                printable(r.task.detail),
            )
            for r in rows
        ]
        self.fill(rows, cells, [str(r.task.id) for r in rows], "This project has no AMP tasks.")
        words = {
            "running": "Launching: the controller runs the tasks in order.",
            "failed": "Stopped at a failed task: fix it, then g goes on from there.",
            "succeeded": f"Launched: all {len(rows)} tasks succeeded.",
        }
        self.query_one("#launch-state", Label).update(words.get(self.state, ""))
        failed = [i for i, r in enumerate(rows) if r.task.status == "failed"]
        if failed and not self.pointed:
            self.pointed = True
            self.query_one(DataTable).move_cursor(row=failed[0])
        self._show_selected()
        self.refresh_bindings()

    def _show_selected(self) -> None:
        row = self.selected()
        log = row.log if row is not None else None
        if log != self.shown:
            self.shown = log
            self.query_one("#task-log", LogView).switch()

    def _log_files(self) -> list[Path]:
        return [self.shown] if self.shown is not None else []

    @on(DataTable.RowHighlighted, "#tasks-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "go_on":
            return self.state == "failed"
        return super().check_action(action, parameters)

    def action_go_on(self) -> None:
        from cdsw_tui.services import amps, background, projects

        def go_on() -> None:
            amps.resume(self.wb, projects.get(self.wb, self.project_name))
            background.ensure(self.wb)

        self.run_service(go_on, done="going on from the failed task")
