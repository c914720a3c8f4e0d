"""New Project: register a folder, copy the quickstart template, or launch an AMP folder
(its variables, read from .project-metadata.yaml, become fields of the form; the launch
itself is watched on the AMP launch screen)."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select

from cdsw_tui.errors import CdswError
from cdsw_tui.output import printable
from cdsw_tui.screens.forms import Field, mark_error, show_error
from cdsw_tui.screens.help import Dialog
from cdsw_tui.services import runtimes
from cdsw_tui.widgets.host import host
from cdsw_tui.widgets.workers import ReportsWorkerErrors


class NewProjectScreen(ReportsWorkerErrors, Dialog[str | None]):
    """Dismissed with the new project's name (``launched``: an AMP launch began)."""

    DEFAULT_CSS = """
    NewProjectScreen { align: center middle; }
    NewProjectScreen #amp-vars { height: auto; }
    NewProjectScreen #amp-info { width: 100%; margin-bottom: 1; display: none; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "create", "Create", id="form.submit"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            with VerticalScroll(classes="fields"):
                yield Label("[b]New Project[/b]")
                yield Field("Name", Input(id="name"), name="name")
                yield Field(
                    "Source",
                    Select(
                        [
                            ("Template: quickstart", "quickstart"),
                            ("An existing folder", "folder"),
                            ("An AMP folder (.project-metadata.yaml)", "amp"),
                        ],
                        value="quickstart",
                        allow_blank=False,
                        id="source",
                    ),
                    name="template",
                )
                yield Field(
                    "Folder (blank: a new folder under CDSW_TUI_HOME)",
                    Input(id="path"),
                    name="path",
                )
                yield Field(
                    "Runtime",
                    Select(
                        runtimes.choices(),
                        value="local",
                        allow_blank=False,
                        id="runtime",
                    ),
                    name="runtime",
                )
                yield Field("Engine image (docker builds)", Input(id="engine"), name="engine")
                yield Field(
                    "Python (local runtime; blank: cdsw-tui's own)",
                    Input(id="python", placeholder="e.g. /usr/bin/python3.9"),
                    name="python",
                )
                yield Label("", id="amp-info", classes="hint")
                yield Vertical(id="amp-vars")
            with Horizontal(classes="buttons"):  # in view however long the form
                yield Button("Cancel", id="cancel")
                yield Button("Create (ctrl+s)", id="create", variant="primary")

    def __init__(self) -> None:
        super().__init__()
        self.launched = False
        self.amp_read: str | None = None  # the folder whose variables the form shows

    def on_mount(self) -> None:
        self.query_one("#runtime", Select).value = host(self).wb.settings.runtime
        self.query_one("#engine", Input).value = host(self).wb.settings.engine_image
        self.query_one("#name", Input).focus()
        self._suggest_name()

    @work(thread=True, exclusive=True, group="name", exit_on_error=False)
    def _suggest_name(self) -> None:
        """A real default (Enter creates it), not a placeholder."""
        from cdsw_tui.services import projects

        name = projects.free_name(host(self).wb)
        self.app.call_from_thread(self._set_name, name)

    def _set_name(self, name: str) -> None:
        field = self.query_one("#name", Input)
        if not field.value:  # the user has not typed one yet
            field.value = name
            field.cursor_position = len(name)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#create")
    @on(Input.Submitted)
    def action_create(self) -> None:
        name = self.query_one("#name", Input).value
        source = self.query_one("#source", Select).value
        path = self.query_one("#path", Input).value.strip() or None
        runtime = str(self.query_one("#runtime", Select).value)
        engine = self.query_one("#engine", Input).value.strip() or None
        python = self.query_one("#python", Input).value.strip() or None
        if source in ("folder", "amp") and not path:
            which = "an AMP (with .project-metadata.yaml)" if source == "amp" else "a project"
            mark_error(self, "path", f"give the folder of {which}")
            return
        if source == "amp" and path:
            if self.amp_read != path:  # first its variables, in the form; then the launch
                self._read_amp(path)
                return
            given = {
                str(i.id).removeprefix("var-"): i.value
                for i in self.query_one("#amp-vars").query(Input)
            }
            self._launch(name, path, given, runtime, engine, python)
            return
        template = "quickstart" if source == "quickstart" else None
        self._create(name, path, template, runtime, engine, python)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _read_amp(self, path: str) -> None:
        from cdsw_tui.services import amps

        try:
            meta = amps.read(path)
        except CdswError as exc:
            exc.field = exc.field if exc.field != "amp" else "path"
            self.app.call_from_thread(show_error, self, exc)
            return
        self.app.call_from_thread(self._show_amp, path, meta)

    def _show_amp(self, path: str, meta: object) -> None:
        from cdsw_tui.services.amps import Metadata

        assert isinstance(meta, Metadata)
        self.amp_read = path
        mark_error(self, None, "")  # what was marked before is no longer wrong
        python = f", {meta.kernel}" if meta.kernel else ""
        info = self.query_one("#amp-info", Label)
        info.display = True
        info.update(
            f"AMP [b]{printable(meta.name)}[/b]: {len(meta.tasks)} tasks{python}. "
            + ("Fill in its variables, then " if meta.variables else "")
            + "ctrl+s launches it."
        )
        box = self.query_one("#amp-vars", Vertical)
        box.remove_children()
        fields = []
        for var in meta.variables:
            label = var.name + (" (required)" if var.required else "")
            if var.description:
                label += f": {var.description[:120]}"
            field_input = Input(value=var.default, id=f"var-{var.name}")
            fields.append(Field(printable(label), field_input, name=var.name))
        box.mount_all(fields)
        if fields:
            fields[0].widget.focus()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _launch(
        self,
        name: str,
        path: str,
        given: dict[str, str],
        runtime: str,
        engine: str | None,
        python: str | None,
    ) -> None:
        from cdsw_tui.services import amps, background

        wb = host(self).wb
        engine = engine if engine != wb.settings.engine_image else None  # the AMP's pick
        try:
            project = amps.launch(
                wb, name, path, given, runtime=runtime, engine=engine, python=python
            )
            background.ensure(wb)
        except CdswError as exc:
            self.app.call_from_thread(show_error, self, exc)
            return
        self.launched = True
        self.app.call_from_thread(self.dismiss, project.name)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _create(
        self,
        name: str,
        path: str | None,
        template: str | None,
        runtime: str,
        engine: str | None,
        python: str | None,
    ) -> None:
        from cdsw_tui.services import projects

        try:
            project = projects.create(
                host(self).wb,
                name,
                path=path,
                template=template,
                runtime=runtime,
                engine=engine,
                python=python,
            )
        except CdswError as exc:
            self.app.call_from_thread(show_error, self, exc)
            return
        self.app.call_from_thread(self.dismiss, project.name)
