"""The builder interface: one implementation per runtime (local process, Docker)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cdsw_tui.engine.buildlog import BuildLog

BUILD_SCRIPT = "cdsw-build.sh"


class BuildFailed(Exception):
    """The build ended badly; ``reason`` is the one line shown beside its status."""

    def __init__(self, reason: str, status: str = "failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class BuildJob:
    build_id: int
    number: int
    model_id: int
    project_name: str
    model_name: str
    snapshot: str
    tree: str
    file: str
    function: str
    kernel: str
    engine: str
    build_dir: Path
    envs_dir: Path
    variables: dict[str, str]
    timeout: float
    secret_names: frozenset[str] = frozenset()  # of ``variables``: kept out of images
    home: Path = Path(".")
    ca_bundle: str = ""
    warnings: list[str] = field(default_factory=list)
    clean: bool = False
    python: str = ""  # the interpreter of a local environment ("": the controller's)
    # CDSW's engine variables for cdsw-build.sh: per build, so never in the dependency key
    workbench: dict[str, str] = field(default_factory=dict)
    project_id: int = 0  # a build reuses only its own project's steps
    uid: int = -1  # the identity model code runs as (REPLICA_UID); -1: the controller's


@dataclass
class BuildResult:
    artifact: str
    env_path: str = ""
    image_id: str = ""
    dep_key: str = ""
    dep_reused: bool = False


class Builder(Protocol):
    def build(
        self,
        job: BuildJob,
        log: BuildLog,
        cancelled: Callable[[], bool],
        on_pid: Callable[[int | None], None],
    ) -> BuildResult: ...


def log_header(job: BuildJob, log: BuildLog, runtime: str, extra: str = "") -> None:
    """The first lines of every build log, whatever the runtime."""
    log.line(f"build {job.number} of {job.project_name}/{job.model_name} on the {runtime} runtime")
    log.line(f"snapshot {job.snapshot[:12]} (tree {job.tree[:12]}){extra}")
    for warning in job.warnings:
        log.line(f"warning: {warning}")


PACKAGE_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "DESCRIPTION")  # Python and R


def dependency_files(files: dict[str, str]) -> dict[str, str]:
    """The snapshot files that decide the dependency environment: path -> blob id
    (``cdsw-build.sh``, requirements files, and the files that describe a package of the
    project's own, which ``cdsw-build.sh`` may install)."""
    return {
        path: blob
        for path, blob in files.items()
        if path == BUILD_SCRIPT
        or (os.path.basename(path).startswith("requirements") and path.endswith(".txt"))
        or os.path.basename(path) in PACKAGE_FILES
    }


def build_marker(home: Path, build_id: int) -> str:
    """``K=V`` in the environment of every process of a build (daemons included), so the
    build's end, a cancel or a restarted controller finds them all."""
    return f"CDSW_TUI_BUILD={home}:{build_id}"
