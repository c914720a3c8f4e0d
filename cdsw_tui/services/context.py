"""The Workbench: settings, store and snapshot repository, opened once per face."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cdsw_tui.engine.snapshot import SnapshotRepo

import os
import stat
from functools import cached_property
from pathlib import Path

from cdsw_tui.config import Settings, load_settings
from cdsw_tui.errors import CdswError
from cdsw_tui.store import Store


def private_home(home: Path) -> list[str]:
    """The home is the user's alone: 0700, and whatever this process (and what it starts:
    builds, replicas, git) creates in it is 0600. A looser existing home is tightened."""
    os.umask(0o077)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(os.stat(home).st_mode)
    if mode & 0o077:
        os.chmod(home, 0o700)
        return [f"{home} was open to others (mode {mode:o}); it is now 0700"]
    return []


class Workbench:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        home = self.settings.home
        try:
            self.warnings = private_home(home)
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
    def snapshots(self) -> SnapshotRepo:  # engine type kept out of the faces' imports
        from cdsw_tui.engine.snapshot import SnapshotRepo

        return SnapshotRepo(self.home / "snapshots.git", keep_out=self.home)

    def builds_dir(self) -> Path:
        return self.home / "builds"

    def envs_dir(self) -> Path:
        return self.home / "envs"

    def projects_dir(self) -> Path:
        return self.home / "projects"

    def build_log_path(self, model_id: int, number: int) -> Path:
        return self.home / "logs" / "builds" / f"m{model_id}" / f"{number}.log"

    def run_log_path(self, run_id: int) -> Path:
        return self.home / "logs" / "runs" / f"{run_id}.log"

    def project_env_dir(self, project_id: int, runtime: str) -> Path:
        """The project's own environment for its runs on ``runtime`` (never a build's)."""
        return self.home / "project-envs" / f"p{project_id}-{runtime}"

    def build_dir(self, model_id: int, number: int) -> Path:
        return self.builds_dir() / f"m{model_id}" / str(number)

    def close(self) -> None:
        self.store.close()
