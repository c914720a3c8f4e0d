"""project create, list and delete."""

from __future__ import annotations

from typing import Any

import click

from cdsw_tui.cli.common import json_option, workbench
from cdsw_tui.errors import CdswError
from cdsw_tui.output import emit_json, table
from cdsw_tui.services import artifacts, deployments, projects, readmodels
from cdsw_tui.services import validation as v


@click.group()
def project() -> None:
    """Create, list and delete projects."""


def project_row(p: readmodels.ProjectRow) -> dict[str, Any]:
    """A project as the CLI prints it (``--json`` fields of SPEC §3)."""
    return {
        "name": p.name,
        "runtime": p.runtime,
        "engine": p.engine,
        "placement": p.placement,
        "python": p.python,
        "path": p.path,
        "models": p.models,
        "id": p.id,
    }


@project.command("create")
@click.argument("name")
@click.option("--path", "path", type=click.Path(file_okay=False), help="an existing folder of code")
@click.option("--template", type=click.Choice(["quickstart"]), help="copy a template project")
@click.option("--runtime", help="where builds and replicas run (local, docker, swarm)")
@click.option("--engine", help="the engine image of Docker builds")
@click.option(
    "--constraint",
    "constraints",
    multiple=True,
    help="where the swarm may place replicas, e.g. node.labels.gpu==true (repeatable)",
)
@click.option("--python", "python", help="the local runtime's interpreter (default: cdsw-tui's)")
@click.option(
    "--egress",
    is_flag=True,
    help="let replicas open connections out (otherwise Docker and jailed replicas have no network)",
)
@click.option(
    "--amp",
    type=click.Path(file_okay=False),
    help="an AMP folder: register it and run its .project-metadata.yaml tasks",
)
@click.option("--env", multiple=True, metavar="K=V", help="an AMP variable (repeatable)")
@click.option("--wait", is_flag=True, help="with --amp: follow the tasks until the last ends")
@json_option
@click.pass_context
def project_create(
    ctx: click.Context,
    name: str,
    path: str | None,
    template: str | None,
    runtime: str | None,
    engine: str | None,
    constraints: tuple[str, ...],
    python: str | None,
    egress: bool,
    amp: str | None,
    env: tuple[str, ...],
    wait: bool,
    as_json: bool,
) -> None:
    """Register a folder, make one from a template, or launch an AMP."""
    wb = workbench(ctx)
    if amp is not None:
        if path or template:
            raise CdswError("--amp is the project's folder: give it without --path or --template")
        from cdsw_tui.cli.amp import launched

        launched(ctx, name, amp, v.env_pairs(env), runtime, python, engine, wait)
        return
    if env or wait:
        raise CdswError("--env and --wait are for --amp")
    p = projects.create(
        wb,
        name,
        path=path,
        template=template,
        runtime=runtime,
        engine=engine,
        placement=constraints,
        python=python,
        egress=egress,
    )
    if as_json:
        emit_json(project_row(readmodels.projects(wb, p.id)[0]))
    else:
        click.echo(f"project {p.name} created at {p.path} (runtime {p.runtime})")


@project.command("list")
@json_option
@click.pass_context
def project_list(ctx: click.Context, as_json: bool) -> None:
    """All projects."""
    wb = workbench(ctx)
    rows = [project_row(p) for p in readmodels.projects(wb)]
    if as_json:
        emit_json(rows)
    else:
        table(rows, ["name", "runtime", "models", "path"], empty="no projects yet")


@project.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask")
@click.option(
    "--remove-folder",
    is_flag=True,
    help="also remove the folder a template was copied into (asked when not given)",
)
@click.pass_context
def project_delete(ctx: click.Context, name: str, yes: bool, remove_folder: bool) -> None:
    """Delete a project's models, builds and logs (its folder stays, unless it is the
    copy of a template and you say so); running deployments are stopped first."""
    wb = workbench(ctx)
    projects.get(wb, name)
    copy = projects.template_copy(wb, name)
    if not yes:
        stops = artifacts.stops_words(wb, projects.models_of(wb, name))
        click.confirm(f"delete project {name} with its models, builds and logs{stops}?", abort=True)
        if copy is not None and not remove_folder:
            remove_folder = click.confirm(
                f"also remove {copy}, the folder its template was copied into?", default=False
            )
    for note in deployments.delete_project(wb, name, remove_copy=remove_folder):
        click.echo(f"note: {note}", err=True)
    click.echo(f"project {name} deleted")


@project.command("egress")
@click.argument("name")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.pass_context
def project_egress(ctx: click.Context, name: str, state: str) -> None:
    """Whether the project's replicas may open connections out (replicas started from
    now on; builds always may, for pip)."""
    p = projects.update(workbench(ctx), name, egress=state == "on")
    said = "may open connections out" if p.egress else "have no network (Docker, jailed local)"
    click.echo(f"project {p.name}: replicas started from now on {said}")
