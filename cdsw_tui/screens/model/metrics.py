"""Metrics: what the model tracked with the cdsw/cml metrics API (CML's model metrics
view): a chart per numeric metric over time, per-call values and delayed ground truth
merged into their call, and the records as a table, filtered by deployment and build."""

from __future__ import annotations

import json
import time
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, Select

from cdsw_tui.screens.base import update_rows
from cdsw_tui.screens.model.tab import ModelTab
from cdsw_tui.services import metrics
from cdsw_tui.services.readmodels import ModelDetail
from cdsw_tui.store import pk
from cdsw_tui.widgets.charts import TimeChart

CHARTS = 4  # metrics charted at most (the others are in the table)
EVERY = 5.0  # seconds between reads while the tab is shown
ALL = "all"


def numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class MetricsTab(Vertical, ModelTab):
    DEFAULT_CSS = """
    MetricsTab #metrics-filters { height: auto; }
    MetricsTab #metrics-filters Select { width: 1fr; margin-right: 2; }
    MetricsTab #metrics-charts { height: 12; }
    MetricsTab #metrics-charts TimeChart { width: 1fr; height: 100%; }
    MetricsTab #metrics-table { height: 1fr; min-height: 4; }
    """
    FOCUS = "#metrics-table"

    def __init__(self) -> None:
        super().__init__()
        self._read_at = 0.0
        self._filters: tuple[list, list] = ([], [])  # the Selects' options as last set
        self.records: list[dict] = []

    def compose(self) -> ComposeResult:
        with Horizontal(id="metrics-filters"):
            yield Select([], prompt="all deployments", id="metrics-deployment", compact=True)
            yield Select([], prompt="all builds", id="metrics-build", compact=True)
        yield Label("", id="metrics-summary")
        yield Horizontal(id="metrics-charts")
        table: DataTable = DataTable(id="metrics-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("Time (UTC)", "Deployment", "Build", "Replica", "Prediction", "Metrics")
        yield table

    def show(self, detail: ModelDetail) -> None:
        deployments = [
            (f"deployment {pk(d)} (build {detail.build_numbers.get(d.build_id, '-')})", pk(d))
            for d in detail.deployments
        ]
        builds = [(f"build {b.number}", pk(b)) for b in detail.builds]
        if (deployments, builds) != self._filters:  # setting options clears the choice
            self._filters = (deployments, builds)
            self._options("#metrics-deployment", deployments)
            self._options("#metrics-build", builds)
        screen = self.model_screen
        shown = screen.is_current and screen.active_tab() == "metrics"
        if shown and time.monotonic() - self._read_at >= EVERY:
            self.read_records()

    def _options(self, selector: str, options: list[tuple[str, int]]) -> None:
        select = self.query_one(selector, Select)
        chosen = select.value
        select.set_options(options)
        if chosen in {v for _, v in options}:
            select.value = chosen

    @on(Select.Changed)
    def _filtered(self) -> None:
        self.read_records()

    def _chosen(self, selector: str) -> int | None:
        value = self.query_one(selector, Select).value
        return value if isinstance(value, int) else None

    @work(thread=True, exclusive=True, group="metrics")
    def read_records(self) -> None:
        detail = self.detail
        if detail is None:
            return
        self._read_at = time.monotonic()
        records = metrics.read(
            self.wb,
            model_id=detail.model.id,
            deployment_id=self._chosen("#metrics-deployment"),
            build_id=self._chosen("#metrics-build"),
        )
        self.app.call_from_thread(self._draw, records)

    def _draw(self, records: list[dict]) -> None:
        self.records = records
        series: dict[str, list[tuple[float, float]]] = {}
        for r in records:
            for name, value in r["metrics"].items():
                if numeric(value):
                    series.setdefault(name, []).append((r["startTimeStampMs"] / 1000, value))
        names = sorted(series)
        charted = names[:CHARTS]
        more = f"; {len(names) - CHARTS} more in the table" if len(names) > CHARTS else ""
        self.query_one("#metrics-summary", Label).update(
            f"{len(records)} records, {len(names)} numeric metrics{more}"
            if records
            else "no tracked metrics yet: model code calls cdsw.track_metric "
            "(docs/compat.md), and delayed ones arrive through the metrics API"
        )
        box = self.query_one("#metrics-charts", Horizontal)
        box.display = bool(charted)
        charts = list(box.query(TimeChart))
        for extra in charts[len(charted) :]:
            extra.remove()
        if len(charts) < len(charted):
            box.mount_all(TimeChart() for _ in range(len(charted) - len(charts)))
        self.call_after_refresh(self._fill, charted, series)
        table = self.query_one("#metrics-table", DataTable)
        newest = list(reversed(records))[:200]
        rows = [
            (
                metrics.iso(r["startTimeStampMs"])[11:19],
                str(metrics.ident(r["modelDeploymentCrn"]) or "-"),
                str(r["buildNumber"] or "-"),
                r["replica"] or "-",
                (r["predictionUuid"] or ("aggregate" if r["aggregate"] else "-"))[:13],
                json.dumps(r["metrics"])[:200],
            )
            for r in newest
        ]
        update_rows(table, [f"{r['startTimeStampMs']}-{i}" for i, r in enumerate(newest)], rows)

    def _fill(self, charted: list[str], series: dict[str, list[tuple[float, float]]]) -> None:
        charts = self.query_one("#metrics-charts").query(TimeChart)
        for chart, name in zip(charts, charted, strict=False):
            points = series[name]
            start, end = points[0][0], points[-1][0]
            chart.draw(name, start, max(end, start + 1), {name: points})
