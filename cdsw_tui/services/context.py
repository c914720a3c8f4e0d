"""The Workbench: settings, store and snapshot repository, opened once per face."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from cdsw_tui.config import Settings, load_settings
from cdsw_tui.errors import CdswError
from cdsw_tui.store import Store


class Workbench:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        home = self.settings.home
        try:
            home.mkdir(parents=True, exist_ok=True)
            probe = home / f".write-probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise CdswError(
                f"cannot write to CDSW_TUI_HOME {home}: {exc.strerror or exc}"
            ) from None
        from cdsw_tui.services import validation

        try:
            validation.runtime(self.settings.runtime)
        except CdswError as exc:
            raise CdswError(f"setting RUNTIME: {exc.message}") from None
        self.store = Store(self.settings.db_path)

    @property
    def home(self) -> Path:
        return self.settings.home

    @cached_property
    def snapshots(self):  # engine type kept out of the faces' imports
        from cdsw_tui.engine.snapshot import SnapshotRepo

        return SnapshotRepo(self.home / "snapshots.git")

    def builds_dir(self) -> Path:
        return self.home / "builds"

    def envs_dir(self) -> Path:
        return self.home / "envs"

    def projects_dir(self) -> Path:
        return self.home / "projects"

    def build_log_path(self, model_id: int, number: int) -> Path:
        return self.home / "logs" / "builds" / f"m{model_id}" / f"{number}.log"

    def build_dir(self, model_id: int, number: int) -> Path:
        return self.builds_dir() / f"m{model_id}" / str(number)

    def close(self) -> None:
        self.store.close()
