"""build, builds, build-log and cancel."""

from __future__ import annotations

import click

from cdsw_tui.cli.common import (
    ensure_controller,
    json_option,
    raw_option,
    wait_build,
    workbench,
)
from cdsw_tui.errors import CdswError
from cdsw_tui.output import emit_json, table, untrusted
from cdsw_tui.services import builds, models, readmodels
from cdsw_tui.services.context import Workbench
from cdsw_tui.store import Build


def _print_log(wb: Workbench, build: Build, follow: bool, raw: bool = False) -> None:
    for line in builds.follow_log(wb, build, follow=follow):
        untrusted(line, raw)


@click.command("build")
@click.argument("ref", metavar="MODEL")
@click.option("--comment", default="", help="a note kept with the build")
@click.option("--wait", is_flag=True, help="block until the build ends; exit 1 unless built")
@click.option("--follow", is_flag=True, help="print the build log as it grows")
@click.option("--no-cache", "clean", is_flag=True, help="a clean build: reuse no dependency layer")
@json_option
@click.pass_context
def build_cmd(
    ctx: click.Context,
    ref: str,
    comment: str,
    wait: bool,
    follow: bool,
    clean: bool,
    as_json: bool,
) -> None:
    """Build the model from the code as it is now."""
    wb = workbench(ctx)
    m = models.resolve(wb, ref)
    build = builds.request(wb, m, comment=comment, clean=clean)
    for warning in (w for w in build.warnings.split("\n") if w):
        click.echo(f"warning: {warning}", err=True)
    ensure_controller(wb)
    if as_json:
        emit_json(builds.summary(wb, build))
    else:
        click.echo(f"build {build.number} of {ref} queued (snapshot {build.snapshot[:12]})")
    if follow:
        _print_log(wb, build, follow=True)
    if wait or follow:
        wait_build(wb, build)


@click.command("builds")
@click.argument("ref", metavar="MODEL")
@json_option
@click.pass_context
def builds_cmd(ctx: click.Context, ref: str, as_json: bool) -> None:
    """A model's builds, newest first."""
    wb = workbench(ctx)
    m = models.resolve(wb, ref)
    rows = readmodels.builds(wb, m)
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


@click.command("build-log")
@click.argument("ref", metavar="MODEL")
@click.argument("number", type=int)
@click.option("--follow", "-f", is_flag=True, help="keep printing until the build ends")
@raw_option
@click.pass_context
def build_log(ctx: click.Context, ref: str, number: int, follow: bool, raw: bool) -> None:
    """The log of one build."""
    wb = workbench(ctx)
    build = builds.get(wb, models.resolve(wb, ref), number)
    if not builds.log_path(wb, build).exists() and build.status not in ("queued", "building"):
        raise CdswError(f"build {number} has no log")
    _print_log(wb, build, follow, raw)


@click.command("cancel")
@click.argument("ref", metavar="MODEL")
@click.argument("number", type=int, required=False)
@click.pass_context
def cancel_cmd(ctx: click.Context, ref: str, number: int | None) -> None:
    """Cancel a queued or running build (default: the newest)."""
    wb = workbench(ctx)
    build = builds.cancel(wb, builds.get(wb, models.resolve(wb, ref), number))
    word = "cancelled" if build.status == "cancelled" else "is being cancelled"
    click.echo(f"build {build.number} {word}")
