"""Re-deploy a build: the form opens with the build and the resources prefilled."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, TextArea

from cdsw_tui.errors import CdswError
from cdsw_tui.screens.forms import Field, mark_error
from cdsw_tui.screens.project_settings import env_text, parse_env


class DeployScreen(ModalScreen[int | None]):
    DEFAULT_CSS = """
    DeployScreen { align: center middle; }
    DeployScreen > VerticalScroll { width: 80; height: auto; max-height: 90%; border: thick $primary; background: $surface; padding: 1 2; }
    DeployScreen #resources { height: auto; }
    DeployScreen #resources Field { width: 1fr; margin-right: 1; }
    DeployScreen TextArea { height: 4; }
    DeployScreen #buttons { height: auto; align-horizontal: right; }
    DeployScreen Button { margin-left: 2; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "deploy", "Deploy", id="form.submit"),
    ]

    def __init__(
        self, ref: str, build: int | None, previous, built: list[int], env: dict[str, str]
    ) -> None:
        super().__init__()
        self.ref = ref
        self.build = build
        self.previous = previous
        self.previous_env = env  # the previous deployment's variables, unsealed
        self.built = built

    def compose(self) -> ComposeResult:
        p = self.previous
        builds = [(f"build {n}", n) for n in self.built]
        value = (
            self.build
            if self.build in self.built
            else (self.built[0] if self.built else Select.BLANK)
        )
        with VerticalScroll():
            yield Label(f"[b]Re-deploy[/b] {self.ref}")
            yield Field(
                "Build",
                Select(builds, value=value, allow_blank=not builds, id="build"),
                name="build",
            )
            with Horizontal(id="resources"):
                yield Field(
                    "Replicas",
                    Input(str(p.replicas), id="replicas", type="integer"),
                    name="replicas",
                )
                yield Field("CPU", Input(f"{p.cpu:g}", id="cpu", type="number"), name="cpu")
                yield Field(
                    "Memory (MB)", Input(str(p.memory), id="memory", type="integer"), name="memory"
                )
                yield Field("GPU", Input(str(p.gpu), id="gpu", type="integer"), name="gpu")
            yield Field(
                "Deployment variables (K=V)",
                TextArea(env_text(self.previous_env), id="env"),
                name="env",
            )
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Deploy (ctrl+s)", id="deploy", variant="primary")

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#deploy")
    def action_deploy(self) -> None:
        from cdsw_tui.services import env as env_service

        build = self.query_one("#build", Select).value
        if build in (Select.BLANK, None):
            mark_error(self, "build", "there is no built build to deploy")
            return
        try:
            env = env_service.keep_masked(
                parse_env(self.query_one("#env", TextArea).text),
                self.previous_env,
            )
        except CdswError as exc:
            mark_error(self, "env", exc.message)
            return
        values = {
            k: self.query_one(f"#{k}", Input).value for k in ("replicas", "cpu", "memory", "gpu")
        }
        self._deploy(int(build), values, env)  # type: ignore[arg-type]

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _deploy(self, build: int, values: dict[str, str], env: dict[str, str]) -> None:
        from cdsw_tui.services import deployments, models

        wb = self.app.wb  # type: ignore[attr-defined]
        try:
            asked = deployments.request(
                wb, models.resolve(wb, self.ref), build_number=build, env=env, **values
            )
            self.app.ensure_controller()  # type: ignore[attr-defined]
        except CdswError as exc:
            self.app.call_from_thread(self._error, exc)
            return
        d = asked.deployment
        assert d is not None
        self.app.call_from_thread(self.notify, f"deployment {d.id} of build {build} pending")
        self.app.call_from_thread(self.dismiss, int(d.id))

    def _error(self, exc: CdswError) -> None:
        if not mark_error(self, exc.field, exc.message):
            self.notify(exc.message, severity="error")
