"""deploy, deployments, stop, restart, scale, and the replica logs."""

from __future__ import annotations

import click

from cdsw_tui.cli.common import (
    F,
    ensure_controller,
    json_option,
    raw_option,
    wait_deployment,
    workbench,
)
from cdsw_tui.errors import CdswError
from cdsw_tui.output import count, emit_json, table, untrusted
from cdsw_tui.services import deployments, logs, models, readmodels
from cdsw_tui.services import validation as v
from cdsw_tui.store import pk
from cdsw_tui.waiting import poll_until


def resource_options(f: F) -> F:
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


@click.command("deploy")
@click.argument("ref", metavar="MODEL")
@click.option("--build", "build_number", type=int, help="build number (default: the newest built)")
@resource_options
@click.option("--wait", is_flag=True, help="block until deployed; exit 1 if it fails")
@json_option
@click.pass_context
def deploy_cmd(
    ctx: click.Context,
    ref: str,
    build_number: int | None,
    replicas: int | None,
    cpu: float | None,
    memory: int | None,
    gpu: int | None,
    env: tuple[str, ...],
    wait: bool,
    as_json: bool,
) -> None:
    """Deploy a build; the running deployment stops once the new one answers."""
    wb = workbench(ctx)
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
    ensure_controller(wb)
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
        wait_deployment(wb, d)


@click.command("deployments")
@click.argument("ref", metavar="[MODEL]", required=False)
@json_option
@click.pass_context
def deployments_cmd(ctx: click.Context, ref: str | None, as_json: bool) -> None:
    """Deployments, newest first."""
    wb = workbench(ctx)
    m = models.resolve(wb, ref) if ref else None
    rows = readmodels.deployments(wb, pk(m) if m is not None else None)
    if as_json:
        emit_json(rows)
    else:
        table(
            rows,
            ["id", "model", "build", "status", "replicas", "cpu", "memory", "created_at", "reason"],
            empty="no deployments yet",
        )


@click.command("stop")
@click.argument("ref", metavar="MODEL")
@click.option("--wait", is_flag=True, help="block until stopped")
@click.pass_context
def stop_cmd(ctx: click.Context, ref: str, wait: bool) -> None:
    """Stop the model's replicas (requests in flight finish first)."""
    wb = workbench(ctx)
    stopped = deployments.stop(wb, models.resolve(wb, ref))
    ensure_controller(wb)
    click.echo(f"stopping deployment {', '.join(str(d.id) for d in stopped)}")
    if wait:
        for d in stopped:
            deployments.wait(wb, d, until=("stopped", "failed"))
        click.echo("stopped", err=True)


@click.command("restart")
@click.argument("ref", metavar="MODEL")
@click.option("--wait", is_flag=True, help="block until every replica was replaced")
@click.pass_context
def restart_cmd(ctx: click.Context, ref: str, wait: bool) -> None:
    """Restart the replicas one by one, keeping the deployment id."""
    wb = workbench(ctx)
    d = deployments.restart(wb, models.resolve(wb, ref))
    ensure_controller(wb)
    click.echo(f"restarting deployment {d.id}")
    if wait:
        poll_until(lambda: not deployments.get(wb, pk(d)).restart_requested, interval=0.1)
        final = deployments.get(wb, pk(d))
        if final.status != "deployed":
            raise CdswError(
                f"deployment {final.id} {final.status}: {final.reason or 'no reason recorded'}"
            )
        click.echo(f"deployment {d.id} restarted: {count(final.replicas, 'replica')} replaced")


@click.command("scale")
@click.argument("ref", metavar="MODEL")
@click.argument("replicas", type=int)
@click.option("--wait", is_flag=True, help="block until exactly that many replicas run")
@click.pass_context
def scale_cmd(ctx: click.Context, ref: str, replicas: int, wait: bool) -> None:
    """Change the replica count of the deployed model, without a new build."""
    wb = workbench(ctx)
    d = deployments.scale(wb, models.resolve(wb, ref), replicas)
    ensure_controller(wb)
    click.echo(f"deployment {d.id} scaling to {count(d.replicas, 'replica')}")
    if wait:
        final = deployments.wait_scaled(wb, d)
        if final.status != "deployed":
            raise CdswError(
                f"deployment {final.id} {final.status}: {final.reason or 'no reason recorded'}"
            )
        click.echo(f"deployment {final.id} runs {count(final.replicas, 'replica')}", err=True)


@click.command("logs")
@click.argument("ref", metavar="MODEL")
@click.option("--replica", help="one replica's log")
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines")
@click.option("--tail", type=int, help="only the last N lines")
@raw_option
@click.pass_context
def logs_cmd(
    ctx: click.Context, ref: str, replica: str | None, follow: bool, tail: int | None, raw: bool
) -> None:
    """Replica logs of the active (or newest) deployment, merged by time."""
    wb = workbench(ctx)
    files = logs.log_files(wb, models.resolve(wb, ref), replica)
    try:
        for line in logs.read(files, tail, follow):
            untrusted(logs.shown(line), raw)
    except KeyboardInterrupt:
        pass
