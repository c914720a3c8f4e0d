"""app (create, list, start, stop, restart, logs, delete): a project's applications."""

from __future__ import annotations

import time

import click

from cdsw_tui.cli.common import ensure_controller, json_option, raw_option, workbench
from cdsw_tui.errors import CdswError, NotFound
from cdsw_tui.output import emit_json, table, untrusted
from cdsw_tui.services import apps, runs
from cdsw_tui.services import validation as v
from cdsw_tui.services.context import Workbench
from cdsw_tui.services.lock import state
from cdsw_tui.store import Application

START_TIMEOUT = 300.0  # seconds --wait gives an application to answer on its port


def _said(wb: Workbench, app: Application) -> str:
    return f"{apps.summary(wb, app)['project']}/{app.name}"


def _wait_running(wb: Workbench, app: Application) -> None:
    final = apps.wait(wb, app, ("running",), START_TIMEOUT)
    if final.status != "running":
        tail = _tail(wb, final)
        raise CdswError(f"application {final.name} {final.status}: {final.reason}{tail}")
    click.echo(f"application {_said(wb, final)} running at {apps.url(wb, final)}")


def _tail(wb: Workbench, app: Application, lines: int = 5) -> str:
    run = apps.current_run(wb, app)
    if run is None:
        return ""
    text = list(runs.follow_log(wb, run, follow=False))[-lines:]
    return "".join(f"\n  {line}" for line in text)


@click.group("app")
def app_group() -> None:
    """A project's applications: scripts that serve a web app on CDSW_APP_PORT."""


@app_group.command("create")
@click.argument("ref", metavar="PROJECT/NAME")
@click.option("--script", required=True, help="a .py or .R file of the project")
@click.option("--subdomain", default="", help="its name in URLs (default: from NAME)")
@click.option("--description", default="")
@click.option("--cpu", default=1.0, type=float)
@click.option("--memory", default=2048, type=int, help="MB")
@click.option("--env", multiple=True, metavar="K=V", help="a variable of the app (repeatable)")
@click.option("--wait", is_flag=True, help="block until it answers on its port")
@json_option
@click.pass_context
def create_cmd(
    ctx: click.Context,
    ref: str,
    script: str,
    subdomain: str,
    description: str,
    cpu: float,
    memory: int,
    env: tuple[str, ...],
    wait: bool,
    as_json: bool,
) -> None:
    """Create an application and start it."""
    wb = workbench(ctx)
    project_name, sep, name = ref.partition("/")
    if not sep:
        raise CdswError(f"an application is PROJECT/NAME, not {ref!r}")
    spec = apps.AppSpec(
        name=name,
        script=script,
        subdomain=subdomain,
        description=description,
        cpu=cpu,
        memory=memory,
        env=v.env_pairs(env),
    )
    app = apps.create(wb, project_name, spec)
    ensure_controller(wb)
    if as_json:
        emit_json(apps.summary(wb, app))
    else:
        click.echo(
            f"application {project_name}/{app.name} created (subdomain {app.subdomain}, "
            f"{apps.url(wb, app)})"
        )
    if wait:
        _wait_running(wb, app)


@app_group.command("list")
@click.argument("project", required=False)
@json_option
@click.pass_context
def list_cmd(ctx: click.Context, project: str | None, as_json: bool) -> None:
    """Every application (of one project): status and URL."""
    wb = workbench(ctx)
    rows = [apps.summary(wb, a) for a in apps.list_apps(wb, project)]
    if not state(wb.home).running:  # nothing keeps them up: say so, not what was last seen
        for row in rows:
            if row["status"] != "stopped":
                row["status"], row["reason"] = "stopped", "no controller runs"
    if as_json:
        emit_json(rows)
        return
    table(
        rows,
        ["project", "name", "subdomain", "status", "url", "restarts", "reason"],
        empty="no applications yet ('cdsw-tui app create PROJECT/NAME --script FILE')",
    )


def _one(ctx: click.Context, ref: str) -> tuple[Workbench, Application]:
    wb = workbench(ctx)
    return wb, apps.resolve(wb, ref)


@app_group.command("start")
@click.argument("ref", metavar="PROJECT/NAME")
@click.option("--wait", is_flag=True, help="block until it answers on its port")
@click.pass_context
def start_cmd(ctx: click.Context, ref: str, wait: bool) -> None:
    """Start a stopped application."""
    wb, app = _one(ctx, ref)
    app = apps.start(wb, app)
    ensure_controller(wb)
    click.echo(f"application {_said(wb, app)} starting")
    if wait:
        _wait_running(wb, app)


@app_group.command("stop")
@click.argument("ref", metavar="PROJECT/NAME")
@click.option("--wait", is_flag=True, help="block until it has stopped")
@click.pass_context
def stop_cmd(ctx: click.Context, ref: str, wait: bool) -> None:
    """Stop an application (it stays, stopped, until started again)."""
    wb, app = _one(ctx, ref)
    app = apps.stop(wb, app)
    if wait and state(wb.home).running:
        app = apps.wait(wb, app, ("stopped",), 60)
    click.echo(f"application {_said(wb, app)} {'stopped' if wait else 'stopping'}")


@app_group.command("restart")
@click.argument("ref", metavar="PROJECT/NAME")
@click.option("--wait", is_flag=True, help="block until it answers again")
@click.pass_context
def restart_cmd(ctx: click.Context, ref: str, wait: bool) -> None:
    """Stop the application's process and start it again at once."""
    wb, app = _one(ctx, ref)
    before = apps.current_run(wb, app)
    app = apps.restart(wb, app)
    ensure_controller(wb)
    click.echo(f"application {_said(wb, app)} restarting")
    if wait:
        deadline = time.monotonic() + 60
        while (now := apps.current_run(wb, app)) is None or (
            before is not None and now.id == before.id
        ):
            if time.monotonic() > deadline:
                raise CdswError(f"application {app.name} did not start again within 60 s")
            time.sleep(0.2)
        _wait_running(wb, app)


@app_group.command("logs")
@click.argument("ref", metavar="PROJECT/NAME")
@click.option("--follow", is_flag=True, help="keep printing, across restarts, until it stops")
@raw_option
@click.pass_context
def logs_cmd(ctx: click.Context, ref: str, follow: bool, raw: bool) -> None:
    """The output of the application's newest start."""
    wb, app = _one(ctx, ref)
    run = apps.current_run(wb, app)
    if run is None and not follow:
        click.echo(f"application {app.name} has not started yet", err=True)
        return
    seen: int | None = None
    while True:
        if run is not None and run.id != seen:
            seen = run.id
            for line in runs.follow_log(wb, run, follow=follow):
                untrusted(line, raw)  # what the app printed: control characters escaped
        if not follow:
            return
        try:
            app = apps.refresh(wb, app)
        except NotFound:
            return
        if app.desired == "stopped" and (run is None or apps.ended(runs.refresh(wb, run))):
            return
        time.sleep(0.3)
        run = apps.current_run(wb, app)


@app_group.command("delete")
@click.argument("ref", metavar="PROJECT/NAME")
@click.pass_context
def delete_cmd(ctx: click.Context, ref: str) -> None:
    """Delete an application, its starts and their logs (it is stopped first)."""
    wb, app = _one(ctx, ref)
    said = _said(wb, app)
    apps.delete(wb, app)
    click.echo(f"application {said} deleted")
