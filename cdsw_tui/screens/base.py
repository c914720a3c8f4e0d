"""What every workbench screen shares: a store poll in a thread, results applied on the UI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual import events, work
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Label
from textual.worker import get_current_worker

from cdsw_tui.screens.confirm import ConfirmScreen
from cdsw_tui.services.context import Workbench
from cdsw_tui.widgets.workers import ReportsWorkerErrors


class PollingScreen(ReportsWorkerErrors, Screen):
    """Subclasses define ``load`` (runs in a thread) and ``show`` (runs on the UI)."""

    POLL_SECONDS = 1.0

    @property
    def workbench(self) -> Any:
        """The WorkbenchApp (not imported: screens sit below the app)."""
        return self.app

    @property
    def wb(self) -> Workbench:
        return self.workbench.wb

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(self.POLL_SECONDS, self.reload)

    def on_screen_resume(self) -> None:
        self.reload()

    def reload(self) -> None:
        if self.is_current:
            self._load_worker()

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def _load_worker(self) -> None:
        data = self.load()  # a failure is reported by ReportsWorkerErrors
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_safely, data)

    def _show_safely(self, data: Any) -> None:
        if self.is_attached:
            self.show(data)

    def load(self) -> Any:  # pragma: no cover - overridden
        return None

    def refusal(self, action: str) -> str:
        """Why ``action``, whose key is shown but disabled now, cannot run ("": say
        nothing). Screens whose keys depend on the state say it here."""
        return ""

    def on_key(self, event: events.Key) -> None:
        """A key whose action is disabled now says why in one line, instead of nothing
        (a text field that takes the key never lets it come here)."""
        for binding in self.BINDINGS:
            if not isinstance(binding, Binding) or event.key not in binding.key.split(","):
                continue
            action = binding.action.partition("(")[0]
            if self.check_action(action, ()) is None and (why := self.refusal(action)):
                self.notify(why, severity="warning", timeout=4)
            return

    def show(self, data: Any) -> None:  # pragma: no cover - overridden
        pass

    def run_service(
        self, fn: Callable[..., object], *args: Any, done: str | None = None, **kwargs: Any
    ) -> None:
        """Run a service call in a thread; its error becomes a notification (reported by
        ReportsWorkerErrors, as every worker's)."""
        self._service_worker(fn, args, kwargs, done)

    def ask(
        self,
        question: str | Callable[[], str],
        yes: str,
        act: Callable[[], object],
        done: str | None = None,
    ) -> None:
        """Ask before a destructive action; on yes, ``act`` runs in a thread. A question
        that must read the store (what a delete stops) is a function, run in a thread too."""

        def answer(ok: bool | None) -> None:
            if ok:
                self.run_service(act, done=done)

        def push(text: str) -> None:
            self.app.push_screen(ConfirmScreen(text, yes=yes), answer)

        if isinstance(question, str):
            push(question)
        else:
            self._question_worker(question, push)

    @work(thread=True, exclusive=True, group="question", exit_on_error=False)
    def _question_worker(self, question: Callable[[], str], push: Callable[[str], None]) -> None:
        self.app.call_from_thread(push, question())

    @work(thread=True, group="service", exit_on_error=False)
    def _service_worker(
        self,
        fn: Callable[..., object],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        done: str | None,
    ) -> None:
        fn(*args, **kwargs)
        if done:
            self.app.call_from_thread(self.notify, done)
        self.app.call_from_thread(self.reload)


def refill(table: DataTable, keys: list[str], rows: list[tuple]) -> None:
    """Replace a table's rows; the selected row stays selected by its key (rows that
    come in above it do not move the selection to another row)."""
    current = [str(k.value) for k in table.rows]
    cursor = table.cursor_row
    selected = current[cursor] if 0 <= cursor < len(current) else None
    table.clear()
    for key, row in zip(keys, rows, strict=True):
        table.add_row(*row, key=key)
    if keys:
        table.move_cursor(
            row=keys.index(selected) if selected in keys else min(cursor, len(keys) - 1)
        )


class ListScreen(PollingScreen):
    """A screen whose heart is one table of rows: opening and deleting act on the
    highlighted row, and only when there is one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows: list = []
        self._cells: list[tuple] = []

    def fill(self, rows: list, cells: list[tuple], keys: list[str], empty_hint: str) -> None:
        """Redraw the table only when what it shows changed, keeping the cursor."""
        if cells == self._cells:
            return
        self.rows, self._cells = rows, cells
        refill(self.query_one(DataTable), keys, cells)
        self.query_one("#empty-hint", Label).update("" if rows else empty_hint)
        self.refresh_bindings()

    def selected(self) -> Any:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row is None or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("open", "delete"):
            return self.selected() is not None
        return True

    def on_data_table_row_selected(self, _event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:  # pragma: no cover - overridden
        pass


def update_rows(table: DataTable, keys: list[str], rows: list[tuple]) -> None:
    """Update in place when the rows are the same ones, so the cursor stays put."""
    if [str(k.value) for k in table.rows] != keys:
        refill(table, keys, rows)
        return
    for key, row in zip(keys, rows, strict=True):
        for col, value in zip(table.columns, row, strict=True):
            if table.get_cell(key, col) != value:
                table.update_cell(key, col, value, update_width=True)
