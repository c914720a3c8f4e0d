"""``cdsw-tui store backup|restore``: copies of the store, made and put back with SQLite's
online backup API (store/health.py). Neither opens a Workbench: a damaged store is what
a restore is for."""

from __future__ import annotations

from pathlib import Path

from cdsw_tui.config import Settings
from cdsw_tui.errors import CdswError
from cdsw_tui.services.lock import ControllerLock, state
from cdsw_tui.store import health


def backup(settings: Settings, target: Path) -> int:
    """A copy of the store at ``target``, taken while the controller runs or not."""
    target = target.expanduser().absolute()
    if target.resolve() == settings.db_path.resolve():
        raise CdswError("the backup would overwrite the store itself")
    if target.is_dir():
        raise CdswError(f"{target} is a folder; name the file to write")
    return health.backup(settings.db_path, target)


def restore(settings: Settings, source: Path) -> Path | None:
    """The store replaced by ``source``; the file it replaced is kept beside it."""
    source = source.expanduser().absolute()
    home = settings.home
    lock = ControllerLock(home)
    if not lock.acquire():  # held while restoring: no controller starts meanwhile
        raise CdswError(
            f"a controller runs for {home} (pid {state(home).pid}); "
            "stop it first: cdsw-tui controller stop"
        )
    try:
        kept = health.restore(source, settings.db_path)
        from cdsw_tui.store import Store

        Store(settings.db_path).close()  # brought to this version's schema, and checked
    finally:
        lock.release()
    return kept
