"""A model, with CDSW's tabs: Overview (details, Test Model, samples), Builds, Deployments,
Monitoring (replicas, rates, logs) and Settings (access key, environment, delete)."""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path

from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Header,
    Label,
    Sparkline,
    Static,
    TabbedContent,
    TabPane,
    Tabs,
    TextArea,
)

from cdsw_tui.errors import CdswError
from cdsw_tui.output import count
from cdsw_tui.screens.base import PollingScreen, refill
from cdsw_tui.screens.project_settings import env_text
from cdsw_tui.services import runtimes
from cdsw_tui.services.keys import mask
from cdsw_tui.widgets.log_view import LogView
from cdsw_tui.widgets.status import badge, dash, when
from cdsw_tui.widgets.test_pane import TestPane

LANGS = ("shell", "python", "r")


_TIPS = {
    "test": "Test Model: send the input, show the answer (Overview)",
    "copy": "copy the sample call (Overview)",
    "lang": "shell, Python or R sample (Overview)",
    "new": "the deploy form, set to a new build of the code as it is now",
    "build": "build only, no deploy",
    "cancel": "cancel the selected build (Builds)",
    "redeploy": "the deploy form, set to the selected deployment's build (Deployments)",
    "scale": "change the running deployment's replica count, no new build",
    "stop": "stop the model's replicas",
    "restart": "replace the replicas one by one",
    "key": "show or hide the access key (Settings)",
    "newkey": "regenerate the access key; the old one stops working (Settings)",
    "save": "save the model's variables (Settings)",
    "delete": "delete the model, its builds and logs (Settings)",
}


class ModelScreen(PollingScreen):
    DEFAULT_CSS = """
    ModelScreen #details { height: auto; border: round $panel; padding: 0 1; }
    ModelScreen #samples { height: auto; border: round $panel; padding: 0 1; }
    ModelScreen #builds-table, ModelScreen #deployments-table { height: 12; }
    ModelScreen #replicas-table { height: 8; }
    ModelScreen #requests-table { height: 7; }
    ModelScreen.short #requests-table { display: none; }
    ModelScreen #rates { height: 4; }
    ModelScreen #rates Vertical { width: 1fr; }
    ModelScreen Sparkline { height: 2; }
    ModelScreen #key-row, ModelScreen #setting-buttons { height: auto; }
    ModelScreen #setting-buttons Button { margin-right: 2; }
    ModelScreen #model-env { height: 8; }
    """
    # the footer shows what matters on the tab (it fits 80 columns); Help lists them all
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="nav.back"),
        Binding("1", "tab('overview')", "Overview", show=False),
        Binding("2", "tab('builds')", "Builds", show=False),
        Binding("3", "tab('deployments')", "Deployments", show=False),
        Binding("4", "tab('monitoring')", "Monitoring", show=False),
        Binding("5", "tab('settings')", "Settings", show=False),
        Binding("ctrl+t", "test", "Test", id="model.test", tooltip=_TIPS["test"]),
        Binding("c", "copy_sample", "Copy", id="model.copy", tooltip=_TIPS["copy"]),
        Binding("l", "next_lang", "Language", id="model.lang", show=False, tooltip=_TIPS["lang"]),
        Binding(
            "n",
            "deploy_new_build",
            "Deploy New Build",
            id="model.deploy_new_build",
            tooltip=_TIPS["new"],
        ),
        Binding("b", "build_only", "Build", id="model.build", show=False, tooltip=_TIPS["build"]),
        Binding(
            "x", "cancel_build", "Cancel Build", id="model.cancel_build", tooltip=_TIPS["cancel"]
        ),
        Binding("r", "redeploy", "Re-deploy", id="model.redeploy", tooltip=_TIPS["redeploy"]),
        Binding("s", "scale", "Scale", id="model.scale", show=False, tooltip=_TIPS["scale"]),
        Binding("S", "stop", "Stop", id="model.stop", tooltip=_TIPS["stop"]),
        Binding(
            "R", "restart", "Restart", id="model.restart", show=False, tooltip=_TIPS["restart"]
        ),
        Binding("v", "reveal_key", "Key", id="model.reveal", tooltip=_TIPS["key"]),
        Binding("g", "regenerate_key", "New key", id="model.regenerate", tooltip=_TIPS["newkey"]),
        Binding("ctrl+s", "save_env", "Save", id="model.save_env", tooltip=_TIPS["save"]),
        Binding("ctrl+d", "delete_model", "Delete", id="model.delete", tooltip=_TIPS["delete"]),
        # the log's keys act on the tab's log whatever has focus (Builds, Monitoring)
        Binding("f", "log('toggle_follow')", "Follow", show=False, tooltip="follow the log"),
        Binding("w", "log('toggle_wrap')", "Wrap", show=False, tooltip="wrap long log lines"),
        Binding("t", "log('toggle_timestamps')", "Timestamps", show=False, tooltip="log times"),
        Binding("slash", "log('filter')", "Filter", show=False, tooltip="filter the log"),
        Binding("a", "log('next_source')", "Replica", show=False, tooltip="one replica, or all"),
    ]
    AUTO_FOCUS = ""  # none (None would mean the app's "*"): focus follows the tab, in action_tab
    WORK_TABS = ("overview", "builds", "deployments", "monitoring")
    TAB_ACTIONS: dict[str, tuple[str, ...]] = {  # where each key acts (and shows)
        "test": ("overview",),
        "copy_sample": ("overview",),
        "next_lang": ("overview",),
        "deploy_new_build": WORK_TABS,
        "build_only": WORK_TABS,
        "stop": WORK_TABS,
        "restart": WORK_TABS,
        "scale": WORK_TABS,
        "cancel_build": ("builds",),
        "redeploy": ("deployments",),
        "log": ("builds", "monitoring"),
        "reveal_key": ("settings",),
        "regenerate_key": ("settings",),
        "save_env": ("settings",),
        "delete_model": ("settings",),
    }

    def __init__(self, ref: str, tab: str = "overview") -> None:
        super().__init__()
        self.ref = ref
        self.initial_tab = tab
        self.detail = None
        self.lang = "shell"
        self.key_shown = False
        self.selected_build: int | None = None
        self.rate = deque([0.0] * 60, maxlen=60)
        self.latency = deque([0.0] * 60, maxlen=60)
        self.gateway_p99 = deque([0.0] * 60, maxlen=60)
        self._last_processed: tuple[float, int] | None = None
        self._env_loaded = False

    # -- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(f"Model [b]{self.ref}[/b]", id="title", classes="screen-title")
        with TabbedContent(initial=self.initial_tab, id="tabs"):
            with TabPane("Overview", id="overview"), VerticalScroll():
                yield Static("", id="details")
                yield TestPane(self.ref, "", id="test-pane")
                yield Static("", id="samples")
            with TabPane("Builds", id="builds"), Vertical():
                table: DataTable = DataTable(
                    id="builds-table", cursor_type="row", zebra_stripes=True
                )
                table.add_columns(
                    "Build", "Status", "Created", "Duration", "Snapshot", "Comment", "Reason"
                )
                yield table
                yield Label("", id="build-log-title")
                yield LogView(self._build_log_files, id="build-log", sources=False)
            with TabPane("Deployments", id="deployments"), Vertical():
                table = DataTable(id="deployments-table", cursor_type="row", zebra_stripes=True)
                table.add_columns(
                    " ",
                    "Deployment",
                    "Build",
                    "Status",
                    "Replicas",
                    "CPU",
                    "Memory",
                    "GPU",
                    "Created",
                    "Reason",
                )
                yield table
                yield Label(
                    "r: Re-deploy the selected deployment's build (the form opens prefilled)",
                    classes="hint",
                )
            with TabPane("Monitoring", id="monitoring"), Vertical():
                table = DataTable(id="replicas-table", cursor_type="row", zebra_stripes=True)
                table.add_columns(
                    "Replica",
                    "Status",
                    "Received",
                    "Processed",
                    "Success",
                    "Failure",
                    "Busy waits",
                    "Restarts",
                    "Uptime",
                )
                yield table
                with Horizontal(id="rates"):
                    with Vertical():
                        yield Label("", id="rate-label")
                        yield Sparkline(list(self.rate), id="rate")
                    with Vertical():
                        yield Label("", id="gateway-latency-label")
                        yield Sparkline(list(self.gateway_p99), id="gateway-latency")
                    with Vertical():
                        yield Label("", id="latency-label")
                        yield Sparkline(list(self.latency), id="latency")
                calls = DataTable(id="requests-table", cursor_type="none", zebra_stripes=True)
                calls.add_columns("Recent calls", "Status", "Code", "ms", "Replica", "In", "Out")
                yield calls
                yield LogView(self._replica_log_files, id="replica-log", sources=True)
            with TabPane("Settings", id="settings"), VerticalScroll():
                with Horizontal(id="key-row"):
                    yield Label("", id="access-key")
                yield Label("Model environment variables (K=V, one a line; ctrl+s saves)")
                yield TextArea(id="model-env")
                with Horizontal(id="setting-buttons"):
                    yield Button("Show key (v)", id="reveal")
                    yield Button("Regenerate key (g)", id="regenerate", variant="warning")
                    yield Button("Delete model (ctrl+d)", id="delete", variant="error")
        yield Footer()

    # -- data ---------------------------------------------------------------------------------

    def load(self):
        from cdsw_tui.services import readmodels

        return readmodels.model_detail(self.wb, self.ref)

    def show(self, detail) -> None:
        first = self.detail is None
        self.detail = detail
        m = detail.model
        self.query_one("#title", Label).update(f"Model [b]{self.ref}[/b]  ")
        self.query_one("#title", Label).update(
            f"Model [b]{self.ref}[/b]  " + badge(detail.status).markup
        )
        if first:
            self.query_one(TestPane).query_one("#test-json").text = m.example_input or "{}"
        self._show_details(detail)
        self._show_samples()
        self._show_builds(detail)
        self._show_deployments(detail)
        self._show_replicas(detail)
        self._show_settings(detail)
        self.refresh_bindings()

    def _show_details(self, detail) -> None:
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
        rows = [
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
                detail.project.engine
                if runtimes.uses_engine(detail.project.runtime)
                else f"{detail.project.runtime} runtime",
            ),
            ("File", m.file, "Function", m.function),
            (
                "Resources",
                f"{count((d or m).replicas, 'replica')} · {(d or m).cpu:g} cpu · {(d or m).memory} MB · {(d or m).gpu} gpu"
                + (
                    f" ({', '.join(runtimes.advisory(detail.project.runtime))} advisory)"
                    if runtimes.advisory(detail.project.runtime)
                    else ""
                ),
                "Description",
                dash(m.description),
            ),
        ]
        for row in rows:
            grid.add_row(*row)
        if d and d.reason:
            grid.add_row("Note", d.reason, "", "")
        self.query_one("#details", Static).update(grid)

    def _show_samples(self) -> None:
        from cdsw_tui.services import samples

        if self.detail is None:
            return
        m = self.detail.model
        text = samples.sample(
            self.lang, self.wb.settings.gateway_url, mask(m.access_key), m.example_input
        )
        lexer = {"shell": "bash", "python": "python", "r": "r"}[self.lang]
        tabs = "  ".join(
            f"[b reverse] {lang} [/]" if lang == self.lang else f" {lang} " for lang in LANGS
        )
        from rich.console import Group
        from rich.text import Text

        example = Text.from_markup(f"Sample calls  {tabs}   (l: language, c: copy with the key)\n")
        response = Text(f"\nSample response: {m.example_output or '-'}", style="dim")
        self.query_one("#samples", Static).update(
            Group(example, Syntax(text, lexer, theme="ansi_dark", word_wrap=True), response)
        )

    def _show_builds(self, detail) -> None:
        from cdsw_tui.services.builds import duration as took

        table = self.query_one("#builds-table", DataTable)
        keys = [str(b.number) for b in detail.builds]
        rows = []
        for b in detail.builds:
            duration = took(b)
            rows.append(
                (
                    str(b.number),
                    badge(b.status),
                    when(b.created_at),
                    f"{duration:.1f} s" if duration is not None else "-",
                    b.snapshot[:10],
                    b.comment,
                    b.reason,
                )
            )
        self._fill(table, keys, rows)
        if self.selected_build is None and detail.builds:
            self.selected_build = detail.builds[0].number
            self._build_log_changed()

    def _show_deployments(self, detail) -> None:
        table = self.query_one("#deployments-table", DataTable)
        keys = [str(d.id) for d in detail.deployments]
        rows = [
            (
                "★" if detail.active is not None and d.id == detail.active.id else "",
                str(d.id),
                dash(detail.build_numbers.get(d.build_id)),
                badge(d.status),
                str(d.replicas),
                f"{d.cpu:g}",
                f"{d.memory} MB",
                str(d.gpu),
                when(d.created_at),
                d.reason,
            )
            for d in detail.deployments
        ]
        self._fill(table, keys, rows)

    def _show_replicas(self, detail) -> None:
        from datetime import UTC, datetime

        table = self.query_one("#replicas-table", DataTable)
        now = datetime.now(UTC)
        rows = []
        shown = [*detail.replicas, *detail.replaced]  # replaced ones keep their counts
        for r in shown:
            started = (
                r.started_at.replace(tzinfo=UTC)
                if r.started_at and r.started_at.tzinfo is None
                else r.started_at
            )
            uptime = (
                f"{int((now - started).total_seconds())} s"
                if started and r.status == "running"
                else "-"
            )
            rows.append(
                (
                    r.name,
                    badge(r.status),
                    str(r.received),
                    str(r.processed),
                    str(r.success),
                    str(r.failure),
                    str(r.busy_waits),
                    str(r.restarts),
                    uptime,
                )
            )
        self._fill(table, [r.name for r in shown], rows)
        processed = sum(r.processed for r in shown)
        now_t = time.monotonic()
        if self._last_processed is not None:
            then, before = self._last_processed
            self.rate.append(max(0.0, (processed - before) / max(now_t - then, 0.001)))
        self._last_processed = (now_t, processed)
        self.query_one("#rate", Sparkline).data = list(self.rate)
        self.query_one("#rate-label", Label).update(
            f"requests/s  now {self.rate[-1]:.1f}  max {max(self.rate):.1f}"
        )
        self._show_calls(detail)
        self.query_one("#latency", Sparkline).data = list(self.latency)
        self.query_one("#latency-label", Label).update(
            f"test latency ms  last {self.latency[-1]:.1f}"
            if any(self.latency)
            else "test latency ms (Test Model fills this)"
        )

    def on_mount(self) -> None:  # PollingScreen's on_mount runs too: Textual calls both
        # the tab bar takes no focus: digits switch tabs, so typing there would
        self.query_one(TabbedContent).query_one(Tabs).can_focus = False
        self.call_after_refresh(self._focus_tab)  # the tab the user is on by then
        self._sync_logs()

    def on_resize(self) -> None:
        self.set_class(self.size.height < 32, "short")  # the recent calls give the log room

    def _show_calls(self, detail) -> None:
        """The gateway's last calls, newest first, and its latency over the last minute."""
        figures = detail.latency
        self.gateway_p99.append(figures["p99"] or 0.0)
        self.query_one("#gateway-latency", Sparkline).data = list(self.gateway_p99)
        self.query_one("#gateway-latency-label", Label).update(
            f"gateway ms p50 {figures['p50']:.1f} p95 {figures['p95']:.1f} p99 {figures['p99']:.1f}"
            if figures["calls"]
            else "gateway ms (no calls this minute)"
        )
        calls = list(reversed(detail.calls))[:50]
        rows = [
            (
                str(c.get("time", ""))[11:23],
                Text(str(c.get("status")), style="green" if c.get("status") == 200 else "bold red"),
                str(c.get("code", "")),
                f"{c.get('ms', 0):.1f}",
                str(c.get("replica") or "-"),
                str(c.get("bytes_in", "")),
                str(c.get("bytes_out", "")),
            )
            for c in calls
        ]
        self._fill(
            self.query_one("#requests-table", DataTable),
            [f"{c.get('time')}-{i}" for i, c in enumerate(calls)],
            rows,
        )

    def _show_settings(self, detail) -> None:
        key = detail.model.access_key if self.key_shown else mask(detail.model.access_key)
        self.query_one("#access-key", Label).update(
            f"Access key  [b]{key}[/b]   "
            + (
                "(authentication on: callers also need an API key)"
                if detail.model.auth_enabled
                else ""
            )
        )
        self.query_one("#reveal", Button).label = (
            "Hide key (v)" if self.key_shown else "Show key (v)"
        )
        if not self._env_loaded:
            self.query_one("#model-env", TextArea).text = env_text(detail.env)
            self._env_loaded = True

    @staticmethod
    def _fill(table: DataTable, keys: list[str], rows: list[tuple]) -> None:
        """Update in place when the rows are the same ones, so the cursor stays put."""
        if [str(k.value) for k in table.rows] != keys:
            refill(table, keys, rows)
            return
        for key, row in zip(keys, rows, strict=True):
            for col, value in zip(table.columns, row, strict=True):
                if table.get_cell(key, col) != value:
                    table.update_cell(key, col, value, update_width=True)

    # -- logs -----------------------------------------------------------------------------------

    def _build_log_files(self) -> list[Path]:
        if self.detail is None or self.selected_build is None:
            return []
        return [self.wb.build_log_path(int(self.detail.model.id), self.selected_build)]

    def _replica_log_files(self) -> list[Path]:
        from cdsw_tui.services import logs, models

        try:
            return logs.log_files(self.wb, models.resolve(self.wb, self.ref))
        except CdswError:
            return []

    def _build_log_changed(self) -> None:
        view = self.query_one("#build-log", LogView)
        view.buffer.clear()
        view.redraw()
        view.tail()
        self.query_one("#build-log-title", Label).update(f"Log of build {self.selected_build}")

    @on(DataTable.RowHighlighted, "#builds-table")
    def _build_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or event.row_key.value is None:
            return
        number = int(event.row_key.value)
        if number != self.selected_build:
            self.selected_build = number
            self._build_log_changed()

    # -- keys -------------------------------------------------------------------------------------

    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active or "overview"

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        tabs = self.TAB_ACTIONS.get(action)
        if tabs is not None and self.active_tab() not in tabs:
            return False
        d = self.detail
        if action in ("stop", "restart", "scale"):
            return (
                d is not None
                and d.active is not None
                and (action == "stop" or d.active.status == "deployed")
            )
        if action == "cancel_build":
            return d is not None and any(b.status in ("queued", "building") for b in d.builds)
        if action == "redeploy":
            return d is not None and bool(d.deployments)
        return True

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self.refresh_bindings()
        self._sync_logs()

    def on_screen_suspend(self) -> None:
        self._sync_logs()

    def on_screen_resume(self) -> None:  # PollingScreen's reloads too: Textual calls both
        self._sync_logs()

    def _sync_logs(self) -> None:
        """Each log view reads while its tab is shown and this screen is on top, else it
        is paused: decided from the state now, so quick switches cannot leave it wrong."""
        tab = self.active_tab() if self.is_current else None
        self.query_one("#build-log", LogView).set_active(tab == "builds")
        self.query_one("#replica-log", LogView).set_active(tab == "monitoring")

    def action_log(self, name: str) -> None:
        log_id = "#build-log" if self.active_tab() == "builds" else "#replica-log"
        getattr(self.query_one(log_id, LogView), f"action_{name}")()

    TAB_FOCUS = {
        "builds": "#builds-table",
        "deployments": "#deployments-table",
        "monitoring": "#replicas-table",
    }

    def action_tab(self, tab: str) -> None:
        # a widget focused on the old tab would pull the tabs back to it when it hides
        self.set_focus(None)
        self.query_one(TabbedContent).active = tab
        self.call_after_refresh(self._focus_tab)
        self.refresh_bindings()

    def _focus_tab(self) -> None:
        """The shown tab's table takes the focus (it takes no letters: every key still
        acts); other tabs leave it with nobody."""
        selector = self.TAB_FOCUS.get(self.active_tab())
        if selector is not None:
            self.query_one(selector).focus()

    def action_test(self) -> None:
        self.query_one(TestPane).send()

    @on(TestPane.Done)
    def _tested(self, event: TestPane.Done) -> None:
        self.latency.append(event.latency)
        self.reload()

    def action_next_lang(self) -> None:
        self.lang = LANGS[(LANGS.index(self.lang) + 1) % len(LANGS)]
        self._show_samples()

    def action_copy_sample(self) -> None:
        from cdsw_tui.services import samples

        if self.detail is None:
            return
        m = self.detail.model
        text = samples.sample(
            self.lang, self.wb.settings.gateway_url, m.access_key, m.example_input
        )
        self.app.copy_to_clipboard(text)  # OSC 52: nothing tells whether the terminal took it
        self._copy_to_tmux(text)

    @work(thread=True, exclusive=True, group="copy", exit_on_error=False)
    def _copy_to_tmux(self, text: str) -> None:
        """Say honestly where the sample went: tmux drops OSC 52 unless told otherwise, so
        inside tmux it also goes into tmux's paste buffer; elsewhere the sample is shown
        selected, for a manual copy if the terminal ignored the request."""
        import subprocess

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

    def _model(self):
        from cdsw_tui.services import models

        return models.resolve(self.wb, self.ref)

    def action_deploy_new_build(self) -> None:
        """The deploy form, set to a new build of the code as it is now (nothing is
        built or deployed until the form is sent)."""
        self._deploy_form(None, self.detail.active if self.detail else None, new=True)

    def action_build_only(self) -> None:
        from cdsw_tui.services import builds

        def go() -> None:
            builds.request(self.wb, self._model())
            self.workbench.ensure_controller()

        self.selected_build = None
        self.action_tab("builds")
        self.run_service(go, done="build queued")

    def action_cancel_build(self) -> None:
        from cdsw_tui.services import builds

        if self.detail is None:
            return
        running = [b for b in self.detail.builds if b.status in ("queued", "building")]
        chosen = next(
            (b for b in running if b.number == self.selected_build), running[0] if running else None
        )
        if chosen is not None:
            self.run_service(
                builds.cancel, self.wb, chosen, done=f"build {chosen.number} cancelling"
            )

    def action_redeploy(self) -> None:
        if self.detail is None or not self.detail.deployments:
            return
        table = self.query_one("#deployments-table", DataTable)
        index = min(table.cursor_row or 0, len(self.detail.deployments) - 1)
        d = self.detail.deployments[index]
        self._deploy_form(self.detail.build_numbers.get(d.build_id), d)

    def _deploy_form(self, build: int | None, start, new: bool = False) -> None:
        """One form for Deploy New Build and Re-deploy, carrying over the resources and
        variables of ``start`` (a deployment), else the model's defaults."""
        from cdsw_tui.screens.deploy import DeployScreen
        from cdsw_tui.services import env as env_service

        if self.detail is None:
            return
        built = [b.number for b in self.detail.builds if b.status == "built"]
        self.app.push_screen(
            DeployScreen(
                self.ref,
                None if new else build,
                start or self.detail.model,
                built,
                env_service.unpack(self.wb, start.env) if start is not None else {},
            ),
            self._deployed,
        )

    def _deployed(self, result: int | None) -> None:
        if result == 0:  # a new build was queued: show it building
            self.selected_build = None
            self.action_tab("builds")
        self.reload()

    def _ask_controller(self, question: str, yes: str, change, done: str) -> None:
        """Ask, then make ``change`` (a deployments function of the model) in a worker and
        see that a controller runs to carry it out."""

        def go() -> None:
            change(self.wb, self._model())
            self.workbench.ensure_controller()

        self.ask(question, yes, go, done=done)

    def action_stop(self) -> None:
        from cdsw_tui.services import deployments

        self._ask_controller(
            f"Stop {self.ref}? Calls get model.not_deployed until it is deployed again.",
            "Stop",
            deployments.stop,
            done=f"{self.ref} stopping",
        )

    def action_scale(self) -> None:
        from cdsw_tui.screens.deploy import ScaleScreen

        if self.detail is None or self.detail.active is None:
            return
        d = self.detail.active
        self.app.push_screen(ScaleScreen(self.ref, int(d.id), d.replicas), lambda _n: self.reload())

    def action_restart(self) -> None:
        from cdsw_tui.services import deployments

        self._ask_controller(
            f"Restart every replica of {self.ref}, one by one?",
            "Restart",
            deployments.restart,
            done=f"{self.ref} restarting replica by replica",
        )

    def action_reveal_key(self) -> None:
        self.key_shown = not self.key_shown
        if self.detail is not None:
            self._show_settings(self.detail)

    def action_regenerate_key(self) -> None:
        from cdsw_tui.services import models

        self.ask(
            "Regenerate the access key? Callers using the old key fail at once.",
            "Regenerate",
            lambda: models.regenerate_key(self.wb, self._model()),
            done="new access key made; the old one no longer works",
        )

    def action_save_env(self) -> None:
        from cdsw_tui.screens.project_settings import parse_env
        from cdsw_tui.services import env

        try:
            values = parse_env(self.query_one("#model-env", TextArea).text)
        except CdswError as exc:
            self.notify(exc.message, severity="error")
            return

        def go() -> None:
            env.replace_vars(self.wb, "model", int(self._model().id), values)

        self.run_service(
            go, done="model variables saved; they apply to the next build and deployment"
        )

    def action_delete_model(self) -> None:
        from cdsw_tui.services import artifacts, deployments

        def question() -> str:
            stops = artifacts.stops_words(self.wb, [self._model()])
            return f"Delete model {self.ref} with its builds and logs{stops}?"

        def go() -> None:
            deployments.delete_model(self.wb, self._model())  # stop, wait, delete: one step
            self.app.call_from_thread(self.app.pop_screen)

        self.ask(question, "Delete", go, done=f"model {self.ref} deleted")

    @on(Button.Pressed, "#reveal")
    def _reveal(self) -> None:
        self.action_reveal_key()

    @on(Button.Pressed, "#regenerate")
    def _regenerate(self) -> None:
        self.action_regenerate_key()

    @on(Button.Pressed, "#delete")
    def _delete(self) -> None:
        self.action_delete_model()
