"""engine build and list, registry start and stop."""

from __future__ import annotations

import click

from cdsw_tui.cli.common import json_option, workbench
from cdsw_tui.output import emit_json, table
from cdsw_tui.services import engines


@click.group("registry")
def registry_group() -> None:
    """The image registry swarm builds are pushed to."""


@registry_group.command("start")
@click.option("--port", type=int, default=5000, show_default=True, help="port on 127.0.0.1")
@click.pass_context
def registry_start(ctx: click.Context, port: int) -> None:
    """Start a registry on 127.0.0.1 (Debian's docker-registry), enough for a one-node swarm."""
    wb = workbench(ctx)
    address, new = engines.start_registry(wb.home, port)
    if wb.settings.registry:
        click.echo(f"note: builds go to REGISTRY={wb.settings.registry}, not {address}", err=True)
    click.echo(f"registry {'started' if new else 'already runs'} at {address}")


@registry_group.command("stop")
@click.pass_context
def registry_stop(ctx: click.Context) -> None:
    """Stop the registry 'registry start' started (the images it holds stay)."""
    address = engines.stop_registry(workbench(ctx).home)
    click.echo(f"registry at {address} stopped" if address else "no registry of this home runs")


@click.group("engine")
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
    wb = workbench(ctx)
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
    rows = engines.list_engines()
    if as_json:
        emit_json(rows)
    else:
        table(
            [{**r, "tags": ", ".join(r["tags"])} for r in rows],
            ["tags", "id", "suite", "python", "r", "size_mb"],
            empty="no engine images; make one with 'cdsw-tui engine build'",
        )
