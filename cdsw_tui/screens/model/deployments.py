"""Deployments: every deployment of the model, the active one starred; Re-deploy opens the
deploy form on the selected one's build (CDSW's rollback)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label

from cdsw_tui.output import printable
from cdsw_tui.screens.base import update_rows
from cdsw_tui.screens.model.tab import ModelTab
from cdsw_tui.services.readmodels import ModelDetail
from cdsw_tui.widgets.status import badge, dash, when


class DeploymentsTab(Vertical, ModelTab):
    DEFAULT_CSS = "DeploymentsTab #deployments-table { height: 12; }"
    ACTIONS = ("redeploy",)
    FOCUS = "#deployments-table"

    def compose(self) -> ComposeResult:
        table: DataTable = DataTable(id="deployments-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(
            " ", "Deployment", "Build", "Status", "Replicas", "CPU", "Memory", "GPU", "Created",
            "Reason",
        )  # fmt: skip
        yield table
        yield Label(
            "r: Re-deploy the selected deployment's build (the form opens prefilled)",
            classes="hint",
        )

    def show(self, detail: ModelDetail) -> None:
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
                printable(d.reason),
            )
            for d in detail.deployments
        ]
        table = self.query_one("#deployments-table", DataTable)
        update_rows(table, [str(d.id) for d in detail.deployments], rows)

    def can(self, action: str, detail: ModelDetail | None) -> bool:
        return detail is not None and bool(detail.deployments)

    def action_redeploy(self) -> None:
        detail = self.detail
        if detail is None or not detail.deployments:
            return
        table = self.query_one("#deployments-table", DataTable)
        index = min(table.cursor_row or 0, len(detail.deployments) - 1)
        d = detail.deployments[index]
        # as a rollback does: the build, resources and variables of the one chosen, at the
        # scale the model runs at now
        running = detail.active.replicas if detail.active is not None else 0
        self.model_screen.deploy_form(detail.build_numbers.get(d.build_id), d, scale=running)
