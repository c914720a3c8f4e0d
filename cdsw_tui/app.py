"""The Textual workbench: projects, models, builds, deployments and replicas by keyboard.

Screens talk to services only; anything slow (store polling, git, starting the
controller, calling a model) runs in thread workers so the screen never freezes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from textual import work
from textual.app import App
from textual.binding import Binding, BindingsMap
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen

from cdsw_tui.resources import assets_dir
from cdsw_tui.services.context import Workbench
from cdsw_tui.services.logwatch import LogWatcher
from cdsw_tui.widgets.workers import ReportsWorkerErrors


class JumpProvider(Provider):
    """The command palette: every project and model to jump to, and the app's actions."""

    async def startup(self) -> None:
        app = self.app
        assert isinstance(app, WorkbenchApp)
        import asyncio

        self.entries = await asyncio.to_thread(app.palette_entries)

    async def discover(self) -> Hits:
        for label, help_text, callback in self.entries[:40]:
            yield DiscoveryHit(label, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for label, help_text, callback in self.entries:
            score = matcher.match(label)
            if score > 0:
                yield Hit(score, matcher.highlight(label), callback, help=help_text)


class WorkbenchApp(ReportsWorkerErrors, App[None]):
    TITLE = "cdsw-tui"
    SUB_TITLE = "models as REST APIs"
    CSS_PATH = str(assets_dir() / "cdsw.tcss")
    COMMANDS = App.COMMANDS | {JumpProvider}
    BINDINGS = [
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", show=False),
    ]

    def __init__(self, wb: Workbench, *, start_controller: bool = True) -> None:
        super().__init__()
        self.wb = wb
        self.start_controller = start_controller
        self.log_watcher = LogWatcher(wb.home / "logs")  # the one watcher; log views subscribe
        self._since = datetime.now(UTC)

    def on_mount(self) -> None:
        from cdsw_tui.screens.projects import ProjectsScreen

        self.push_screen(ProjectsScreen())
        for warning in getattr(self.wb, "warnings", []):
            self.notify(warning, severity="warning", timeout=10)
        if self.start_controller:
            self._ensure_controller()
        self.set_interval(2.0, self._watch_events)

    def on_unmount(self) -> None:
        self.log_watcher.close()

    @work(thread=True, exclusive=True, group="controller", exit_on_error=False)
    def _ensure_controller(self) -> None:
        from cdsw_tui.services import background

        state, started = background.ensure(self.wb)  # a failure: ReportsWorkerErrors
        if started:
            self.call_from_thread(
                self.notify, f"started the controller in the background (pid {state.pid})"
            )

    @work(thread=True, exclusive=True, group="events", exit_on_error=False)
    def _watch_events(self) -> None:
        """A notification when a build or a deployment ends, wherever the user is."""
        from sqlalchemy import text

        since = self._since
        self._since = datetime.now(UTC)
        stamp = since.strftime("%Y-%m-%d %H:%M:%S.%f")
        with self.wb.store.engine.connect() as conn:
            finished_builds = conn.execute(
                text(
                    "SELECT p.name, m.name, b.number, b.status, b.reason FROM build b JOIN model m ON m.id = b.model_id "
                    "JOIN project p ON p.id = m.project_id WHERE b.finished_at >= :t"
                ),
                {"t": stamp},
            ).all()
            deployments = conn.execute(
                text(
                    "SELECT p.name, m.name, d.id, d.status, d.reason FROM deployment d JOIN model m ON m.id = d.model_id "
                    "JOIN project p ON p.id = m.project_id WHERE (d.deployed_at >= :t AND d.status = 'deployed') "
                    "OR (d.stopped_at >= :t AND d.status = 'failed')"
                ),
                {"t": stamp},
            ).all()
        for project, model, number, status, reason in finished_builds:
            severity = "information" if status == "built" else "error"
            message = f"{project}/{model}: build {number} {status}" + (
                f" ({reason})" if reason else ""
            )
            self.call_from_thread(self.notify, message, severity=severity, timeout=8)
        for project, model, dep_id, status, reason in deployments:
            severity = "information" if status == "deployed" else "error"
            message = f"{project}/{model}: deployment {dep_id} {status}" + (
                f" ({reason})" if reason else ""
            )
            self.call_from_thread(self.notify, message, severity=severity, timeout=8)

    def ensure_controller(self) -> None:
        """For workers that just asked for work: a controller must run to do it (unless this
        app was made without one, as tests that only look at screens do)."""
        if self.start_controller:
            from cdsw_tui.services import background

            background.ensure(self.wb)

    # -- navigation -------------------------------------------------------------------------

    def open_project(self, name: str) -> None:
        from cdsw_tui.screens.project import ProjectScreen

        self.push_screen(ProjectScreen(name))

    def open_model(self, ref: str, tab: str = "overview") -> None:
        from cdsw_tui.screens.model import ModelScreen

        self.push_screen(ModelScreen(ref, tab))

    def palette_entries(self) -> list[tuple[str, str, Callable[[], object]]]:
        from cdsw_tui.services import readmodels

        entries: list[tuple[str, str, Callable[[], object]]] = [
            (
                "New Project",
                "create a project from a folder or the quickstart template",
                self._new_project,
            ),
            (
                "Settings",
                "gateway port, default runtime, engine image, global variables",
                self.action_settings,
            ),
        ]
        for project in readmodels.projects(self.wb):
            entries.append(
                (
                    f"Project {project.name}",
                    f"{project.models} models · {project.runtime}",
                    partial(self.open_project, project.name),
                )
            )
        for model in readmodels.models(self.wb):
            ref = f"{model.project}/{model.name}"
            entries.append((f"Model {ref}", model.status, partial(self.open_model, ref)))
            entries.append(
                (
                    f"Test {ref}",
                    "open the Test Model pane",
                    partial(self.open_model, ref, "overview"),
                )
            )
            entries.append(
                (f"Logs of {ref}", "replica logs", partial(self.open_model, ref, "monitoring"))
            )
        return entries

    def _new_project(self) -> None:
        from cdsw_tui.screens.new_project import NewProjectScreen

        def created(name: str | None) -> None:
            if name:
                self.open_project(name)

        self.push_screen(NewProjectScreen(), created)

    def action_help(self) -> None:
        from cdsw_tui.screens.help import HelpScreen

        screen = self.screen
        title = type(screen).__name__.replace("Screen", "") or "cdsw-tui"
        self.push_screen(HelpScreen(title, self.keys_of(screen)))

    def keys_of(self, screen: Screen) -> list[tuple[str, str]]:
        """Every key the screen and what has focus answer, from their bindings: what
        the footer shows and what it has no room for."""
        declared = [
            binding
            for cls in reversed(type(screen).__mro__)
            for bindings in BindingsMap(getattr(cls, "BINDINGS", [])).key_to_bindings.values()
            for binding in bindings
            if "BINDINGS" in vars(cls)
        ]  # every key of the screen, also those that act on another tab
        active = [a.binding for a in screen.active_bindings.values()]  # focus chain, app
        keys: dict[str, tuple[str, str]] = {}
        for binding in [*declared, *active]:
            words = binding.description or binding.action
            if binding.tooltip:
                words = f"{words}: {binding.tooltip}"
            keys.setdefault(binding.action, (self.get_key_display(binding), words))
        return list(keys.values())

    def action_settings(self) -> None:
        from cdsw_tui.screens.settings import SettingsScreen

        self.push_screen(SettingsScreen())


def run_app(wb: Workbench) -> None:
    WorkbenchApp(wb).run()
