"""``cdsw-tui store backup FILE`` and ``store restore FILE``."""

from __future__ import annotations

from pathlib import Path

import click

from cdsw_tui.config import load_settings
from cdsw_tui.services import storefile


@click.group("store")
def store_group() -> None:
    """Copies of the store (cdsw.db): back it up while serving, put a copy back."""


@store_group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def backup_cmd(file: Path) -> None:
    """Copy the store to FILE (SQLite's online backup: safe while the controller runs)."""
    size = storefile.backup(load_settings(), file)
    click.echo(f"backed up the store to {file} ({size / 1024:.0f} KB)")


@store_group.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def restore_cmd(file: Path) -> None:
    """Put the copy in FILE back as the store (the controller must be stopped)."""
    settings = load_settings()
    kept = storefile.restore(settings, file)
    said = f"; the store it replaced is kept as {kept}" if kept else ""
    click.echo(f"restored {file} as {settings.db_path}{said}")
