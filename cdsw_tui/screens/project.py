"""A project: its models with status, build, deployment and replicas; its settings."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Label

from cdsw_tui.screens.base import ListScreen
from cdsw_tui.services import runtimes
from cdsw_tui.widgets.status import badge, dash, when


class ProjectScreen(ListScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="nav.back"),
        Binding("n", "new_model", "New Model", id="project.new_model"),
        Binding("enter", "open", "Open", id="project.open"),
        Binding(
            "e",
            "settings",
            "Project Settings",
            id="project.settings",
            tooltip="engine, runtime, environment",
        ),
        Binding("j", "jobs", "Jobs", id="project.jobs", tooltip="the project's jobs and runs"),
        Binding("a", "apps", "Applications", id="project.apps", tooltip="the project's web apps"),
        Binding(
            "d",
            "delete",
            "Delete Model",
            id="project.delete_model",
            tooltip="delete the selected model",
        ),
    ]

    def __init__(self, project_name: str) -> None:
        super().__init__(id=f"project-{project_name}")
        self.project_name = project_name
        self.project = None
        self.has_amp = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(f"Project [b]{self.project_name}[/b]", id="title", classes="screen-title")
        yield Label("", id="project-info", classes="hint")
        table: DataTable = DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(
            "Model", "Status", "Build", "Deployment", "Replicas", "Last change", "File", "Function"
        )
        yield table
        yield Label("", id="empty-hint", classes="hint")
        yield Footer()

    def load(self) -> tuple:
        from cdsw_tui.services import amps, projects, readmodels

        project = projects.get(self.wb, self.project_name)
        has_amp = bool(amps.tasks_of(self.wb, project))
        return project, readmodels.models(self.wb, project.id), has_amp

    def show(self, data: tuple) -> None:
        project, rows, has_amp = data
        self.project = project
        if has_amp != self.has_amp:
            self.has_amp = has_amp
            self.refresh_bindings()
        self.query_one("#project-info", Label).update(
            f"{project.path}  ·  runtime {project.runtime}"
            + (f"  ·  engine {project.engine}" if runtimes.uses_engine(project.runtime) else "")
        )
        cells = [
            (
                r.name,
                badge(r.status),
                serving(r.serving_build, r.build),
                dash(r.deployment),
                dash(r.replicas),
                when(r.updated),
                r.file,
                r.function,
            )
            for r in rows
        ]
        self.fill(rows, cells, [str(r.id) for r in rows], "No models yet. Press n for New Model.")

    def action_open(self) -> None:
        row = self.selected()
        if row is not None:
            self.workbench.open_model(f"{self.project_name}/{row.name}")

    def action_new_model(self) -> None:
        from cdsw_tui.screens.new_model import NewModelScreen

        self.app.push_screen(NewModelScreen(self.project_name))

    def action_jobs(self) -> None:
        from cdsw_tui.screens.jobs import JobsScreen

        self.app.push_screen(JobsScreen(self.project_name))

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "amp":
            return self.has_amp
        return super().check_action(action, parameters)

    def action_amp(self) -> None:
        from cdsw_tui.screens.amp_launch import AmpLaunchScreen

        self.app.push_screen(AmpLaunchScreen(self.project_name))

    def action_apps(self) -> None:
        from cdsw_tui.screens.apps import AppsScreen

        self.app.push_screen(AppsScreen(self.project_name))

    def action_settings(self) -> None:
        from cdsw_tui.screens.project_settings import ProjectSettingsScreen

        self.app.push_screen(ProjectSettingsScreen(self.project_name))

    def action_delete(self) -> None:
        row = self.selected()
        if row is None:
            return
        from cdsw_tui.services import artifacts, deployments, models

        ref = f"{self.project_name}/{row.name}"

        def question() -> str:
            stops = artifacts.stops_words(self.wb, [models.resolve(self.wb, ref)])
            return f"Delete model {row.name} with its builds and logs{stops}?"

        self.ask(
            question,
            "Delete",
            lambda: deployments.delete_model(self.wb, models.resolve(self.wb, ref)),
            done=f"model {row.name} deleted",
        )


def serving(build: int | None, newest: int | None) -> str:
    """The build that runs (else the newest built), and the newest when it is another:
    the model screen's Build field says the same."""
    if build is None:
        return dash(newest)
    return str(build) if newest in (None, build) else f"{build} (newest {newest})"
