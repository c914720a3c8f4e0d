"""The command line (SPEC §3): thin; every operation is a service call."""

from __future__ import annotations

import os
import sys
import traceback

import click

from cdsw_tui.errors import CdswError
from cdsw_tui.output import count, emit_json, table
from cdsw_tui.services.context import Workbench


class Group(click.Group):
    """Turns errors into one line and a non-zero exit; a traceback only on request."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CdswError as exc:
            click.echo(f"error: {exc.message}", err=True)
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


def _wb(ctx: click.Context) -> Workbench:
    if ctx.obj is None:
        ctx.obj = Workbench()
        ctx.call_on_close(ctx.obj.close)
        for warning in ctx.obj.warnings:
            click.echo(f"warning: {warning}", err=True)
    return ctx.obj


def _controller(wb: Workbench) -> bool:
    """A controller runs (started in the background, and said so, if none did)."""
    from cdsw_tui.services import controller

    st, started = controller.ensure(wb)
    if started:
        click.echo(f"started the controller in the background (pid {st.pid})", err=True)
    return started


json_option = click.option("--json", "as_json", is_flag=True, help="print a JSON array")


@click.group(
    cls=Group, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="cdsw-tui")
@click.pass_context
def main(ctx: click.Context) -> None:
    """cdsw-tui: turn a Python or R function into a versioned REST API. Bare: open the workbench."""
    if ctx.invoked_subcommand is None:
        from cdsw_tui.app import run_app

        wb = _wb(ctx)
        run_app(wb)
        _still_serving(wb)


def _still_serving(wb: Workbench) -> None:
    """Leaving the workbench leaves the controller and its replicas serving: say so."""
    from cdsw_tui.services import deployments
    from cdsw_tui.services.lock import state

    active = [d for d in deployments.list_deployments(wb) if d.status in ("deploying", "deployed")]
    if not active or not state(wb.home).running:
        return
    names = sorted({deployments.summary(wb, d)["model"] for d in active})
    first = names[0]
    click.echo(
        f"{count(len(names), 'model')} still serving at {wb.settings.gateway_url} "
        f"({', '.join(names[:5])}{' ...' if len(names) > 5 else ''}); "
        f"'cdsw-tui stop {first}' stops one, 'cdsw-tui status' lists them",
        err=True,
    )


# -- controller --------------------------------------------------------------


@main.command()
@click.option("--host", help="gateway address (default 127.0.0.1)")
@click.option("--port", type=int, help="gateway port (default 8787)")
@click.option("--log-file", type=click.Path(dir_okay=False), hidden=True)
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, log_file: str | None) -> None:
    """Run the controller in the foreground."""
    from pathlib import Path

    wb = _wb(ctx)
    if host:
        wb.settings.gateway_host = host
    if port:
        wb.settings.gateway_port = port
    from cdsw_tui.controller.daemon import serve as run

    run(wb, Path(log_file) if log_file else None)


@main.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The controller, the gateway URL and active deployments."""
    from cdsw_tui.services import controller

    wb = _wb(ctx)
    st = controller.status(wb)
    data = {
        "controller": {"running": st.running, "pid": st.pid},
        "gateway": wb.settings.gateway_url,
        "home": str(wb.home),
        "deployments": [],
    }
    from cdsw_tui.services import deployments
    from cdsw_tui.store import DEPLOYMENT_ACTIVE

    data["deployments"] = [
        deployments.summary(wb, d)
        for d in deployments.list_deployments(wb)
        if d.status in DEPLOYMENT_ACTIVE
    ]
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


# -- projects -------------------------------------------------------------------


@main.group()
def project() -> None:
    """Create, list and delete projects."""


def _project_row(wb: Workbench, p, counts: dict[int, int]) -> dict:
    return {
        "name": p.name,
        "runtime": p.runtime,
        "engine": p.engine,
        "placement": [c for c in p.placement.splitlines() if c],
        "python": p.python,
        "path": p.path,
        "models": counts.get(p.id, 0),
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
@json_option
@click.pass_context
def project_create(
    ctx, name, path, template, runtime, engine, constraints, python, as_json
) -> None:
    """Register a folder, or make one from a template."""
    from cdsw_tui.services import projects

    wb = _wb(ctx)
    p = projects.create(
        wb,
        name,
        path=path,
        template=template,
        runtime=runtime,
        engine=engine,
        placement=constraints,
        python=python,
    )
    if as_json:
        emit_json(_project_row(wb, p, {}))
    else:
        click.echo(f"project {p.name} created at {p.path} (runtime {p.runtime})")


@project.command("list")
@json_option
@click.pass_context
def project_list(ctx: click.Context, as_json: bool) -> None:
    """All projects."""
    from cdsw_tui.services import projects

    wb = _wb(ctx)
    counts = projects.model_counts(wb)
    rows = [_project_row(wb, p, counts) for p in projects.list_all(wb)]
    if as_json:
        emit_json(rows)
    else:
        table(rows, ["name", "runtime", "models", "path"], empty="no projects yet")


@project.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask")
@click.pass_context
def project_delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete a project's models, builds and logs (its folder stays); running
    deployments are stopped first."""
    from cdsw_tui.services import artifacts, deployments, projects

    wb = _wb(ctx)
    projects.get(wb, name)
    if not yes:
        stops = artifacts.stops_words(wb, projects.models_of(wb, name))
        click.confirm(f"delete project {name} with its models, builds and logs{stops}?", abort=True)
    for note in deployments.delete_project(wb, name):
        click.echo(f"note: {note}", err=True)
    click.echo(f"project {name} deleted")


# -- models -------------------------------------------------------------------


@main.group()
def model() -> None:
    """Create, list, show and delete models."""


def model_row(wb: Workbench, m, *, show_key: bool = False) -> dict:
    from cdsw_tui.services import builds as builds_service
    from cdsw_tui.services import models

    every = builds_service.list_builds(wb, m)
    newest = every[0] if every else None
    deployment = models.active_deployment(wb, m)
    # the build that runs, else the newest that could: never a cancelled or failed one
    build = next((b for b in every if deployment and b.id == deployment.build_id), None) or next(
        (b for b in every if b.status == "built"), None
    )
    row = {
        "name": m.name,
        "project": models.project_of(wb, m).name,
        "status": models.status(wb, m),
        "file": m.file,
        "function": m.function,
        "kernel": m.kernel,
        "id": m.id,
        "description": m.description,
        "build": build.number if build else None,
        "newest_build": f"{newest.number} ({newest.status})" if newest else None,
        "deployment": deployment.id if deployment else None,
        "replicas": m.replicas,
        "cpu": m.cpu,
        "memory": m.memory,
        "gpu": m.gpu,
        "example_input": m.example_input,
        "example_output": m.example_output,
    }
    if show_key:
        row["access_key"] = m.access_key
    return row


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
    ctx,
    ref,
    file,
    function,
    kernel,
    description,
    example_input,
    example_output,
    replicas,
    cpu,
    memory,
    gpu,
    env,
    comment,
    no_deploy,
    wait,
    as_json,
) -> None:
    """Create a model; unless --no-deploy, build it and deploy it (CDSW's Deploy Model)."""
    from cdsw_tui.errors import ValidationError
    from cdsw_tui.services import builds, models
    from cdsw_tui.services import validation as v

    if "/" not in ref:
        raise ValidationError(f"name the model as PROJECT/NAME, not {ref!r}", field="name")
    project_name, name = ref.split("/", 1)
    wb = _wb(ctx)
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
        emit_json(model_row(wb, m))
    else:
        click.echo(f"model {project_name}/{m.name} created (id {m.id})")
    if no_deploy:
        return
    from cdsw_tui.services import deployments

    build = deployments.request(wb, m, new_build=True, comment=comment).build
    assert build is not None
    _controller(wb)
    if not as_json:
        click.echo(f"build {build.number} queued")
    if caveat := deployments.runtime_caveat(wb, build.runtime):
        click.echo(f"warning: {caveat}", err=True)
    if wait:
        _wait_build(wb, build)
        d = deployments.wait_requested(wb, builds.refresh(wb, build))
        _wait_deployment(wb, d)


@model.command("list")
@click.argument("project_name", required=False, metavar="[PROJECT]")
@json_option
@click.pass_context
def model_list(ctx: click.Context, project_name: str | None, as_json: bool) -> None:
    """Models of one project or of all."""
    from cdsw_tui.services import models

    wb = _wb(ctx)
    rows = [model_row(wb, m) for m in models.list_models(wb, project_name)]
    if as_json:
        emit_json(rows)
    else:
        table(
            rows,
            ["project", "name", "status", "build", "deployment", "file", "function"],
            empty="no models yet",
        )


@model.command("show")
@click.argument("ref", metavar="MODEL")
@click.option("--show-key", is_flag=True, help="print the access key")
@json_option
@click.pass_context
def model_show(ctx: click.Context, ref: str, show_key: bool, as_json: bool) -> None:
    """One model's details."""
    from cdsw_tui.services import models
    from cdsw_tui.services.keys import mask

    wb = _wb(ctx)
    m = models.resolve(wb, ref)
    row = model_row(wb, m, show_key=show_key)
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
    from cdsw_tui.services import artifacts, deployments, models

    wb = _wb(ctx)
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
    from cdsw_tui.services import models

    wb = _wb(ctx)
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
    from cdsw_tui.services import apikeys, models

    wb = _wb(ctx)
    apikeys.set_auth(wb, models.resolve(wb, ref), state == "on")
    click.echo(f"authentication {state} for {ref}")


@main.group("apikey")
def apikey_group() -> None:
    """API keys for models with authentication on."""


@apikey_group.command("create")
@click.argument("name")
@click.pass_context
def apikey_create(ctx: click.Context, name: str) -> None:
    """Make a key; it is printed once and only its hash is kept."""
    from cdsw_tui.services import apikeys

    click.echo(apikeys.create(_wb(ctx), name))


@apikey_group.command("list")
@json_option
@click.pass_context
def apikey_list(ctx: click.Context, as_json: bool) -> None:
    """Key names (never the keys)."""
    from cdsw_tui.services import apikeys
    from cdsw_tui.services.builds import iso

    rows = [{"name": k.name, "created_at": iso(k.created_at)} for k in apikeys.list_keys(_wb(ctx))]
    if as_json:
        emit_json(rows)
    else:
        table(rows, ["name", "created_at"], empty="no API keys")


@apikey_group.command("delete")
@click.argument("name")
@click.pass_context
def apikey_delete(ctx: click.Context, name: str) -> None:
    """Revoke a key."""
    from cdsw_tui.services import apikeys

    apikeys.delete(_wb(ctx), name)
    click.echo(f"API key {name} deleted")


# -- builds -------------------------------------------------------------------


def _wait_build(wb: Workbench, build) -> None:
    from cdsw_tui.services import builds

    final = builds.wait(wb, build)
    if final.status != "built":
        raise CdswError(f"build {final.number} {final.status}: {final.reason}")
    click.echo(f"build {final.number} built in {builds.summary(wb, final)['duration']} s", err=True)


def _print_log(wb: Workbench, build, follow: bool) -> None:
    from cdsw_tui.services import builds

    for line in builds.follow_log(wb, build, follow=follow):
        click.echo(line)


@main.command("build")
@click.argument("ref", metavar="MODEL")
@click.option("--comment", default="", help="a note kept with the build")
@click.option("--wait", is_flag=True, help="block until the build ends; exit 1 unless built")
@click.option("--follow", is_flag=True, help="print the build log as it grows")
@click.option("--no-cache", "clean", is_flag=True, help="a clean build: reuse no dependency layer")
@json_option
@click.pass_context
def build_cmd(ctx, ref, comment, wait, follow, clean, as_json) -> None:
    """Build the model from the code as it is now."""
    from cdsw_tui.services import builds, models

    wb = _wb(ctx)
    m = models.resolve(wb, ref)
    build = builds.request(wb, m, comment=comment, clean=clean)
    for warning in (w for w in build.warnings.split("\n") if w):
        click.echo(f"warning: {warning}", err=True)
    _controller(wb)
    if as_json:
        emit_json(builds.summary(wb, build))
    else:
        click.echo(f"build {build.number} of {ref} queued (snapshot {build.snapshot[:12]})")
    if follow:
        _print_log(wb, build, follow=True)
    if wait or follow:
        _wait_build(wb, build)


@main.command("builds")
@click.argument("ref", metavar="MODEL")
@json_option
@click.pass_context
def builds_cmd(ctx: click.Context, ref: str, as_json: bool) -> None:
    """A model's builds, newest first."""
    from cdsw_tui.services import builds, models

    wb = _wb(ctx)
    m = models.resolve(wb, ref)
    rows = [builds.summary(wb, b) for b in builds.list_builds(wb, m)]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        row["snapshot"] = row["snapshot"][:12]
    table(
        rows,
        ["number", "status", "snapshot", "created_at", "duration", "comment", "reason"],
        empty=f"{ref} has no builds yet",
    )


@main.command("build-log")
@click.argument("ref", metavar="MODEL")
@click.argument("number", type=int)
@click.option("--follow", "-f", is_flag=True, help="keep printing until the build ends")
@click.pass_context
def build_log(ctx: click.Context, ref: str, number: int, follow: bool) -> None:
    """The log of one build."""
    from cdsw_tui.services import builds, models

    wb = _wb(ctx)
    build = builds.get(wb, models.resolve(wb, ref), number)
    if not builds.log_path(wb, build).exists() and build.status not in ("queued", "building"):
        raise CdswError(f"build {number} has no log")
    _print_log(wb, build, follow)


@main.command("cancel")
@click.argument("ref", metavar="MODEL")
@click.argument("number", type=int, required=False)
@click.pass_context
def cancel_cmd(ctx: click.Context, ref: str, number: int | None) -> None:
    """Cancel a queued or running build (default: the newest)."""
    from cdsw_tui.services import builds, models

    wb = _wb(ctx)
    build = builds.cancel(wb, builds.get(wb, models.resolve(wb, ref), number))
    word = "cancelled" if build.status == "cancelled" else "is being cancelled"
    click.echo(f"build {build.number} {word}")


# -- deployments ---------------------------------------------------------------


def _wait_deployment(wb: Workbench, deployment) -> None:
    from cdsw_tui.services import deployments

    final = deployments.wait(wb, deployment)
    if final.status != "deployed":
        raise CdswError(
            f"deployment {final.id} {final.status}: {final.reason or 'no reason recorded'}"
        )
    click.echo(f"deployment {final.id} deployed with {count(final.replicas, 'replica')}", err=True)


def resource_options(f):
    for option in reversed(
        [
            click.option("--replicas", type=int, help="1 to 9 (default: the model's)"),
            click.option("--cpu", type=float, help="cores per replica"),
            click.option("--memory", type=int, help="MB per replica"),
            click.option("--gpu", type=int, help="GPUs per replica"),
            click.option("--env", "env", multiple=True, help="K=V for this deployment, repeatable"),
        ]
    ):
        f = option(f)
    return f


@main.command("deploy")
@click.argument("ref", metavar="MODEL")
@click.option("--build", "build_number", type=int, help="build number (default: the newest built)")
@resource_options
@click.option("--wait", is_flag=True, help="block until deployed; exit 1 if it fails")
@json_option
@click.pass_context
def deploy_cmd(ctx, ref, build_number, replicas, cpu, memory, gpu, env, wait, as_json) -> None:
    """Deploy a build; the running deployment stops once the new one answers."""
    from cdsw_tui.services import deployments, models
    from cdsw_tui.services import validation as v

    wb = _wb(ctx)
    m = models.resolve(wb, ref)
    d = deployments.request(
        wb,
        m,
        build_number=build_number,
        replicas=replicas,
        cpu=cpu,
        memory=memory,
        gpu=gpu,
        env=v.env_pairs(env),
    ).deployment
    assert d is not None
    _controller(wb)
    if as_json:
        emit_json(deployments.summary(wb, d))
    else:
        summary = deployments.summary(wb, d)
        click.echo(f"deployment {d.id} of {ref} (build {summary['build']}) pending")
        if summary["advisory"]:
            advisory = " and ".join(summary["advisory"])
            verb = "is" if len(summary["advisory"]) == 1 else "are"
            click.echo(f"note: {advisory} {verb} advisory on this runtime (not enforced)", err=True)
        if caveat := deployments.caveat(wb, d):
            click.echo(f"warning: {caveat}", err=True)
    if wait:
        _wait_deployment(wb, d)


@main.command("deployments")
@click.argument("ref", metavar="[MODEL]", required=False)
@json_option
@click.pass_context
def deployments_cmd(ctx: click.Context, ref: str | None, as_json: bool) -> None:
    """Deployments, newest first."""
    from cdsw_tui.services import deployments, models

    wb = _wb(ctx)
    m = models.resolve(wb, ref) if ref else None
    rows = [deployments.summary(wb, d) for d in deployments.list_deployments(wb, m)]
    if as_json:
        emit_json(rows)
    else:
        table(
            rows,
            ["id", "model", "build", "status", "replicas", "cpu", "memory", "created_at", "reason"],
            empty="no deployments yet",
        )


@main.command("stop")
@click.argument("ref", metavar="MODEL")
@click.option("--wait", is_flag=True, help="block until stopped")
@click.pass_context
def stop_cmd(ctx: click.Context, ref: str, wait: bool) -> None:
    """Stop the model's replicas (requests in flight finish first)."""
    from cdsw_tui.services import deployments, models

    wb = _wb(ctx)
    stopped = deployments.stop(wb, models.resolve(wb, ref))
    _controller(wb)
    click.echo(f"stopping deployment {', '.join(str(d.id) for d in stopped)}")
    if wait:
        for d in stopped:
            deployments.wait(wb, d, until=("stopped", "failed"))
        click.echo("stopped", err=True)


@main.command("restart")
@click.argument("ref", metavar="MODEL")
@click.option("--wait", is_flag=True, help="block until every replica was replaced")
@click.pass_context
def restart_cmd(ctx: click.Context, ref: str, wait: bool) -> None:
    """Restart the replicas one by one, keeping the deployment id."""
    import time

    from cdsw_tui.services import deployments, models

    wb = _wb(ctx)
    d = deployments.restart(wb, models.resolve(wb, ref))
    _controller(wb)
    click.echo(f"restarting deployment {d.id}")
    while wait and deployments.get(wb, int(d.id)).restart_requested:
        time.sleep(0.1)


@main.command("scale")
@click.argument("ref", metavar="MODEL")
@click.argument("replicas", type=int)
@click.option("--wait", is_flag=True, help="block until exactly that many replicas run")
@click.pass_context
def scale_cmd(ctx: click.Context, ref: str, replicas: int, wait: bool) -> None:
    """Change the replica count of the deployed model, without a new build."""
    from cdsw_tui.services import deployments, models

    wb = _wb(ctx)
    d = deployments.scale(wb, models.resolve(wb, ref), replicas)
    _controller(wb)
    click.echo(f"deployment {d.id} scaling to {count(d.replicas, 'replica')}")
    if wait:
        final = deployments.wait_scaled(wb, d)
        if final.status != "deployed":
            raise CdswError(
                f"deployment {final.id} {final.status}: {final.reason or 'no reason recorded'}"
            )
        click.echo(f"deployment {final.id} runs {count(final.replicas, 'replica')}", err=True)


@main.command("call")
@click.argument("ref", metavar="MODEL")
@click.argument("request_json", metavar="[JSON]", required=False)
@click.option("--api-key", help="for a model with authentication on (or CDSW_TUI_API_KEY)")
@click.pass_context
def call_cmd(ctx: click.Context, ref: str, request_json: str | None, api_key: str | None) -> None:
    """Call the model through the gateway (default: its example input)."""
    import json as _json

    from cdsw_tui.services import calls, models

    wb = _wb(ctx)
    model = models.resolve(wb, ref)
    # the gateway lives in the controller: start it as the mutating commands do (its
    # replicas outlive it and are adopted), then give it a moment to listen; something
    # else on the port is not started over (the check names it, and sends it nothing)
    patience = 0.0
    if not calls.gateway_listening(wb):
        patience = 15.0 if _controller(wb) else 0.0
    result = calls.call(wb, model, request_json, api_key=api_key, patience=patience)
    click.echo(_json.dumps(result.body))
    if not result.ok:
        ctx.exit(1)


@main.command("sample")
@click.argument("ref", metavar="MODEL")
@click.option(
    "--lang", type=click.Choice(["shell", "python", "r"]), default="shell", show_default=True
)
@click.pass_context
def sample_cmd(ctx: click.Context, ref: str, lang: str) -> None:
    """A sample call with the example input and the access key filled in."""
    from cdsw_tui.services import models, samples

    wb = _wb(ctx)
    m = models.resolve(wb, ref)
    click.echo(samples.sample(lang, wb.settings.gateway_url, m.access_key, m.example_input))


@main.command("logs")
@click.argument("ref", metavar="MODEL")
@click.option("--replica", help="one replica's log")
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines")
@click.option("--tail", type=int, help="only the last N lines")
@click.pass_context
def logs_cmd(
    ctx: click.Context, ref: str, replica: str | None, follow: bool, tail: int | None
) -> None:
    """Replica logs of the active (or newest) deployment, merged by time."""
    from cdsw_tui.services import logs, models

    wb = _wb(ctx)
    files = logs.log_files(wb, models.resolve(wb, ref), replica)
    try:
        for line in logs.read(files, tail, follow):
            click.echo(line)
    except KeyboardInterrupt:
        pass


REQUEST_COLUMNS = ["time", "status", "code", "ms", "replica", "deployment", "bytes_in", "bytes_out"]


@main.command("requests")
@click.argument("ref", metavar="MODEL")
@click.option("--follow", "-f", is_flag=True, help="keep printing new calls")
@click.option("--tail", type=click.IntRange(1, 100_000), default=20, show_default=True)
@json_option
@click.pass_context
def requests_cmd(ctx: click.Context, ref: str, follow: bool, tail: int, as_json: bool) -> None:
    """The gateway's recent calls of this model (no bodies), and their latency."""
    import json as _json

    from cdsw_tui.services import logs, models

    wb = _wb(ctx)
    model = models.resolve(wb, ref)
    records, offset = logs.recent_calls(wb, model, tail)
    if as_json and not follow:
        emit_json(records)
        return
    if as_json:
        for record in records:
            click.echo(_json.dumps(record))
    else:
        table(records, REQUEST_COLUMNS, empty=f"{ref} has had no calls yet")
        figures = logs.latency(records)
        if figures["calls"]:
            click.echo(
                f"last minute: {figures['calls']} calls, p50 {figures['p50']} ms, "
                f"p95 {figures['p95']} ms, p99 {figures['p99']} ms"
            )
    if not follow:
        return
    try:
        for record in logs.follow_calls(wb, model, offset):
            if as_json:
                click.echo(_json.dumps(record))
            else:
                click.echo("  ".join(str(record.get(c, "-")) for c in REQUEST_COLUMNS))
    except KeyboardInterrupt:
        pass


@main.command("openapi")
@click.argument("ref", metavar="MODEL")
@click.pass_context
def openapi_cmd(ctx: click.Context, ref: str) -> None:
    """An OpenAPI 3.1 description of the model's call (as the gateway serves it)."""
    from cdsw_tui.services import models

    wb = _wb(ctx)
    emit_json(models.openapi(wb, models.resolve(wb, ref)))


@main.command("metrics")
@click.argument("ref", metavar="MODEL")
@click.option("--deployment", "deployment_id", type=int, help="Only this deployment's.")
@click.option("--build", "build_number", type=int, help="Only this build's.")
@click.option("--start", "start_ms", type=int, help="From this time (ms since the epoch).")
@click.option("--end", "end_ms", type=int, help="Until this time (ms since the epoch).")
@json_option
@click.pass_context
def metrics_cmd(
    ctx: click.Context,
    ref: str,
    deployment_id: int | None,
    build_number: int | None,
    start_ms: int | None,
    end_ms: int | None,
    as_json: bool,
) -> None:
    """What the model tracked (cdsw/cml metrics API), oldest first: one record per call
    with metrics on, aggregates, and delayed metrics merged into their call."""
    import json as _json

    from cdsw_tui.services import builds, metrics, models

    wb = _wb(ctx)
    model = models.resolve(wb, ref)
    build_id = builds.get(wb, model, build_number).id if build_number is not None else None
    records = metrics.read(
        wb,
        model_id=model.id,
        deployment_id=deployment_id,
        build_id=build_id,
        start_ms=start_ms,
        end_ms=end_ms,
    )
    rows = [
        {
            "time": metrics.iso(r["startTimeStampMs"]),  # ISO, as every other listing
            "uuid": r["predictionUuid"],
            "deployment": metrics.ident(r["modelDeploymentCrn"]),
            "build": r["buildNumber"],
            "replica": r["replica"],
            "aggregate": r["aggregate"],
            "start_ms": r["startTimeStampMs"],
            "end_ms": r["endTimeStampMs"],
            "metrics": r["metrics"],
        }
        for r in records
    ]
    if as_json:
        emit_json(rows)
        return
    shown = [dict(r, metrics=_json.dumps(r["metrics"])) for r in rows]  # JSON, not Python repr
    table(
        shown,
        ["time", "uuid", "deployment", "build", "metrics"],
        empty=f"{ref} has tracked no metrics",
    )


@main.group("registry")
def registry_group() -> None:
    """The image registry swarm builds are pushed to."""


@registry_group.command("start")
@click.option("--port", type=int, default=5000, show_default=True, help="port on 127.0.0.1")
@click.pass_context
def registry_start(ctx: click.Context, port: int) -> None:
    """Start a registry on 127.0.0.1 (Debian's docker-registry), enough for a one-node swarm."""
    from cdsw_tui.services import engines

    wb = _wb(ctx)
    address, new = engines.start_registry(wb.home, port)
    if wb.settings.registry:
        click.echo(f"note: builds go to REGISTRY={wb.settings.registry}, not {address}", err=True)
    click.echo(f"registry {'started' if new else 'already runs'} at {address}")


@registry_group.command("stop")
@click.pass_context
def registry_stop(ctx: click.Context) -> None:
    """Stop the registry 'registry start' started (the images it holds stay)."""
    from cdsw_tui.services import engines

    address = engines.stop_registry(_wb(ctx).home)
    click.echo(f"registry at {address} stopped" if address else "no registry of this home runs")


@main.group("engine")
def engine_group() -> None:
    """Engine images for Docker builds, made locally."""


@engine_group.command("build")
@click.option("--r", "with_r", is_flag=True, help="include R and jsonlite")
@click.option(
    "--suite",
    help="Debian suite: bullseye (Python 3.9), bookworm (3.11), trixie (3.13); "
    "default: this machine's",
)
@click.option(
    "--tag",
    help="image name (default: the ENGINE_IMAGE setting, with -<suite> and -r as they apply)",
)
@click.pass_context
def engine_build(ctx: click.Context, with_r: bool, suite: str | None, tag: str | None) -> None:
    """Make an engine image from Debian packages (debootstrap, then docker import)."""
    from cdsw_tui.services import engines

    wb = _wb(ctx)
    tag, image_id = engines.build(
        tag,
        base=wb.settings.engine_image,
        with_r=with_r,
        suite=suite,
        log=lambda line: click.echo(line, err=True),
    )
    click.echo(f"engine image {tag} ({image_id[:19]})")


@engine_group.command("list")
@json_option
def engine_list(as_json: bool) -> None:
    """Engine images on this Docker engine."""
    from cdsw_tui.services import engines

    rows = engines.list_engines()
    if as_json:
        emit_json(rows)
    else:
        table(
            [{**r, "tags": ", ".join(r["tags"])} for r in rows],
            ["tags", "id", "suite", "python", "r", "size_mb"],
            empty="no engine images; make one with 'cdsw-tui engine build'",
        )


# -- environment ----------------------------------------------------------------


@main.group("env")
def env_group() -> None:
    """Environment variables: global < project < model < deployment."""


def _scope(ctx: click.Context, project_name: str | None, model_ref: str | None) -> tuple[str, int]:
    from cdsw_tui.services import env, models, projects

    wb = _wb(ctx)
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


def _with_scope(f):
    for option in reversed(scope_options):
        f = option(f)
    return f


@env_group.command("list")
@_with_scope
@click.option("--show-secrets", is_flag=True, help="print values whose names look secret")
@json_option
@click.pass_context
def env_list(ctx, project_name, model_ref, show_secrets, as_json) -> None:
    """Variables of one level (global unless --project or --model)."""
    from cdsw_tui.services import env

    scope, scope_id = _scope(ctx, project_name, model_ref)
    values = env.list_vars(_wb(ctx), scope, scope_id)
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
def env_set(ctx, project_name, model_ref, pairs) -> None:
    """Set variables."""
    from cdsw_tui.services import env
    from cdsw_tui.services import validation as v

    scope, scope_id = _scope(ctx, project_name, model_ref)
    values = v.env_pairs(pairs)
    env.set_vars(_wb(ctx), scope, scope_id, values)
    click.echo(f"set {', '.join(values)} ({scope})")


@env_group.command("unset")
@_with_scope
@click.argument("keys", nargs=-1, required=True, metavar="K...")
@click.pass_context
def env_unset(ctx, project_name, model_ref, keys) -> None:
    """Remove variables."""
    from cdsw_tui.services import env

    scope, scope_id = _scope(ctx, project_name, model_ref)
    missing = env.unset_vars(_wb(ctx), scope, scope_id, list(keys))
    if missing:
        raise CdswError(f"not set at the {scope} level: {', '.join(missing)}")
    click.echo(f"unset {', '.join(keys)} ({scope})")


if __name__ == "__main__":
    sys.exit(main())
