"""A project's applications (CML's Applications): each with its status, URL and restarts;
the selected one's live log. ``c`` copies its URL, ``s`` stops or starts it, ``r``
restarts it. Applications are made with ``cdsw-tui app create`` (the hint says so), by
an AMP's ``start_application`` task, or through ``cmlapi``."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Label

from cdsw_tui.output import printable
from cdsw_tui.screens.base import ListScreen
from cdsw_tui.store import Application, JobRun, pk
from cdsw_tui.widgets.log_view import LogView
from cdsw_tui.widgets.status import badge, dash, when


class AppRow:
    def __init__(self, app: Application, url: str, run: JobRun | None) -> None:
        self.app, self.url, self.run = app, url, run

    @property
    def name(self) -> str:
        return self.app.name


class AppsScreen(ListScreen):
    DEFAULT_CSS = "AppsScreen #apps-table { height: auto; max-height: 12; }"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="nav.back"),
        Binding("c", "copy_url", "Copy URL", id="apps.copy", tooltip="its URL to the clipboard"),
        Binding("s", "stop_start", "Stop/Start", id="apps.stop", tooltip="stop it, or start it"),
        Binding("r", "restart", "Restart", id="apps.restart", tooltip="stop and start it now"),
    ]

    def __init__(self, project_name: str) -> None:
        super().__init__(id=f"apps-{project_name}")
        self.project_name = project_name
        self.shown: int | None = None  # the run (start) whose log shows

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(
            f"Applications of [b]{self.project_name}[/b]", id="title", classes="screen-title"
        )
        table: DataTable = DataTable(id="apps-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("Application", "Status", "URL", "Restarts", "Started", "Script")
        yield table
        yield Label("", id="empty-hint", classes="hint")
        yield Label("", id="app-reason", classes="hint")
        yield LogView(self._log_files, id="app-log", sources=False)
        yield Footer()

    def load(self) -> list[AppRow]:
        from cdsw_tui.services import apps

        return [
            AppRow(a, apps.url(self.wb, a), apps.current_run(self.wb, a))
            for a in apps.list_apps(self.wb, self.project_name)
        ]

    def show(self, rows: list[AppRow]) -> None:
        cells = [
            (
                printable(r.name),
                badge(r.app.status),
                r.url,
                dash(r.app.restarts),
                when(r.app.started_at),
                printable(r.app.script),
            )
            for r in rows
        ]
        hint = (
            f"No applications yet: cdsw-tui app create {self.project_name}/NAME --script FILE "
            "(it serves on CDSW_APP_PORT)"
        )
        self.fill(rows, cells, [str(r.app.id) for r in rows], hint)
        self._show_selected()

    def _show_selected(self) -> None:
        row = self.selected()
        reason = self.query_one("#app-reason", Label)
        if row is None:
            reason.update("")
            return
        said = f"subdomain {row.app.subdomain}  ·  port {row.app.port}"
        reason.update(said + (f"  ·  {printable(row.app.reason)}" if row.app.reason else ""))
        newest = pk(row.run) if row.run else None
        if newest != self.shown:
            self.shown = newest
            self.query_one("#app-log", LogView).switch()

    def _log_files(self) -> list[Path]:
        return [self.wb.run_log_path(self.shown)] if self.shown is not None else []

    @on(DataTable.RowHighlighted, "#apps-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_selected()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("copy_url", "stop_start", "restart"):
            return self.selected() is not None
        return super().check_action(action, parameters)

    def action_copy_url(self) -> None:
        row = self.selected()
        if row is not None:
            self.app.copy_to_clipboard(row.url)
            self.notify(f"copied {row.url}")

    def action_stop_start(self) -> None:
        row = self.selected()
        if row is None:
            return
        from cdsw_tui.services import apps, background

        if row.app.desired == "stopped":

            def start() -> None:
                apps.start(self.wb, row.app)
                background.ensure(self.wb)

            self.run_service(start, done=f"application {row.name} starting")
        else:
            self.run_service(apps.stop, self.wb, row.app, done=f"application {row.name} stopping")

    def action_restart(self) -> None:
        row = self.selected()
        if row is None:
            return
        from cdsw_tui.services import apps, background

        def restart() -> None:
            apps.restart(self.wb, row.app)
            background.ensure(self.wb)

        self.run_service(restart, done=f"application {row.name} restarting")
