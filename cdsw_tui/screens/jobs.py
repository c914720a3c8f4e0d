"""A project's jobs (CDSW's Jobs): each with its script, schedule, the job it follows
and its last run; the selected job's run history and the live log of its newest run.
``r`` runs the selected job now, ``x`` stops its run. Jobs are made with ``cdsw-tui job
create`` (the hint says so)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Label

from cdsw_tui.output import printable
from cdsw_tui.screens.base import ListScreen
from cdsw_tui.store import Job, JobRun, pk
from cdsw_tui.widgets.log_view import LogView
from cdsw_tui.widgets.status import badge, dash, when

ACTIVE = ("queued", "running")
HISTORY = 5  # runs named in the history line


@dataclass
class JobRow:
    job: Job
    after: str
    runs: list[JobRun] = field(default_factory=list)  # newest first

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def last(self) -> JobRun | None:
        return self.runs[0] if self.runs else None


class JobsScreen(ListScreen):
    DEFAULT_CSS = "JobsScreen #jobs-table { height: auto; max-height: 12; }"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="nav.back"),
        Binding("r", "run", "Run Now", id="jobs.run", tooltip="start a run of the selected job"),
        Binding("x", "cancel", "Stop Run", id="jobs.cancel", tooltip="stop its run in progress"),
    ]

    def __init__(self, project_name: str) -> None:
        super().__init__(id=f"jobs-{project_name}")
        self.project_name = project_name
        self.shown: int | None = None  # the run whose log shows

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(f"Jobs of [b]{self.project_name}[/b]", id="title", classes="screen-title")
        table: DataTable = DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("Job", "Script", "Schedule", "After", "Last run", "Status", "Started")
        yield table
        yield Label("", id="empty-hint", classes="hint")
        yield Label("", id="job-history", classes="hint")
        yield LogView(self._log_files, id="run-log", sources=False)
        yield Footer()

    def load(self) -> list[JobRow]:
        from cdsw_tui.services import jobs, runs

        found = jobs.list_jobs(self.wb, self.project_name)
        names = {j.id: j.name for j in found}
        return [
            JobRow(
                j,
                names.get(j.after_job_id, "") if j.after_job_id else "",
                list(reversed(runs.list_runs(self.wb, j)))[:HISTORY],
            )  # fmt: skip
            for j in found
        ]

    def show(self, rows: list[JobRow]) -> None:
        cells = [
            (
                r.name,
                printable(r.job.script),
                dash(r.job.schedule),
                dash(r.after),
                dash(r.last.number if r.last else None),
                badge(r.last.status) if r.last else badge("never run"),
                when(r.last.started_at) if r.last else "-",
            )
            for r in rows
        ]
        hint = (
            f"No jobs yet: cdsw-tui job create {self.project_name}/NAME --script FILE "
            "[--schedule CRON] [--after JOB]"
        )
        self.fill(rows, cells, [str(r.job.id) for r in rows], hint)
        self._show_selected()

    def _show_selected(self) -> None:
        row = self.selected()
        history = self.query_one("#job-history", Label)
        if row is None:
            history.update("")
            return
        parts = []
        for run in row.runs:
            code = f", exit {run.exit_code}" if run.exit_code not in (None, 0) else ""
            parts.append(f"run {run.number} {run.status}{code} ({run.trigger})")
        history.update("History: " + ("  ·  ".join(parts) if parts else "no runs yet (r runs it)"))
        newest = pk(row.last) if row.last else None
        if newest != self.shown:
            self.shown = newest
            self.query_one("#run-log", LogView).switch()

    def _log_files(self) -> list[Path]:
        return [self.wb.run_log_path(self.shown)] if self.shown is not None else []

    @on(DataTable.RowHighlighted, "#jobs-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_selected()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        row = self.selected()
        if action == "run":
            return row is not None and not (row.last and row.last.status in ACTIVE)
        if action == "cancel":
            return row is not None and bool(row.last and row.last.status in ACTIVE)
        return super().check_action(action, parameters)

    def action_run(self) -> None:
        row = self.selected()
        if row is None:
            return
        from cdsw_tui.services import background, runs

        def start() -> None:
            runs.request(self.wb, row.job)
            background.ensure(self.wb)

        self.run_service(start, done=f"job {row.name}: run queued")

    def action_cancel(self) -> None:
        row = self.selected()
        if row is None or row.last is None:
            return
        from cdsw_tui.services import runs

        last = row.last
        self.run_service(runs.cancel, self.wb, last, done=f"run {last.number} stopping")
