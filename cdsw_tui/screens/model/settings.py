"""Settings: the access key (masked unless asked), the model's variables, and delete."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Label, TextArea

from cdsw_tui.errors import CdswError
from cdsw_tui.screens.model.tab import ModelTab
from cdsw_tui.screens.project_settings import env_text, parse_env
from cdsw_tui.services import artifacts, deployments, env, models
from cdsw_tui.services.access_keys import mask
from cdsw_tui.services.readmodels import ModelDetail
from cdsw_tui.store import pk


class SettingsTab(VerticalScroll, ModelTab):
    DEFAULT_CSS = """
    SettingsTab #key-row, SettingsTab #setting-buttons { height: auto; }
    SettingsTab #setting-buttons Button { margin-right: 2; }
    SettingsTab #model-env { height: 8; }
    """
    ACTIONS = ("reveal_key", "regenerate_key", "save_env", "delete_model")
    FOCUS = "#model-env"  # typing lands in the variables (v and g are typed there too)

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref = ref
        self.key_shown = False
        self._env_loaded = False  # the editor is filled once: a poll never overwrites typing

    def compose(self) -> ComposeResult:
        with Horizontal(id="key-row"):
            yield Label("", id="access-key")
        yield Label("Model environment variables (K=V, one a line; ctrl+s saves)")
        yield TextArea(id="model-env")
        with Horizontal(id="setting-buttons"):
            yield Button("Show key (v)", id="reveal")
            yield Button("Regenerate key (g)", id="regenerate", variant="warning")
            yield Button("Delete model (ctrl+d)", id="delete", variant="error")

    def show(self, detail: ModelDetail) -> None:
        model = detail.model
        key = model.access_key if self.key_shown else mask(model.access_key)
        self.query_one("#access-key", Label).update(
            f"Access key  [b]{key}[/b]   "
            + ("(authentication on: callers also need an API key)" if model.auth_enabled else "")
        )
        self.query_one("#reveal", Button).label = (
            "Hide key (v)" if self.key_shown else "Show key (v)"
        )
        if not self._env_loaded:
            self.query_one("#model-env", TextArea).text = env_text(detail.env)
            self._env_loaded = True

    def action_reveal_key(self) -> None:
        self.key_shown = not self.key_shown
        if self.detail is not None:
            self.show(self.detail)

    def action_regenerate_key(self) -> None:
        screen = self.model_screen
        screen.ask(
            "Regenerate the access key? Callers using the old key fail at once.",
            "Regenerate",
            lambda: models.regenerate_key(self.wb, screen.model()),
            done="new access key made; the old one no longer works",
        )

    def action_save_env(self) -> None:
        screen = self.model_screen
        try:
            values = parse_env(self.query_one("#model-env", TextArea).text)
        except CdswError as exc:
            self.notify(exc.message, severity="error")
            return

        def go() -> None:
            env.replace_vars(self.wb, "model", pk(screen.model()), values)

        screen.run_service(
            go, done="model variables saved; they apply to the next build and deployment"
        )

    def action_delete_model(self) -> None:
        screen = self.model_screen

        def question() -> str:
            stops = artifacts.stops_words(self.wb, [screen.model()])
            return f"Delete model {self.ref} with its builds and logs{stops}?"

        def go() -> None:
            deployments.delete_model(self.wb, screen.model())  # stop, wait, delete: one step
            self.app.call_from_thread(self.app.pop_screen)

        screen.ask(question, "Delete", go, done=f"model {self.ref} deleted")

    @on(Button.Pressed, "#reveal")
    def _reveal(self) -> None:
        self.action_reveal_key()

    @on(Button.Pressed, "#regenerate")
    def _regenerate(self) -> None:
        self.action_regenerate_key()

    @on(Button.Pressed, "#delete")
    def _delete(self) -> None:
        self.action_delete_model()
