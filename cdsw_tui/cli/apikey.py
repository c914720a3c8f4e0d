"""apikey create, list and delete: API keys for models with authentication on."""

from __future__ import annotations

import click

from cdsw_tui.cli.common import json_option, workbench
from cdsw_tui.output import emit_json, table
from cdsw_tui.services import api_keys
from cdsw_tui.services.builds import iso


@click.group("apikey")
def apikey_group() -> None:
    """API keys for models with authentication on."""


@apikey_group.command("create")
@click.argument("name")
@click.pass_context
def apikey_create(ctx: click.Context, name: str) -> None:
    """Make a key; it is printed once and only its hash is kept."""
    click.echo(api_keys.create(workbench(ctx), name))


@apikey_group.command("list")
@json_option
@click.pass_context
def apikey_list(ctx: click.Context, as_json: bool) -> None:
    """Key names (never the keys)."""
    rows = [
        {"name": k.name, "created_at": iso(k.created_at)}
        for k in api_keys.list_keys(workbench(ctx))
    ]
    if as_json:
        emit_json(rows)
    else:
        table(rows, ["name", "created_at"], empty="no API keys")


@apikey_group.command("delete")
@click.argument("name")
@click.pass_context
def apikey_delete(ctx: click.Context, name: str) -> None:
    """Revoke a key."""
    api_keys.delete(workbench(ctx), name)
    click.echo(f"API key {name} deleted")
