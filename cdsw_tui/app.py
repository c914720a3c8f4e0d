"""The Textual workbench. This first version lists projects and their models; the full
set of screens (model tabs, Test Model pane, logs) grows from here."""

from __future__ import annotations

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from cdsw_tui.services.context import Workbench


class WorkbenchApp(App[None]):
    TITLE = "cdsw-tui"
    SUB_TITLE = "models as REST APIs"
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("r", "refresh", "Refresh", id="refresh"),
    ]
    CSS = """
    #projects { height: 1fr; }
    #models { height: 2fr; }
    #hint { color: $text-muted; padding: 0 1; }
    """

    def __init__(self, wb: Workbench) -> None:
        super().__init__()
        self.wb = wb

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Projects", id="hint")
        yield DataTable(id="projects", cursor_type="row", zebra_stripes=True)
        yield Static("Models", classes="hint")
        yield DataTable(id="models", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#projects", DataTable).add_columns("Name", "Runtime", "Models", "Path")
        self.query_one("#models", DataTable).add_columns(
            "Project", "Model", "Status", "Build", "File", "Function"
        )
        self.action_refresh()

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="load")
    def load(self) -> None:
        from cdsw_tui.services import models, projects

        counts = projects.model_counts(self.wb)
        project_rows = [
            (p.name, p.runtime, str(counts.get(p.id, 0)), p.path)
            for p in projects.list_all(self.wb)
        ]
        model_rows = []
        for m in models.list_models(self.wb):
            build = models.latest_build(self.wb, m)
            model_rows.append(
                (
                    models.project_of(self.wb, m).name,
                    m.name,
                    models.status(self.wb, m),
                    str(build.number) if build else "-",
                    m.file,
                    m.function,
                )
            )
        self.call_from_thread(self._show, project_rows, model_rows)

    def _show(self, project_rows: list[tuple], model_rows: list[tuple]) -> None:
        for table_id, rows in (("#projects", project_rows), ("#models", model_rows)):
            table = self.query_one(table_id, DataTable)
            table.clear()
            table.add_rows(rows)


def run_app(wb: Workbench) -> None:
    WorkbenchApp(wb).run()
