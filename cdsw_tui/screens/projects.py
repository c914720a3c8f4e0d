"""The first screen: every project, with its runtime, engine, models and last build."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Label

from cdsw_tui.output import count
from cdsw_tui.screens.base import ListScreen
from cdsw_tui.services import runtimes
from cdsw_tui.widgets.status import when


class ProjectsScreen(ListScreen):
    BINDINGS = [
        Binding("n", "new_project", "New Project", id="projects.new"),
        Binding("enter", "open", "Open", id="projects.open", show=True),
        Binding(
            "d", "delete", "Delete", id="projects.delete", tooltip="delete the selected project"
        ),
        Binding(
            "s",
            "app.settings",
            "Settings",
            id="app.settings",
            tooltip="global settings and variables",
        ),
        Binding("q", "app.quit", "Quit", id="app.quit"),
    ]

    def __init__(self) -> None:
        super().__init__(id="projects")

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Projects", classes="screen-title")
        table: DataTable = DataTable(id="projects-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("Name", "Runtime", "Engine", "Models", "Last build")
        yield table
        yield Label("", id="empty-hint", classes="hint")
        yield Footer()

    def load(self) -> list:
        from cdsw_tui.services import readmodels

        return readmodels.projects(self.wb)

    def show(self, rows: list) -> None:
        cells = [
            (
                r.name,
                r.runtime,
                r.engine if runtimes.uses_engine(r.runtime) else "-",
                str(r.models),
                when(r.last_build),
            )
            for r in rows
        ]
        self.fill(
            rows,
            cells,
            [str(r.id) for r in rows],
            "No projects yet. Press n to create one from the quickstart template.",
        )

    def action_open(self) -> None:
        row = self.selected()
        if row is not None:
            self.workbench.open_project(row.name)

    def action_new_project(self) -> None:
        from cdsw_tui.screens.new_project import NewProjectScreen

        form = NewProjectScreen()

        def created(name: str | None) -> None:
            if name:
                self.notify(f"project {name} created" + (": launching" if form.launched else ""))
                self.workbench.open_project(name)
                if form.launched:
                    from cdsw_tui.screens.amp_launch import AmpLaunchScreen

                    self.app.push_screen(AmpLaunchScreen(name))

        self.app.push_screen(form, created)

    def action_delete(self) -> None:
        row = self.selected()
        if row is None:
            return
        from cdsw_tui.services import artifacts, deployments, projects

        copy: list[Path] = []  # the template's copy, found with the question

        def question() -> str:
            stops = artifacts.stops_words(self.wb, projects.models_of(self.wb, row.name))
            copy[:] = [c] if (c := projects.template_copy(self.wb, row.name)) else []
            return (
                f"Delete project {row.name} with its {count(row.models, 'model')}, their builds "
                f"and logs{stops}? "
                + (
                    "You are asked next whether its folder, the template's copy, goes too."
                    if copy
                    else "The folder itself stays."
                )
            )

        def delete() -> None:
            deployments.delete_project(self.wb, row.name)
            if copy:  # offered once the project is gone
                self.app.call_from_thread(
                    self.ask,
                    f"Also remove {copy[0]}, the folder the template was copied into? "
                    "(Keep it to make a project of it again with its own folder.)",
                    "Remove folder",
                    lambda: projects.remove_copy(copy[0]),
                    f"{copy[0]} removed",
                )

        self.ask(question, "Delete", delete, done=f"project {row.name} deleted")
