"""amp run and amp status, and the launch that ``project create --amp`` starts: the
tasks of an AMP's .project-metadata.yaml, one line each as they end."""

from __future__ import annotations

import time

import click

from cdsw_tui.cli.common import ensure_controller, json_option, workbench
from cdsw_tui.errors import CdswError
from cdsw_tui.output import emit_json, printable, table
from cdsw_tui.services import amps
from cdsw_tui.services.context import Workbench
from cdsw_tui.services.lock import state
from cdsw_tui.store import AmpTask, Project


def _line(task: AmpTask, total: int) -> str:
    took = amps.took(task)
    when = f" in {took:g} s" if took is not None else ""
    detail = f": {task.detail}" if task.detail else ""
    return f"task {task.position + 1}/{total} {task.type} {task.name!r} {task.status}{when}{detail}"


def follow(wb: Workbench, project: Project, *, done_before: bool = False) -> None:
    """One line per task as it ends, until the last has succeeded or one has failed
    (then the tail of its log, and exit 1); ``done_before``: not the tasks that had
    succeeded already."""
    said = {
        t.id or 0 for t in amps.tasks_of(wb, project) if done_before and t.status == "succeeded"
    }
    quiet_since: float | None = None
    while True:
        tasks = amps.tasks_of(wb, project)
        for task in tasks:
            if task.status in ("succeeded", "failed") and task.id not in said:
                said.add(task.id or 0)
                click.echo(printable(_line(task, len(tasks))))
                if task.status == "failed":
                    for line in amps.log_tail(wb, task):
                        click.echo("  " + printable(line), err=True)
                    raise CdswError(
                        f"the launch stopped at task {task.position + 1} ({task.type} "
                        f"{task.name!r}); fix it, then 'cdsw-tui amp run {project.name}'"
                    )
        if all(t.status == "succeeded" for t in tasks):
            click.echo(f"AMP {project.name} launched: {len(tasks)} tasks")
            return
        if not state(wb.home).running:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 3:
                raise CdswError("no controller runs the launch (see logs/controller.log)")
        else:
            quiet_since = None
        time.sleep(0.3)


def launched(
    ctx: click.Context,
    name: str,
    folder: str,
    given: dict[str, str],
    runtime: str | None,
    python: str | None,
    engine: str | None,
    wait: bool,
) -> None:
    wb = workbench(ctx)
    meta = amps.read(folder)
    project = amps.launch(wb, name, folder, given, runtime=runtime, python=python, engine=engine)
    picked = f", {project.python}" if project.python else ""
    picked += f", engine {project.engine}" if project.runtime != "local" else ""
    click.echo(
        f"project {project.name} created from the AMP {meta.name!r} at {project.path} "
        f"(runtime {project.runtime}{picked}): {len(meta.tasks)} tasks"
    )
    ensure_controller(wb)
    if wait:
        follow(wb, project)
    else:
        click.echo(f"follow it with 'cdsw-tui amp status {project.name}'")


@click.group("amp")
def amp_group() -> None:
    """AMP launches: their tasks, and going on after a failed one."""


@amp_group.command("run")
@click.argument("name", metavar="PROJECT")
@click.option("--detach", is_flag=True, help="return at once; the controller goes on")
@click.pass_context
def run_cmd(ctx: click.Context, name: str, detach: bool) -> None:
    """Go on with the launch from its first unfinished task (a failed one again)."""
    wb = workbench(ctx)
    project = amps.get_project(wb, name)
    task = amps.resume(wb, project)
    if task is None:
        click.echo(f"every task of {name} has succeeded")
        return
    click.echo(f"going on from task {task.position + 1} ({task.type} {task.name!r})")
    ensure_controller(wb)
    if not detach:
        follow(wb, project, done_before=True)


@amp_group.command("status")
@click.argument("name", metavar="PROJECT")
@json_option
@click.pass_context
def status_cmd(ctx: click.Context, name: str, as_json: bool) -> None:
    """The tasks of a project's launch and how each went."""
    wb = workbench(ctx)
    project = amps.get_project(wb, name)
    rows = [amps.summary(t) for t in amps.tasks_of(wb, project)]
    if as_json:
        emit_json(rows)
        return
    table(rows, ["task", "type", "name", "status", "took", "detail"], empty="no tasks")
    click.echo(f"launch {amps.state(wb, project)}")
