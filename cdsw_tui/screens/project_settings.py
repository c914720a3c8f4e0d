"""Project settings: runtime, engine image, placement constraints and the project's
environment variables."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Label, Select, TextArea

from cdsw_tui.errors import CdswError
from cdsw_tui.screens.forms import Field, mark_error
from cdsw_tui.screens.help import Dialog
from cdsw_tui.services import runtimes
from cdsw_tui.store import Project, pk
from cdsw_tui.widgets.host import host
from cdsw_tui.widgets.workers import ReportsWorkerErrors


def env_text(values: dict[str, str]) -> str:
    """K=V lines; values of names that look secret are masked (the mask keeps them on save)."""
    from cdsw_tui.services.env import SECRET_MASK, looks_secret

    return "\n".join(
        f"{k}={SECRET_MASK if looks_secret(k) and v else v}" for k, v in values.items()
    )


def parse_env(text: str) -> dict[str, str]:
    from cdsw_tui.services import validation as v

    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return v.env_pairs(lines)


class ProjectSettingsScreen(ReportsWorkerErrors, Dialog[None]):
    DEFAULT_CSS = """
    ProjectSettingsScreen { align: center middle; }
    ProjectSettingsScreen > VerticalScroll { width: 80; max-width: 100%; height: auto; max-height: 90%; border: thick $primary; background: $surface; padding: 1 2; }
    ProjectSettingsScreen TextArea { height: 8; }
    ProjectSettingsScreen #placement { height: 4; }
    ProjectSettingsScreen Horizontal { height: auto; align-horizontal: right; }
    ProjectSettingsScreen Button { margin-left: 2; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "save", "Save", id="form.submit"),
    ]

    def __init__(self, project_name: str) -> None:
        super().__init__()
        self.project_name = project_name

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label(f"[b]Settings of project {self.project_name}[/b]")
            yield Field(
                "Runtime",
                Select(runtimes.choices(), allow_blank=False, id="runtime"),
                name="runtime",
            )
            yield Field("Engine image", Input(id="engine"), name="engine")
            yield Field(
                "Placement constraints (swarm; one a line, e.g. node.labels.gpu==true)",
                TextArea(id="placement"),
                name="placement",
            )
            yield Field("Environment variables (K=V, one a line)", TextArea(id="env"), name="env")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Save (ctrl+s)", id="save", variant="primary")

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exit_on_error=False)
    def _load(self) -> None:
        from cdsw_tui.services import env, projects

        wb = host(self).wb
        project = projects.get(wb, self.project_name)
        values = env.list_vars(wb, "project", pk(project))
        self.app.call_from_thread(self._fill, project, values)

    def _fill(self, project: Project, values: dict[str, str]) -> None:
        self.query_one("#runtime", Select).value = project.runtime
        self.query_one("#engine", Input).value = project.engine
        self.query_one("#placement", TextArea).text = project.placement
        self.query_one("#env", TextArea).text = env_text(values)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        try:
            values = parse_env(self.query_one("#env", TextArea).text)
        except CdswError as exc:
            mark_error(self, "env", exc.message)
            return
        placement = self.query_one("#placement", TextArea).text.splitlines()
        self._save(
            str(self.query_one("#runtime", Select).value),
            self.query_one("#engine", Input).value,
            [line for line in placement if line.strip()],
            values,
        )

    @work(thread=True, exit_on_error=False)
    def _save(
        self, runtime: str, engine: str, placement: list[str], values: dict[str, str]
    ) -> None:
        from cdsw_tui.services import env, projects

        wb = host(self).wb
        try:
            project = projects.update(
                wb, self.project_name, runtime=runtime, engine=engine.strip(), placement=placement
            )
            env.replace_vars(wb, "project", pk(project), values)
        except CdswError as exc:
            self.app.call_from_thread(mark_error, self, exc.field, exc.message)
            return
        self.app.call_from_thread(self.notify, f"settings of {self.project_name} saved")
        self.app.call_from_thread(self.dismiss, None)
