"""New Model, as CDSW's form: details, example input and output, resources, environment."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, TextArea

from cdsw_tui.errors import CdswError
from cdsw_tui.screens.forms import Field, mark_error, show_error
from cdsw_tui.screens.project_settings import parse_env
from cdsw_tui.services.models import ModelSpec
from cdsw_tui.widgets.host import host
from cdsw_tui.widgets.json_editor import JsonEditor
from cdsw_tui.widgets.workers import ReportsWorkerErrors


class NewModelScreen(ReportsWorkerErrors, Screen):
    DEFAULT_CSS = """
    NewModelScreen VerticalScroll { padding: 0 2; }
    NewModelScreen #resources { height: auto; }
    NewModelScreen #resources Field { width: 1fr; margin-right: 2; }
    NewModelScreen #env { height: 5; }
    NewModelScreen #buttons { height: auto; margin: 1 0; }
    NewModelScreen #buttons Button { margin-right: 2; }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Cancel", id="form.cancel"),
        Binding(
            "ctrl+s",
            "submit(True)",
            "Deploy Model",
            id="form.deploy",
            tooltip="create, build, then deploy",
        ),
        Binding(
            "ctrl+o",
            "submit(False)",
            "Create only",
            id="form.create",
            tooltip="create the model without building",
        ),
    ]

    def __init__(self, project_name: str) -> None:
        super().__init__()
        self.project_name = project_name

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Label(f"[b]New Model[/b] in project {self.project_name}", classes="screen-title")
            name = Input(placeholder="the function's name, once one is chosen", id="name")
            yield Field("Name", name, name="name")
            yield Field("Description", Input(id="description"), name="description")
            yield Field("File", Select([], prompt="choose a file", id="file"), name="file")
            yield Field(
                "Function",
                Select([], prompt="choose the file first", id="function"),
                name="function",
            )
            yield Field(
                "Kernel",
                Select(
                    [("Python 3", "python3"), ("R", "r")],
                    value="python3",
                    allow_blank=False,
                    id="kernel",
                ),
                name="kernel",
            )
            yield Field(
                "Example Input (JSON)",
                JsonEditor("{}", id="example_input", height=4),
                name="example_input",
            )
            yield Field(
                "Example Output (JSON)",
                JsonEditor("", id="example_output", height=3),
                name="example_output",
            )
            yield Field("Comment (kept with the first build)", Input(id="comment"), name="comment")
            with Horizontal(id="resources"):
                yield Field(
                    "Replicas (1-9)", Input("1", id="replicas", type="integer"), name="replicas"
                )
                yield Field("CPU (cores)", Input("1", id="cpu", type="number"), name="cpu")
                yield Field(
                    "Memory (MB)", Input("2048", id="memory", type="integer"), name="memory"
                )
                yield Field("GPU", Input("0", id="gpu", type="integer"), name="gpu")
            yield Field("Environment variables (K=V, one a line)", TextArea(id="env"), name="env")
            with Horizontal(id="buttons"):
                yield Button("Deploy Model (ctrl+s)", id="deploy", variant="primary")
                yield Button("Create only (ctrl+o)", id="create")
                yield Button("Cancel (esc)", id="cancel")
        yield Footer()

    def on_mount(self) -> None:
        self._filled: dict[str, set[str]] = {}  # what the form put in the example editors
        self._named = ""  # the name the form put in (a function's), replaced by the next
        self.query_one("#name", Input).focus()
        self._load_files()

    @work(thread=True, exclusive=True, group="files", exit_on_error=False)
    def _load_files(self) -> None:
        from cdsw_tui.services import projects

        try:
            files = projects.source_files(host(self).wb, self.project_name)
        except CdswError as exc:
            self.app.call_from_thread(self.notify, exc.message, severity="error")
            return
        self.app.call_from_thread(self._set_files, files)

    def _set_files(self, files: list[str]) -> None:
        select = self.query_one("#file", Select)
        select.set_options([(f, f) for f in files])
        if len(files) == 1:
            select.value = files[0]

    @on(Select.Changed, "#file")
    def _file_chosen(self, event: Select.Changed) -> None:
        if event.value is Select.BLANK or event.value is None:
            return
        file = str(event.value)
        if file.lower().endswith(".r"):
            self.query_one("#kernel", Select).value = "r"
        else:
            self.query_one("#kernel", Select).value = "python3"
        self._load_functions(file)

    @work(thread=True, exclusive=True, group="functions", exit_on_error=False)
    def _load_functions(self, file: str) -> None:
        from cdsw_tui.services import projects

        try:
            found = projects.functions(host(self).wb, self.project_name, file)
        except CdswError as exc:
            self.app.call_from_thread(mark_error, self, exc.field or "file", exc.message)
            return
        self.app.call_from_thread(self._set_functions, found)

    def _set_functions(self, found: dict[str, str | None]) -> None:
        mark_error(self, None, "")
        select = self.query_one("#function", Select)
        usable = [name for name, problem in found.items() if problem is None]
        select.set_options(
            [
                (name if problem is None else f"{name} ({problem})", name)
                for name, problem in found.items()
            ]
        )
        select.prompt = "choose a function" if found else "no top-level functions in this file"
        if len(usable) == 1:
            select.value = usable[0]

    @on(Select.Changed, "#function")
    def _function_chosen(self, event: Select.Changed) -> None:
        name = self.query_one("#name", Input)
        if event.value not in (Select.BLANK, None) and name.value.strip() in ("", self._named):
            self._named = name.value = str(event.value)  # the model is named after it
        file = self._value("#file")
        if file and event.value not in (Select.BLANK, None):
            self._load_example(file, str(event.value))

    @work(thread=True, exclusive=True, group="example", exit_on_error=False)
    def _load_example(self, file: str, function: str) -> None:
        from cdsw_tui.services import projects

        try:
            found = projects.example_for(host(self).wb, self.project_name, file, function)
        except CdswError:
            return
        self.app.call_from_thread(self._set_example, *found)

    def _set_example(self, example_input: str, example_output: str) -> None:
        """Fill the examples unless the user has typed their own."""
        for selector, text in (
            ("#example_input", example_input),
            ("#example_output", example_output),
        ):
            editor = self.query_one(selector, JsonEditor)
            if editor.text.strip() in self._filled.get(selector, {"", "{}"}):
                editor.text = text
                self._filled[selector] = {text.strip(), "", "{}"}

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.app.pop_screen()

    @on(Button.Pressed, "#deploy")
    def _deploy(self) -> None:
        self.action_submit(True)

    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        self.action_submit(False)

    def _value(self, selector: str) -> str:
        widget = self.query_one(selector)
        if isinstance(widget, Select):
            return "" if widget.value in (Select.BLANK, None) else str(widget.value)
        if isinstance(widget, JsonEditor):
            return widget.text
        if isinstance(widget, TextArea):
            return widget.text
        return self.query_one(selector, Input).value

    def action_submit(self, deploy: bool) -> None:
        from cdsw_tui.services.models import ModelSpec

        for editor in self.query(JsonEditor):
            problem = editor.error()
            if problem:
                name = editor.id or ""
                mark_error(self, name, f"{name.replace('_', ' ')} is {problem}")
                return
        try:
            env = parse_env(self._value("#env"))
        except CdswError as exc:
            mark_error(self, "env", exc.message)
            return
        spec = ModelSpec(
            name=self._value("#name"),
            file=self._value("#file"),
            function=self._value("#function"),
            kernel=self._value("#kernel"),
            description=self._value("#description"),
            example_input=self._value("#example_input"),
            example_output=self._value("#example_output"),
            replicas=self._value("#replicas"),
            cpu=self._value("#cpu"),
            memory=self._value("#memory"),
            gpu=self._value("#gpu"),
            env=env,
        )
        self._submit(spec, self._value("#comment"), deploy)

    @work(thread=True, exclusive=True, group="submit", exit_on_error=False)
    def _submit(self, spec: ModelSpec, comment: str, deploy: bool) -> None:
        from cdsw_tui.services import deployments, models

        wb = host(self).wb
        try:
            model = models.create(wb, self.project_name, spec)
        except CdswError as exc:
            self.app.call_from_thread(show_error, self, exc)
            return
        ref = f"{self.project_name}/{model.name}"
        if deploy:
            try:
                build = deployments.request(wb, model, new_build=True, comment=comment).build
                assert build is not None
                host(self).ensure_controller()
            except CdswError as exc:
                self.app.call_from_thread(
                    self.notify,
                    f"model created; build refused: {exc.message}",
                    severity="error",
                    timeout=10,
                )
            else:
                self.app.call_from_thread(
                    self.notify, f"{ref}: build {build.number} queued, then deploy"
                )
        else:
            self.app.call_from_thread(self.notify, f"model {ref} created")
        self.app.call_from_thread(self._done, ref, deploy)

    def _done(self, ref: str, deploy: bool) -> None:
        self.app.pop_screen()
        host(self).open_model(ref, tab="builds" if deploy else "overview")
