"""env list, set and unset: variables at the global, project and model levels."""

from __future__ import annotations

import click

from cdsw_tui.cli.common import F, json_option, workbench
from cdsw_tui.errors import CdswError
from cdsw_tui.output import emit_json, table
from cdsw_tui.services import env, models, projects
from cdsw_tui.services import validation as v


@click.group("env")
def env_group() -> None:
    """Environment variables: global < project < model < deployment."""


def _scope(ctx: click.Context, project_name: str | None, model_ref: str | None) -> tuple[str, int]:
    wb = workbench(ctx)
    if project_name and model_ref:
        raise CdswError("give --project or --model, not both")
    if model_ref:
        return env.scope_of(model=models.resolve(wb, model_ref))
    if project_name:
        return env.scope_of(project=projects.get(wb, project_name))
    return env.scope_of()


scope_options = [
    click.option("--project", "project_name", help="a project's variables"),
    click.option("--model", "model_ref", help="a model's variables"),
]


def _with_scope(f: F) -> F:
    for option in reversed(scope_options):
        f = option(f)
    return f


@env_group.command("list")
@_with_scope
@click.option("--show-secrets", is_flag=True, help="print values whose names look secret")
@json_option
@click.pass_context
def env_list(
    ctx: click.Context,
    project_name: str | None,
    model_ref: str | None,
    show_secrets: bool,
    as_json: bool,
) -> None:
    """Variables of one level (global unless --project or --model)."""
    scope, scope_id = _scope(ctx, project_name, model_ref)
    values = env.list_vars(workbench(ctx), scope, scope_id)
    if not show_secrets:
        values = env.shown(values)
    rows = [{"key": k, "value": v, "scope": scope} for k, v in values.items()]
    if as_json:
        emit_json(rows)
    else:
        table(rows, ["key", "value"], empty=f"no {scope} variables")


@env_group.command("set")
@_with_scope
@click.argument("pairs", nargs=-1, required=True, metavar="K=V...")
@click.pass_context
def env_set(
    ctx: click.Context, project_name: str | None, model_ref: str | None, pairs: tuple[str, ...]
) -> None:
    """Set variables."""
    scope, scope_id = _scope(ctx, project_name, model_ref)
    values = v.env_pairs(pairs)
    env.set_vars(workbench(ctx), scope, scope_id, values)
    click.echo(f"set {', '.join(values)} ({scope})")


@env_group.command("unset")
@_with_scope
@click.argument("keys", nargs=-1, required=True, metavar="K...")
@click.pass_context
def env_unset(
    ctx: click.Context, project_name: str | None, model_ref: str | None, keys: tuple[str, ...]
) -> None:
    """Remove variables."""
    scope, scope_id = _scope(ctx, project_name, model_ref)
    missing = env.unset_vars(workbench(ctx), scope, scope_id, list(keys))
    if missing:
        raise CdswError(f"not set at the {scope} level: {', '.join(missing)}")
    click.echo(f"unset {', '.join(keys)} ({scope})")
