"""job (create, run, runs, log, cancel, delete), jobs, and run (a one-off run)."""

from __future__ import annotations

import click

from cdsw_tui.cli.common import ensure_controller, json_option, raw_option, workbench
from cdsw_tui.engine.runs import OURS
from cdsw_tui.errors import CdswError
from cdsw_tui.output import emit_json, printable, table, untrusted
from cdsw_tui.services import jobs, projects, runs
from cdsw_tui.services import validation as v
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import JobRun

RUN_COLUMNS = ["number", "status", "exit_code", "trigger", "started_at", "duration", "reason"]


def _follow(wb: Workbench, run: JobRun, raw: bool = False, bare: bool = False) -> None:
    """The run's log as it grows; ``bare``: the script's output alone on stdout, without
    time stamps, and cdsw-tui's own lines on stderr (``cdsw-tui run``)."""
    for line in runs.follow_log(wb, run, follow=True):
        if not bare:
            untrusted(line, raw)
            continue
        text = line.split(" ", 1)[1] if line[:4].isdigit() and " " in line else line
        if text.startswith(OURS):
            click.echo(printable(text), err=True)
        else:
            untrusted(text, raw)


def _ended(wb: Workbench, run: JobRun, *, exit_with_status: bool) -> None:
    """Wait for the run; a line saying how it ended; exit non-zero unless it succeeded
    (with the script's own status where it has one and ``exit_with_status``)."""
    final = runs.wait(wb, run)
    took = runs.duration(final)
    if final.status == "succeeded":
        click.echo(f"run {final.number} succeeded in {took} s", err=True)
        return
    click.echo(f"error: run {final.number} {final.status}: {final.reason}", err=True)
    code = final.exit_code if exit_with_status and final.exit_code else 1
    raise click.exceptions.Exit(code if 0 < code < 256 else 1)


@click.group("job")
def job_group() -> None:
    """A project's jobs: scripts run on demand, on a schedule, or after another job."""


@job_group.command("create")
@click.argument("ref", metavar="PROJECT/NAME")
@click.option("--script", required=True, help="a .py or .R file of the project")
@click.option("--arg", "args", multiple=True, help="an argument for the script (repeatable)")
@click.option("--schedule", default="", help="cron: minute hour day month weekday")
@click.option("--after", default="", metavar="JOB", help="run when this job's run succeeds")
@click.option("--timeout", default=0.0, type=float, help="seconds; a longer run is stopped")
@click.option("--cpu", default=1.0, type=float)
@click.option("--memory", default=2048, type=int, help="MB")
@click.option("--env", multiple=True, metavar="K=V", help="a variable of the job (repeatable)")
@json_option
@click.pass_context
def create_cmd(
    ctx: click.Context,
    ref: str,
    script: str,
    args: tuple[str, ...],
    schedule: str,
    after: str,
    timeout: float,
    cpu: float,
    memory: int,
    env: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a job of a project."""
    wb = workbench(ctx)
    project_name, sep, name = ref.partition("/")
    if not sep:
        raise CdswError(f"a job is PROJECT/NAME, not {ref!r}")
    spec = jobs.JobSpec(
        name=name,
        script=script,
        args=list(args),
        schedule=schedule,
        after=after,
        timeout=timeout,
        cpu=cpu,
        memory=memory,
        env=v.env_pairs(env),
    )
    job = jobs.create(wb, project_name, spec)
    if job.schedule or job.after_job_id:
        ensure_controller(wb)  # it fires the schedule and follows the other job
    if as_json:
        emit_json(jobs.summary(wb, job))
        return
    when = f", on schedule {job.schedule!r}" if job.schedule else ""
    when += f", after {spec.after}" if job.after_job_id else ""
    click.echo(f"job {project_name}/{job.name} created ({job.script}{when})")


@job_group.command("run")
@click.argument("ref", metavar="PROJECT/NAME")
@click.option("--wait", is_flag=True, help="block until the run ends; exit 1 unless it succeeded")
@click.option("--follow", is_flag=True, help="print the run's output as it comes")
@raw_option
@click.pass_context
def run_job_cmd(ctx: click.Context, ref: str, wait: bool, follow: bool, raw: bool) -> None:
    """Start a run of the job now."""
    wb = workbench(ctx)
    job = jobs.resolve(wb, ref)
    run = runs.request(wb, job)
    ensure_controller(wb)
    click.echo(f"run {run.number} of {ref} queued", err=follow)
    if follow:
        _follow(wb, run, raw)
    if wait or follow:
        _ended(wb, run, exit_with_status=False)


@job_group.command("runs")
@click.argument("ref", metavar="PROJECT/NAME")
@json_option
@click.pass_context
def runs_cmd(ctx: click.Context, ref: str, as_json: bool) -> None:
    """A job's runs, oldest first."""
    wb = workbench(ctx)
    job = jobs.resolve(wb, ref)
    rows = [runs.summary(wb, r) for r in runs.list_runs(wb, job)]
    if as_json:
        emit_json(rows)
        return
    table(rows, RUN_COLUMNS, empty=f"{ref} has not run yet ('cdsw-tui job run {ref}')")


@job_group.command("log")
@click.argument("ref", metavar="PROJECT/NAME")
@click.argument("number", required=False, type=int, metavar="[RUN]")
@click.option("--follow", is_flag=True, help="keep printing until the run ends")
@raw_option
@click.pass_context
def log_cmd(ctx: click.Context, ref: str, number: int | None, follow: bool, raw: bool) -> None:
    """A run's output (default: the newest run)."""
    wb = workbench(ctx)
    run = runs.get(wb, jobs.resolve(wb, ref), number)
    for line in runs.follow_log(wb, run, follow=follow):
        untrusted(line, raw)  # what the script printed: control characters escaped


@job_group.command("cancel")
@click.argument("ref", metavar="PROJECT/NAME")
@click.argument("number", required=False, type=int, metavar="[RUN]")
@click.pass_context
def cancel_cmd(ctx: click.Context, ref: str, number: int | None) -> None:
    """Stop a run (default: the newest), with everything it started."""
    wb = workbench(ctx)
    run = runs.cancel(wb, runs.get(wb, jobs.resolve(wb, ref), number))
    click.echo(
        f"run {run.number} of {ref}: {'cancelled' if run.status == 'cancelled' else 'stopping'}"
    )


@job_group.command("delete")
@click.argument("ref", metavar="PROJECT/NAME")
@click.pass_context
def delete_cmd(ctx: click.Context, ref: str) -> None:
    """Delete a job, its runs and their logs (a run in progress is stopped)."""
    wb = workbench(ctx)
    job = jobs.resolve(wb, ref)
    jobs.delete(wb, job)
    click.echo(f"job {ref} deleted")


@click.command("jobs")
@click.argument("project", required=False)
@json_option
@click.pass_context
def jobs_cmd(ctx: click.Context, project: str | None, as_json: bool) -> None:
    """Every job (of one project)."""
    wb = workbench(ctx)
    rows = [jobs.summary(wb, j) for j in jobs.list_jobs(wb, project)]
    if as_json:
        emit_json(rows)
        return
    table(
        rows,
        ["project", "name", "slug", "script", "schedule", "after", "last_run", "last_status"],
        empty="no jobs yet ('cdsw-tui job create PROJECT/NAME --script FILE')",
    )


@click.command(
    "run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("project")
@click.argument("script")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--wait", is_flag=True, help="(the default) print the output, exit with its status")
@click.option("--detach", is_flag=True, help="queue the run and return")
@click.option("--timeout", default=0.0, type=float, help="seconds; a longer run is stopped")
@raw_option
@click.pass_context
def run_cmd(
    ctx: click.Context,
    project: str,
    script: str,
    args: tuple[str, ...],
    wait: bool,
    detach: bool,
    timeout: float,
    raw: bool,
) -> None:
    """A one-off run of a project script: prints its output, exits with its status.
    Options go before PROJECT; everything after SCRIPT is the script's."""
    wb = workbench(ctx)
    run = runs.one_off(wb, projects.get(wb, project), script, list(args), timeout)
    ensure_controller(wb)
    if detach and not wait:
        click.echo(f"one-off run {run.number} of {project} queued")
        return
    _follow(wb, run, raw, bare=True)
    _ended(wb, run, exit_with_status=True)
