"""Monitoring: the replicas with their counts, request rate and latency, the gateway's
recent calls, and the replicas' logs."""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, Sparkline

from cdsw_tui.errors import CdswError
from cdsw_tui.screens.base import update_rows
from cdsw_tui.screens.model.tab import ModelTab
from cdsw_tui.services import logs, models
from cdsw_tui.services.readmodels import ModelDetail
from cdsw_tui.widgets.log_view import LogView
from cdsw_tui.widgets.status import badge

HISTORY = 60  # points of each sparkline, one per poll


class MonitoringTab(Vertical, ModelTab):
    DEFAULT_CSS = """
    MonitoringTab #replicas-table { height: 8; }
    MonitoringTab #requests-table { height: 7; }
    MonitoringTab #rates { height: auto; }
    MonitoringTab #rates Vertical { width: 1fr; height: auto; margin-right: 1; }
    MonitoringTab #rates Label { width: 100%; }  /* wraps in its column, never over the next */
    MonitoringTab Sparkline { height: 2; }
    """
    ACTIONS = ("log",)
    FOCUS = "#replicas-table"

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref = ref
        self.rate = deque([0.0] * HISTORY, maxlen=HISTORY)
        self.latency = deque([0.0] * HISTORY, maxlen=HISTORY)  # of Test Model's calls
        self.gateway_p99 = deque([0.0] * HISTORY, maxlen=HISTORY)
        self._last_processed: tuple[float, int] | None = None

    def compose(self) -> ComposeResult:
        table: DataTable = DataTable(id="replicas-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(
            "Replica", "Status", "Received", "Processed", "Success", "Failure", "Busy waits",
            "Restarts", "Uptime",
        )  # fmt: skip
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
        calls: DataTable = DataTable(id="requests-table", cursor_type="none", zebra_stripes=True)
        calls.add_columns("Recent calls", "Status", "Code", "ms", "Replica", "In", "Out")
        yield calls
        yield LogView(self._log_files, id="replica-log", sources=True)

    def show(self, detail: ModelDetail) -> None:
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
                )  # fmt: skip
            )
        update_rows(self.query_one("#replicas-table", DataTable), [r.name for r in shown], rows)
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

    def _show_calls(self, detail: ModelDetail) -> None:
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
        update_rows(
            self.query_one("#requests-table", DataTable),
            [f"{c.get('time')}-{i}" for i, c in enumerate(calls)],
            rows,
        )

    def tested(self, latency: float) -> None:
        """A Test Model call took ``latency`` ms: it joins the test latency line."""
        self.latency.append(latency)

    def _log_files(self) -> list[Path]:
        try:
            return logs.log_files(self.wb, models.resolve(self.wb, self.ref))
        except CdswError:
            return []

    def action_log(self, name: str) -> None:
        getattr(self.query_one("#replica-log", LogView), f"action_{name}")()
