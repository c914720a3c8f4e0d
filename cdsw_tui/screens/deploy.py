"""Deploy New Build and Re-deploy, one form as in CDSW: comment, build (a new one from
the code as it is now, or a built one), replicas, cpu, memory, gpu and deployment
variables, carried over from the deployment it starts from."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Label, Select, TextArea

from cdsw_tui.errors import CdswError
from cdsw_tui.screens.forms import Field, mark_error, show_error
from cdsw_tui.screens.help import Dialog
from cdsw_tui.screens.project_settings import env_text, parse_env
from cdsw_tui.store import Deployment, Model, pk
from cdsw_tui.widgets.host import host
from cdsw_tui.widgets.workers import ReportsWorkerErrors

NEW_BUILD = 0  # the Build select's value for "a new build of the code as it is now"


class DeployScreen(ReportsWorkerErrors, Dialog[int | None]):
    DEFAULT_CSS = """
    DeployScreen { align: center middle; }
    DeployScreen > VerticalScroll { width: 80; max-width: 100%; height: auto; max-height: 90%; border: thick $primary; background: $surface; padding: 1 2; }
    DeployScreen #resources { height: auto; }
    DeployScreen #resources Field { width: 1fr; margin-right: 1; }
    DeployScreen TextArea { height: 4; }
    DeployScreen #buttons { height: auto; align-horizontal: right; }
    DeployScreen Button { margin-left: 2; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "deploy", "Deploy", id="form.submit", tooltip="deploy as filled in"),
    ]
    AUTO_FOCUS = "#comment"

    def __init__(
        self,
        ref: str,
        build: int | None,
        previous: Deployment | Model,
        built: list[int],
        env: dict[str, str],
        replicas: int | None = None,
    ) -> None:
        super().__init__()
        self.replicas = replicas or previous.replicas  # the running deployment's, for `r`
        self.ref = ref
        self.build = build
        self.previous = previous
        self.previous_env = env  # the previous deployment's variables, unsealed
        self.built = built

    def compose(self) -> ComposeResult:
        p = self.previous
        builds = [("a new build of the code as it is now", NEW_BUILD)]
        builds += [(f"build {n}", n) for n in self.built]
        value = self.build if self.build in self.built else NEW_BUILD
        title = "Deploy New Build" if value == NEW_BUILD else "Re-deploy"
        with VerticalScroll():
            yield Label(f"[b]{title}[/b] {self.ref}", id="form-title")
            yield Field(
                "Comment",
                Input(placeholder="what changed (optional)", id="comment"),
                name="comment",
            )
            yield Field(
                "Build", Select(builds, value=value, allow_blank=False, id="build"), name="build"
            )
            with Horizontal(id="resources"):
                yield Field(
                    "Replicas",
                    Input(str(self.replicas), id="replicas", type="integer"),
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
        comment = self.query_one("#comment", Input).value.strip()
        assert isinstance(build, int)  # allow_blank=False: always one of the choices
        self._deploy(build, comment, values, env)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _deploy(
        self, build: int, comment: str, values: dict[str, str], env: dict[str, str]
    ) -> None:
        from cdsw_tui.services import deployments, models

        wb = host(self).wb
        try:
            asked = deployments.request(
                wb,
                models.resolve(wb, self.ref),
                new_build=build == NEW_BUILD,
                build_number=None if build == NEW_BUILD else build,
                comment=comment or ("Deploy New Build" if build == NEW_BUILD else ""),
                env=env,
                **values,
            )
            host(self).ensure_controller()
        except CdswError as exc:
            self.app.call_from_thread(show_error, self, exc)
            return
        if asked.deployment is None:
            assert asked.build is not None
            said = f"build {asked.build.number} queued; it deploys once built"
            self.app.call_from_thread(self.notify, said)
            self.app.call_from_thread(self.dismiss, 0)
            return
        d = asked.deployment
        self.app.call_from_thread(self.notify, f"deployment {d.id} of build {build} pending")
        self.app.call_from_thread(self.dismiss, pk(d))


class ScaleScreen(ReportsWorkerErrors, Dialog[int | None]):
    """Scale the running deployment: a new replica count, no new build or deployment
    (kubectl scale, docker service scale)."""

    DEFAULT_CSS = """
    ScaleScreen { align: center middle; }
    ScaleScreen > VerticalScroll { width: 60; max-width: 100%; height: auto; border: thick $primary; background: $surface; padding: 1 2; }
    ScaleScreen #buttons { height: auto; align-horizontal: right; }
    ScaleScreen Button { margin-left: 2; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "scale", "Scale", id="form.submit", tooltip="scale as filled in"),
    ]
    AUTO_FOCUS = "#replicas"

    def __init__(self, ref: str, deployment_id: int, replicas: int) -> None:
        super().__init__()
        self.ref = ref
        self.deployment_id = deployment_id
        self.replicas = replicas

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label(
                f"[b]Scale[/b] {self.ref}  (deployment {self.deployment_id}, {self.replicas} now)",
                id="form-title",
            )
            yield Field(
                "Replicas (1 to 9)",
                Input(str(self.replicas), id="replicas", type="integer"),
                name="replicas",
            )
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Scale (ctrl+s)", id="scale", variant="primary")

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted, "#replicas")
    @on(Button.Pressed, "#scale")
    def action_scale(self) -> None:
        self._scale(self.query_one("#replicas", Input).value)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _scale(self, value: str) -> None:
        from cdsw_tui.services import deployments, models

        wb = host(self).wb
        try:
            d = deployments.scale(wb, models.resolve(wb, self.ref), value)
            host(self).ensure_controller()
        except CdswError as exc:
            self.app.call_from_thread(show_error, self, exc)
            return
        said = f"deployment {d.id} scaling to {d.replicas}"
        self.app.call_from_thread(self.notify, said)
        self.app.call_from_thread(self.dismiss, d.replicas)
