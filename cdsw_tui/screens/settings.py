"""Workbench settings: global variables, gateway port, default runtime and engine image.

Written to CDSW_TUI_HOME/config.toml; a running controller picks up the gateway port
when it next starts.
"""

from __future__ import annotations

import os

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, TextArea

from cdsw_tui.config import write_config
from cdsw_tui.errors import CdswError
from cdsw_tui.screens.forms import Field, mark_error
from cdsw_tui.screens.help import Dialog
from cdsw_tui.screens.project_settings import env_text, parse_env
from cdsw_tui.services import runtimes
from cdsw_tui.widgets.host import host
from cdsw_tui.widgets.workers import ReportsWorkerErrors


class SettingsScreen(ReportsWorkerErrors, Dialog[None]):
    DEFAULT_CSS = """
    SettingsScreen { align: center middle; }
    SettingsScreen > .dialog { width: 84; }
    SettingsScreen TextArea { height: 8; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "save", "Save", id="form.submit"),
    ]

    def compose(self) -> ComposeResult:
        s = host(self).wb.settings
        with Vertical(classes="dialog"):
            with VerticalScroll(classes="fields"):
                yield Label("[b]Settings[/b]  (saved to config.toml in CDSW_TUI_HOME)")
                yield Field(
                    "Gateway port (the controller uses it from its next start)",
                    Input(str(s.gateway_port), id="gateway_port", type="integer"),
                    name="gateway_port",
                )
                yield Field(
                    "Default runtime of new projects",
                    Select(
                        runtimes.choices(),
                        value=s.runtime,
                        allow_blank=False,
                        id="runtime",
                    ),
                    name="runtime",
                )
                yield Field(
                    "Engine image", Input(s.engine_image, id="engine_image"), name="engine_image"
                )
                yield Field(
                    "Global environment variables (K=V, one a line)", TextArea(id="env"), name="env"
                )
            with Horizontal(id="buttons", classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save (ctrl+s)", id="save", variant="primary")

    def on_mount(self) -> None:
        s = host(self).wb.settings
        self.opened_with = {
            "gateway_port": s.gateway_port,
            "runtime": s.runtime,
            "engine_image": s.engine_image,
        }
        for name in self.opened_with:
            variable = f"CDSW_TUI_{name.upper()}"
            if os.environ.get(variable) is not None:  # it wins over config.toml: say so
                field = self.query_one(f"#field-{name}", Field)
                note = f"{field.label} (set by {variable}, which wins over config.toml)"
                field.query_one(".field-label", Label).update(note)
                field.widget.disabled = True
        self._load()

    @work(thread=True, exit_on_error=False)
    def _load(self) -> None:
        from cdsw_tui.services import env

        values = env.list_vars(host(self).wb, "global")
        self.app.call_from_thread(
            lambda: setattr(self.query_one("#env", TextArea), "text", env_text(values))
        )

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        port_text = self.query_one("#gateway_port", Input).value.strip()
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            mark_error(self, "gateway_port", "the port must be a number from 1 to 65535")
            return
        try:
            values = parse_env(self.query_one("#env", TextArea).text)
        except CdswError as exc:
            mark_error(self, "env", exc.message)
            return
        shown = {
            "gateway_port": int(port_text),
            "runtime": str(self.query_one("#runtime", Select).value),
            "engine_image": self.query_one("#engine_image", Input).value.strip(),
        }
        # only what was changed here: a value that came from a CDSW_TUI_* variable must
        # not become the config file's (it would outlive the variable)
        updates = {k: v for k, v in shown.items() if v != self.opened_with[k]}
        self._save(updates, values)

    @work(thread=True, exit_on_error=False)
    def _save(self, updates: dict[str, object], values: dict[str, str]) -> None:
        from cdsw_tui.services import env

        wb = host(self).wb
        try:
            write_config(wb.home / "config.toml", updates)
            env.replace_vars(wb, "global", 0, values)
        except (CdswError, OSError) as exc:
            self.app.call_from_thread(
                self.notify, str(getattr(exc, "message", exc)), severity="error"
            )
            return
        for key, value in updates.items():
            setattr(wb.settings, key, value)
        self.app.call_from_thread(self.notify, "settings saved")
        self.app.call_from_thread(self.dismiss, None)
