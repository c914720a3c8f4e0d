"""Overview: the model's details, the Test Model pane, and sample calls to copy."""

from __future__ import annotations

import os
import subprocess

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from cdsw_tui.output import count, printable
from cdsw_tui.screens.model.tab import ModelTab
from cdsw_tui.services import runtimes, samples
from cdsw_tui.services.access_keys import mask
from cdsw_tui.services.readmodels import ModelDetail
from cdsw_tui.widgets.json_editor import JsonEditor
from cdsw_tui.widgets.status import badge, dash, when
from cdsw_tui.widgets.test_pane import TestPane

LANGS = ("shell", "python", "r")


class OverviewTab(VerticalScroll, ModelTab):
    DEFAULT_CSS = """
    OverviewTab #details { height: auto; border: round $panel; padding: 0 1; }
    OverviewTab #samples { height: auto; border: round $panel; padding: 0 1; }
    """
    ACTIONS = ("test", "copy_sample", "next_lang")

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref = ref
        self.lang = "shell"
        self._filled = False

    def compose(self) -> ComposeResult:
        yield Static("", id="details")
        yield TestPane(self.ref, "", id="test-pane")
        yield Static("", id="samples")

    def show(self, detail: ModelDetail) -> None:
        if not self._filled:
            self.query_one(TestPane).query_one("#test-json", JsonEditor).text = (
                detail.model.example_input or "{}"
            )
            self._filled = True
        self._show_details(detail)
        self._show_samples(detail)

    def _show_details(self, detail: ModelDetail) -> None:
        m, d = detail.model, detail.active
        build = detail.builds[0] if detail.builds else None
        deployed_build = detail.build_numbers.get(d.build_id) if d else None
        # what runs, after a rollback too: the deployed build's comment, not the newest's
        shown = next((b for b in detail.builds if d and b.id == d.build_id), build)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column()
        grid.add_column(style="dim")
        grid.add_column()
        runtime = detail.project.runtime
        advisory = runtimes.advisory(runtime)
        sized = d or m
        rows: list[tuple[RenderableType, ...]] = [
            ("Model ID", str(m.id), "Status", badge(detail.status)),
            (
                "Deployment",
                dash(d.id if d else None),
                "Build",
                f"{dash(deployed_build)} (newest {dash(build.number if build else None)})",
            ),
            (
                "Deployed at",
                when(d.deployed_at) if d else "-",
                "Comment",
                dash(shown.comment if shown else ""),
            ),
            (
                "Kernel",
                m.kernel,
                "Engine",
                detail.project.engine if runtimes.uses_engine(runtime) else f"{runtime} runtime",
            ),
            ("File", m.file, "Function", m.function),
            (
                "Resources",
                f"{count(sized.replicas, 'replica')} · {sized.cpu:g} cpu · {sized.memory} MB · {sized.gpu} gpu"
                + (f" ({', '.join(advisory)} advisory)" if advisory else ""),
                "Description",
                dash(m.description),
            ),
        ]
        for row in rows:
            grid.add_row(*row)
        if d and d.reason:
            grid.add_row("Note", printable(d.reason), "", "")
        self.query_one("#details", Static).update(grid)

    def _show_samples(self, detail: ModelDetail) -> None:
        m = detail.model
        text = samples.of_model(self.lang, self.wb.settings, m, mask(m.access_key))
        lexer = {"shell": "bash", "python": "python", "r": "r"}[self.lang]
        tabs = "  ".join(
            f"[b reverse] {lang} [/]" if lang == self.lang else f" {lang} " for lang in LANGS
        )
        example = Text.from_markup(f"Sample calls  {tabs}   (l: language, c: copy with the key)\n")
        response = Text(f"\nSample response: {m.example_output or '-'}", style="dim")
        self.query_one("#samples", Static).update(
            Group(example, Syntax(text, lexer, theme="ansi_dark", word_wrap=True), response)
        )

    # -- actions ------------------------------------------------------------------------------

    def action_test(self) -> None:
        self.query_one(TestPane).send()

    def action_next_lang(self) -> None:
        self.lang = LANGS[(LANGS.index(self.lang) + 1) % len(LANGS)]
        if self.detail is not None:
            self._show_samples(self.detail)

    def action_copy_sample(self) -> None:
        if self.detail is None:
            return
        m = self.detail.model
        text = samples.of_model(self.lang, self.wb.settings, m, m.access_key)
        self.app.copy_to_clipboard(text)  # OSC 52: nothing tells whether the terminal took it
        self._copy_to_tmux(text)

    @work(thread=True, exclusive=True, group="copy", exit_on_error=False)
    def _copy_to_tmux(self, text: str) -> None:
        """Say honestly where the sample went: tmux drops OSC 52 unless told otherwise, so
        inside tmux it also goes into tmux's paste buffer; elsewhere the sample is shown
        selected, for a manual copy if the terminal ignored the request."""
        where = ""
        if os.environ.get("TMUX"):
            try:
                done = subprocess.run(
                    ["tmux", "load-buffer", "-"],
                    input=text.encode(),
                    capture_output=True,
                    timeout=5,
                )
                if done.returncode == 0:
                    where = "into tmux's paste buffer (prefix ] pastes it)"
            except (OSError, subprocess.TimeoutExpired):
                pass
        if where:
            self.app.call_from_thread(
                self.notify, f"{self.lang} sample (with the access key) copied {where}"
            )
        else:
            self.app.call_from_thread(self._show_for_copy, text)

    def _show_for_copy(self, text: str) -> None:
        from cdsw_tui.screens.confirm import TextScreen

        self.app.push_screen(
            TextScreen(
                f"{self.lang} sample, with the access key",
                text,
                "Sent to the terminal's clipboard (OSC 52), if it accepts that. If not, the "
                "text below is selected: copy it with your terminal's own keys.",
            )
        )
