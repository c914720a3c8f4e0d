"""What the command modules share: the workbench of a run, the controller, waiting, --json."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cdsw_tui.errors import CdswError
from cdsw_tui.output import count
from cdsw_tui.services import background, builds, deployments
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Build, Deployment

F = TypeVar("F", bound=Callable[..., Any])  # a command function, under its decorators

json_option = click.option("--json", "as_json", is_flag=True, help="print a JSON array")
raw_option = click.option(
    "--raw", is_flag=True, help="print control characters as they are, even to a terminal"
)


def workbench(ctx: click.Context) -> Workbench:
    """The run's one Workbench, opened on first use, its warnings said once, closed at exit."""
    root = ctx.find_root()
    if root.obj is None:
        root.obj = Workbench()
        root.call_on_close(root.obj.close)
        for warning in root.obj.warnings:
            click.echo(f"warning: {warning}", err=True)
    return root.obj


def ensure_controller(wb: Workbench) -> bool:
    """A controller runs (started in the background, and said so, if none did)."""
    st, started = background.ensure(wb)
    if started:
        click.echo(f"started the controller in the background (pid {st.pid})", err=True)
    return started


def wait_build(wb: Workbench, build: Build) -> None:
    final = builds.wait(wb, build)
    if final.status != "built":
        raise CdswError(f"build {final.number} {final.status}: {final.reason}")
    click.echo(f"build {final.number} built in {builds.summary(wb, final)['duration']} s", err=True)


def wait_deployment(wb: Workbench, deployment: Deployment) -> None:
    final = deployments.wait(wb, deployment)
    if final.status != "deployed":
        raise CdswError(
            f"deployment {final.id} {final.status}: {final.reason or 'no reason recorded'}"
        )
    click.echo(f"deployment {final.id} deployed with {count(final.replicas, 'replica')}", err=True)
