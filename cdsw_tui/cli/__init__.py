"""The command line (SPEC §3): the main group, its error handling, and a map of command
names to the module of their noun, imported only when the command runs (as pip does)."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import traceback
from typing import Any

import click

from cdsw_tui.cli.common import workbench
from cdsw_tui.errors import CdswError
from cdsw_tui.output import count, printable
from cdsw_tui.services.context import Workbench

GIT_MISSING = (
    "git is not installed (or not on PATH): cdsw-tui snapshots each build's project with "
    "it; install it (apt-get install git, dnf install git, brew install git)"
)
# command name -> "module:attribute" under cdsw_tui.cli
COMMANDS = {
    "serve": "controller:serve",
    "status": "controller:status",
    "controller": "controller:controller_group",
    "project": "project:project",
    "model": "model:model",
    "apikey": "apikey:apikey_group",
    "build": "build:build_cmd",
    "builds": "build:builds_cmd",
    "build-log": "build:build_log",
    "cancel": "build:cancel_cmd",
    "deploy": "deploy:deploy_cmd",
    "deployments": "deploy:deployments_cmd",
    "stop": "deploy:stop_cmd",
    "restart": "deploy:restart_cmd",
    "scale": "deploy:scale_cmd",
    "logs": "deploy:logs_cmd",
    "call": "call:call_cmd",
    "sample": "call:sample_cmd",
    "requests": "call:requests_cmd",
    "openapi": "call:openapi_cmd",
    "metrics": "call:metrics_cmd",
    "engine": "engine:engine_group",
    "registry": "engine:registry_group",
    "env": "env:env_group",
    "store": "store:store_group",
    "job": "job:job_group",
    "jobs": "job:jobs_cmd",
    "run": "job:run_cmd",
    "app": "app:app_group",
    "amp": "amp:amp_group",
}


class Group(click.Group):
    """Commands found in COMMANDS; errors become one line and a non-zero exit, with a
    traceback only on request (CDSW_TUI_DEBUG)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, attribute = where.split(":")
        command = getattr(importlib.import_module(f"cdsw_tui.cli.{module}"), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CdswError as exc:
            click.echo(f"error: {printable(exc.message)}", err=True)  # may quote a replica
            ctx.exit(1)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            ctx.exit(0)
        except Exception as exc:
            if os.environ.get("CDSW_TUI_DEBUG"):
                traceback.print_exc()
            else:
                click.echo(
                    f"error: unexpected {type(exc).__name__}: {exc} (set CDSW_TUI_DEBUG=1 for the traceback)",
                    err=True,
                )
            ctx.exit(2)


@click.group(
    cls=Group, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="cdsw-tui")
@click.pass_context
def main(ctx: click.Context) -> None:
    """cdsw-tui: turn a Python or R function into a versioned REST API. Bare: open the workbench."""
    if shutil.which("git") is None:  # before GitPython's 15 lines say it on first use
        raise CdswError(GIT_MISSING)
    if ctx.invoked_subcommand is None:
        from cdsw_tui.app import run_app  # Textual only when the workbench opens

        wb = workbench(ctx)
        run_app(wb)
        _still_serving(wb)


def _still_serving(wb: Workbench) -> None:
    """Leaving the workbench leaves the controller and its replicas serving: say so."""
    from cdsw_tui.services import readmodels
    from cdsw_tui.services.lock import state

    active = [
        d
        for d in readmodels.deployments(wb, active=True)
        if d["status"] in ("deploying", "deployed")
    ]
    if not active or not state(wb.home).running:
        return
    names = sorted({d["model"] for d in active})
    first = names[0]
    click.echo(
        f"{count(len(names), 'model')} still serving at {wb.settings.gateway_url} "
        f"({', '.join(names[:5])}{' ...' if len(names) > 5 else ''}); "
        f"'cdsw-tui stop {first}' stops one, 'cdsw-tui status' lists them",
        err=True,
    )


if __name__ == "__main__":
    sys.exit(main())
