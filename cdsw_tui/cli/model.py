"""model create, list, show, delete, regenerate-key and auth."""

from __future__ import annotations

from typing import Any

import click

from cdsw_tui.cli.common import (
    ensure_controller,
    json_option,
    wait_build,
    wait_deployment,
    workbench,
)
from cdsw_tui.errors import ValidationError
from cdsw_tui.output import emit_json, table
from cdsw_tui.services import api_keys, artifacts, builds, deployments, models, projects, readmodels
from cdsw_tui.services import validation as v
from cdsw_tui.services.access_keys import mask
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Model


@click.group()
def model() -> None:
    """Create, list, show and delete models."""


def model_row(r: readmodels.ModelRow) -> dict[str, Any]:
    """A model as the CLI prints it (``--json`` fields of SPEC §3)."""
    return {
        "name": r.name,
        "slug": v.slug(r.name),  # names it on the command line as well as the name does
        "project": r.project,
        "status": r.status,
        "file": r.file,
        "function": r.function,
        "kernel": r.kernel,
        "id": r.id,
        "description": r.description,
        "build": r.serving_build,  # the build that runs, else the newest that could
        "newest_build": f"{r.build} ({r.newest_status})" if r.build is not None else None,
        "deployment": r.deployment,
        "replicas": r.default_replicas,
        "cpu": r.cpu,
        "memory": r.memory,
        "gpu": r.gpu,
        "example_input": r.example_input,
        "example_output": r.example_output,
    }


def one_row(wb: Workbench, model: Model) -> dict[str, Any]:
    return model_row(readmodels.models(wb, model_id=model.id)[0])


@model.command("create")
@click.argument("ref", metavar="PROJECT/NAME")
@click.option("--file", "file", required=True, help="file of the function, relative to the project")
@click.option("--function", required=True, help="the function to call")
@click.option("--kernel", default="python3", type=click.Choice(["python3", "r"]), show_default=True)
@click.option("--description", default="")
@click.option("--example-input", default="", help="JSON")
@click.option("--example-output", default="", help="JSON")
@click.option("--replicas", default=1, type=int, show_default=True)
@click.option("--cpu", default=1.0, type=float, show_default=True)
@click.option("--memory", default=2048, type=int, show_default=True, help="MB")
@click.option("--gpu", default=0, type=int, show_default=True)
@click.option("--env", "env", multiple=True, help="K=V, repeatable")
@click.option("--comment", default="", help="comment of the first build")
@click.option("--no-deploy", is_flag=True, help="create only; no build, no deployment")
@click.option("--wait", is_flag=True, help="wait until built and deployed")
@json_option
@click.pass_context
def model_create(
    ctx: click.Context,
    ref: str,
    file: str,
    function: str,
    kernel: str,
    description: str,
    example_input: str,
    example_output: str,
    replicas: int,
    cpu: float,
    memory: int,
    gpu: int,
    env: tuple[str, ...],
    comment: str,
    no_deploy: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Create a model; unless --no-deploy, build it and deploy it (CDSW's Deploy Model)."""
    if "/" not in ref:
        raise ValidationError(f"name the model as PROJECT/NAME, not {ref!r}", field="name")
    project_name, name = ref.split("/", 1)
    wb = workbench(ctx)
    spec = models.ModelSpec(
        name=name,
        file=file,
        function=function,
        kernel=kernel,
        description=description,
        example_input=example_input,
        example_output=example_output,
        replicas=replicas,
        cpu=cpu,
        memory=memory,
        gpu=gpu,
        env=v.env_pairs(env),
    )
    m = models.create(wb, project_name, spec)
    if as_json:
        emit_json(one_row(wb, m))
    else:
        click.echo(f"model {project_name}/{m.name} created (id {m.id})")
    if no_deploy:
        return

    build = deployments.request(wb, m, new_build=True, comment=comment).build
    assert build is not None
    ensure_controller(wb)
    if not as_json:
        click.echo(f"build {build.number} queued")
    if caveat := deployments.runtime_caveat(wb, build.runtime):
        click.echo(f"warning: {caveat}", err=True)
    if wait:
        wait_build(wb, build)
        d = deployments.wait_requested(wb, builds.refresh(wb, build))
        wait_deployment(wb, d)


@model.command("list")
@click.argument("project_name", required=False, metavar="[PROJECT]")
@json_option
@click.pass_context
def model_list(ctx: click.Context, project_name: str | None, as_json: bool) -> None:
    """Models of one project or of all."""
    wb = workbench(ctx)
    project_id = projects.get(wb, project_name).id if project_name else None
    rows = [model_row(r) for r in readmodels.models(wb, project_id)]
    if as_json:
        emit_json(rows)
    else:
        table(
            rows,
            ["project", "name", "slug", "status", "build", "deployment", "file", "function"],
            empty="no models yet",
        )


@model.command("show")
@click.argument("ref", metavar="MODEL")
@click.option("--show-key", is_flag=True, help="print the access key")
@json_option
@click.pass_context
def model_show(ctx: click.Context, ref: str, show_key: bool, as_json: bool) -> None:
    """One model's details."""
    wb = workbench(ctx)
    m = models.resolve(wb, ref)
    row = one_row(wb, m)
    if show_key:
        row["access_key"] = m.access_key
    if as_json:
        emit_json(row)
        return
    row.setdefault("access_key", mask(m.access_key) + "  (--show-key to see it)")
    for key, value in row.items():
        click.echo(f"{key.replace('_', ' '):<15} {'-' if value in (None, '') else value}")


@model.command("delete")
@click.argument("ref", metavar="MODEL")
@click.option("--yes", is_flag=True, help="do not ask")
@click.pass_context
def model_delete(ctx: click.Context, ref: str, yes: bool) -> None:
    """Delete a model with its builds and logs; a running deployment is stopped first."""
    wb = workbench(ctx)
    m = models.resolve(wb, ref)
    if not yes:
        stops = artifacts.stops_words(wb, [m])
        click.confirm(f"delete model {ref} with its builds and logs{stops}?", abort=True)
    for note in deployments.delete_model(wb, m):
        click.echo(f"note: {note}", err=True)
    click.echo(f"model {ref} deleted")


@model.command("regenerate-key")
@click.argument("ref", metavar="MODEL")
@click.option("--yes", is_flag=True, help="do not ask")
@click.pass_context
def model_regenerate_key(ctx: click.Context, ref: str, yes: bool) -> None:
    """Give the model a new access key; the old one stops working at once."""
    wb = workbench(ctx)
    m = models.resolve(wb, ref)
    if not yes:
        click.confirm(
            f"regenerate the access key of {ref}? callers using the old key will fail", abort=True
        )
    models.regenerate_key(wb, m)
    click.echo(
        f"model {ref} has a new access key (see it with 'cdsw-tui model show {ref} --show-key')"
    )


@model.command("auth")
@click.argument("ref", metavar="MODEL")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.pass_context
def model_auth(ctx: click.Context, ref: str, state: str) -> None:
    """Require an API key (Authorization: Bearer) on calls to the model, or not."""
    wb = workbench(ctx)
    api_keys.set_auth(wb, models.resolve(wb, ref), state == "on")
    click.echo(f"authentication {state} for {ref}")
