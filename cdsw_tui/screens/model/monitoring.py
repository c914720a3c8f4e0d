"""Monitoring: the replicas with their counts, charts of the request rate, errors and
p50/p95/p99 latency over a chosen range (``z``), the gateway's recent calls, and the
replicas' logs."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label

from cdsw_tui.errors import CdswError
from cdsw_tui.screens.base import update_rows
from cdsw_tui.screens.model.tab import ModelTab
from cdsw_tui.services import logs, models
from cdsw_tui.services.readmodels import ModelDetail
from cdsw_tui.widgets.charts import DEFAULT_RANGE, RANGES, TimeChart
from cdsw_tui.widgets.log_view import LogView
from cdsw_tui.widgets.status import badge

BUCKETS = 60  # points of each chart over its range
EVERY = 5.0  # seconds between reads of the request log for the charts


def now() -> float:
    """The charts' clock (a test sets it)."""
    return time.time()


class MonitoringTab(Vertical, ModelTab):
    DEFAULT_CSS = """
    MonitoringTab #replicas-table { height: 8; }
    MonitoringTab #requests-table { height: 7; }
    MonitoringTab #rates { height: auto; }
    MonitoringTab #rates Label { width: 1fr; }  /* wraps in its column, never over the next */
    MonitoringTab #charts { height: 12; }
    MonitoringTab #charts TimeChart { width: 1fr; height: 100%; }
    """
    ACTIONS = ("log", "zoom")
    FOCUS = "#replicas-table"

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref = ref
        self.range = DEFAULT_RANGE
        self.last_test: float | None = None  # ms of Test Model's last call
        self._read_at = 0.0  # when the charts last read the request log (monotonic)
        self._last_processed: tuple[float, int] | None = None
        self._rate_now = 0.0

    def compose(self) -> ComposeResult:
        table: DataTable = DataTable(id="replicas-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(
            "Replica", "Status", "Received", "Processed", "Success", "Failure", "Busy waits",
            "Restarts", "Uptime",
        )  # fmt: skip
        yield table
        with Horizontal(id="rates"):
            yield Label("", id="rate-label")
            yield Label("", id="gateway-latency-label")
            yield Label("", id="latency-label")
        with Horizontal(id="charts"):
            yield TimeChart(id="traffic-chart")
            yield TimeChart(id="latency-chart")
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
            self._rate_now = max(0.0, (processed - before) / max(now_t - then, 0.001))
        self._last_processed = (now_t, processed)
        self.query_one("#rate-label", Label).update(f"now {self._rate_now:.1f} calls/s")
        self._show_calls(detail)
        self.query_one("#latency-label", Label).update(
            f"Test Model: last call {self.last_test:.1f} ms"
            if self.last_test is not None
            else "Test Model: no call yet"
        )
        if self.is_shown() and time.monotonic() - self._read_at >= EVERY:
            self.read_traffic()

    def is_shown(self) -> bool:
        screen = self.model_screen
        return screen.is_current and screen.active_tab() == "monitoring"

    @work(thread=True, exclusive=True, group="traffic")
    def read_traffic(self) -> None:
        """The charts' figures, read off the UI thread from the request log."""
        self._read_at = time.monotonic()
        span, label = RANGES[self.range]
        end = now()
        try:
            figures = logs.traffic(self.wb, models.resolve(self.wb, self.ref), span, BUCKETS, end)
        except CdswError:
            return
        self.app.call_from_thread(self._draw, figures, end, label)

    def _draw(self, t: logs.Traffic, end: float, label: str) -> None:
        middle = [t.start + t.step * (i + 0.5) for i in range(len(t.rate))]

        def points(values: list) -> list[tuple[float, float]]:
            return [(x, v) for x, v in zip(middle, values, strict=True) if v is not None]

        cut = " (newest calls only)" if t.cut else ""
        self.query_one("#traffic-chart", TimeChart).draw(
            f"calls/s, last {label}{cut} (z: range)",
            t.start,
            end,
            {"calls/s": points(t.rate), "errors/s": points(t.errors)},
        )
        self.query_one("#latency-chart", TimeChart).draw(
            f"latency ms, last {label}",
            t.start,
            end,
            {"p50": points(t.p50), "p95": points(t.p95), "p99": points(t.p99)},
        )

    def action_zoom(self) -> None:
        """The charts' range: 5 min, 15 min, 1 h, 6 h, round again."""
        self.range = (self.range + 1) % len(RANGES)
        self.read_traffic()

    def _show_calls(self, detail: ModelDetail) -> None:
        """The gateway's last calls, newest first, and its latency over the last minute."""
        figures = detail.latency
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
        """A Test Model call took ``latency`` ms."""
        self.last_test = latency

    def _log_files(self) -> list[Path]:
        try:
            return logs.log_files(self.wb, models.resolve(self.wb, self.ref))
        except CdswError:
            return []

    def action_log(self, name: str) -> None:
        getattr(self.query_one("#replica-log", LogView), f"action_{name}")()
