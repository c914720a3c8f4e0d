"""The Test Model pane: input prefilled with the example, one key sends it, the answer
shows its status, latency, pretty JSON and ReplicaID, and earlier calls stay listed."""

from __future__ import annotations

import json
import time

from rich.syntax import Syntax
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable, Label, Static

from cdsw_tui.errors import CdswError
from cdsw_tui.widgets.host import host
from cdsw_tui.widgets.json_editor import JsonEditor
from cdsw_tui.widgets.workers import ReportsWorkerErrors


class TestPane(ReportsWorkerErrors, Vertical):
    __test__ = False  # a widget, not a pytest class

    DEFAULT_CSS = """
    TestPane { height: auto; border: round $primary; padding: 0 1; }
    TestPane #test-row { height: auto; }
    TestPane #test-input { width: 1fr; height: auto; }
    TestPane #test-result { width: 1fr; height: auto; min-height: 6; padding-left: 1; }
    TestPane #test-response { height: auto; }
    TestPane #test-status { width: 100%; height: auto; }  /* an error wraps, whole */
    TestPane #test-status.-ok { color: $success; }
    TestPane #test-status.-error { color: $error; }
    TestPane #history { height: 6; }
    """

    class Done(Message):
        def __init__(self, status: int, body: dict, latency: float) -> None:
            super().__init__()
            self.status = status
            self.body = body
            self.latency = latency

    def __init__(self, model_ref: str, example: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model_ref = model_ref
        self.example = example
        self.border_title = "Test Model"
        self.last_body: dict | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="test-row"):
            with Vertical(id="test-input"):
                yield Label("Input")
                yield JsonEditor(self.example or "{}", id="test-json", height=5)
                yield Button("Test (ctrl+t)", id="test-send", variant="primary")
            with Vertical(id="test-result"):
                yield Label("", id="test-status")
                yield Static("", id="test-response")
        table: DataTable = DataTable(id="history", cursor_type="row", zebra_stripes=True)
        table.add_columns("Time", "Status", "Latency", "ReplicaID", "Input")
        yield table

    @on(Button.Pressed, "#test-send")
    def _pressed(self) -> None:
        self.send()

    def send(self) -> None:
        editor = self.query_one(JsonEditor)
        problem = editor.error()
        status = self.query_one("#test-status", Label)
        self.query_one("#test-response", Static).update("")  # no answer of an earlier call
        if problem:  # said where the answer goes, whole, and nothing is sent
            status.update(f"✘ input is {problem}")
            status.set_classes("-error")
            return
        status.update("sending…")
        status.set_classes("")
        self._call(editor.text)

    @work(thread=True, exclusive=True, group="test-call", exit_on_error=False)
    def _call(self, text: str) -> None:
        from cdsw_tui.services import calls, models

        wb = host(self).wb
        try:
            result = calls.call(wb, models.resolve(wb, self.model_ref), text)
        except CdswError as exc:
            self.app.call_from_thread(
                self._show,
                0,
                {"success": False, "error": {"code": "client", "message": exc.message}},
                0.0,
                text,
            )
            return
        self.app.call_from_thread(self._show, result.status, result.body, result.latency_ms, text)

    def _show(self, status: int, body: dict, latency: float, text: str) -> None:
        ok = status == 200 and body.get("success")
        self.last_body = body
        replica = body.get("ReplicaID") or "-"
        label = self.query_one("#test-status", Label)
        if ok:
            label.update(f"✔ {status}  ·  {latency:.1f} ms  ·  ReplicaID {replica}")
        else:
            error = body.get("error") or {}
            label.update(
                f"✘ {status or 'no answer'} {error.get('code', '')}  ·  {latency:.1f} ms  ·  {error.get('message', '')}"
            )
        label.set_classes("-ok" if ok else "-error")
        shown = body.get("response") if ok else body
        self.query_one("#test-response", Static).update(
            Syntax(json.dumps(shown, indent=2), "json", theme="ansi_dark", word_wrap=True)
        )
        compact = " ".join(text.split())
        self.query_one("#history", DataTable).add_row(
            time.strftime("%H:%M:%S"),
            str(status or "-"),
            f"{latency:.1f} ms",
            replica,
            compact if len(compact) < 40 else compact[:37] + "...",
        )
        self.post_message(self.Done(status, body, latency))
