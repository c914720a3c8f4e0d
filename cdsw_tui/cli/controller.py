"""The controller commands: serve (in the foreground) and status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cdsw_tui.cli.common import json_option, workbench
from cdsw_tui.output import emit_json, table
from cdsw_tui.services import background, readmodels
from cdsw_tui.serving.tls import exposure_warning, server_context


@click.command()
@click.option("--host", help="gateway address (default 127.0.0.1)")
@click.option("--port", type=int, help="gateway port (default 8787)")
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False), help="serve HTTPS with this certificate (PEM)"
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False), help="the certificate's private key (PEM)"
)
@click.option("--log-file", type=click.Path(dir_okay=False), hidden=True)
@click.option("--keep", is_flag=True, hidden=True, help="run it under its keeper (background)")
@click.pass_context
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    log_file: str | None,
    keep: bool,
) -> None:
    """Run the controller in the foreground."""
    if keep:  # the background controller's parent: it restarts the controller after a crash
        from cdsw_tui.config import load_settings
        from cdsw_tui.controller import keeper

        home = load_settings().home
        ctx.exit(keeper.keep(home, Path(log_file or home / "logs" / "controller.log")))
    from cdsw_tui.controller.daemon import serve as run  # the controller only when it runs

    wb = workbench(ctx)
    if host:
        wb.settings.gateway_host = host
    if port:
        wb.settings.gateway_port = port
    if tls_cert:
        wb.settings.tls_cert = tls_cert
    if tls_key:
        wb.settings.tls_key = tls_key
    if wb.settings.tls:  # a certificate that is missing or not its key's: one line, now
        server_context(wb.settings.tls_cert, wb.settings.tls_key)
    if warning := exposure_warning(wb.settings.gateway_host, wb.settings.tls):
        click.echo(f"warning: {warning}", err=True)
    run(wb, Path(log_file) if log_file else None)


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The controller, the gateway URL and active deployments."""
    wb = workbench(ctx)
    st = background.status(wb)
    active = readmodels.deployments(wb, active=True)
    data: dict[str, Any] = {
        "controller": {"running": st.running, "pid": st.pid},
        "gateway": wb.settings.gateway_url,
        "home": str(wb.home),
        "deployments": active,
    }
    if as_json:
        emit_json(data)
        return
    running = f"running (pid {st.pid})" if st.running else "not running"
    click.echo(f"controller  {running}")
    click.echo(f"gateway     {data['gateway']}")
    click.echo(f"home        {data['home']}")
    if data["deployments"]:
        click.echo("")
        table(data["deployments"], ["id", "model", "build", "status", "replicas"])


@click.group("controller")
def controller_group() -> None:
    """The background controller: start, stop, restart, status."""


@controller_group.command("start")
@click.pass_context
def start_cmd(ctx: click.Context) -> None:
    """Start the controller in the background (nothing to do if it runs)."""
    st, started = background.ensure(workbench(ctx))
    click.echo(f"controller {'started' if started else 'already running'} (pid {st.pid})")


@controller_group.command("stop")
def stop_cmd() -> None:
    """Stop the controller; replicas keep serving, and the next controller adopts them."""
    from cdsw_tui.config import load_settings

    pid = background.stop(load_settings().home)
    click.echo("no controller runs" if pid is None else f"controller stopped (pid {pid})")


@controller_group.command("restart")
@click.pass_context
def restart_cmd(ctx: click.Context) -> None:
    """Stop the controller and start it again (replicas are adopted, not restarted)."""
    wb = workbench(ctx)
    background.stop(wb.home)
    st, _ = background.ensure(wb)
    click.echo(f"controller restarted (pid {st.pid})")


@controller_group.command("status")
@json_option
@click.pass_context
def controller_status(ctx: click.Context, as_json: bool) -> None:
    """Whether the controller runs, and its pid."""
    ctx.invoke(status, as_json=as_json)
