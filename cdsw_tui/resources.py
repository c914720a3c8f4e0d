"""Files the package ships: the assets folder, and the replica runner with what it needs."""

from __future__ import annotations

from pathlib import Path

from cdsw_tui.errors import CdswError

PACKAGE = Path(__file__).resolve().parent
# the replica runner, a folder run as ``python RUNNER ARGS`` (its __main__ imports it whole)
RUNNER = PACKAGE / "serving" / "runner"
# ``cdsw`` and ``cml`` for model code and the project's scripts (beside the runner)
PYLIB = PACKAGE / "serving" / "pylib"
# where a Docker image holds them: RUNNER_LAUNCHER runs the runner under RUNNER_ROOT, in
# images of this version and before it (their replica.py was the runner itself)
RUNNER_ROOT = "/usr/local/lib/cdsw"
RUNNER_LAUNCHER = f"{RUNNER_ROOT}/replica.py"
LAUNCHER_TEXT = (
    '"""Runs the replica runner that lies beside this file (cdsw-tui)."""\n'
    "import runpy\n"
    f"runpy.run_path({RUNNER_ROOT + '/cdsw_tui/serving/runner'!r}, run_name='__main__')\n"
)


def runner_files() -> list[tuple[Path, str]]:
    """What a replica needs of cdsw-tui, standard library only: the runner, the wire
    protocol and pylib, each with its path below a folder that holds ``cdsw_tui/``. Both
    package ``__init__``s are copied as they are: they import nothing."""
    files = [PACKAGE / "__init__.py", PACKAGE / "serving" / "__init__.py"]
    files.append(PACKAGE / "serving" / "frames.py")
    for folder in (RUNNER, PYLIB):
        files += sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".py", ".R"))
    # library(cdsw): an R package's source, whatever its files are called
    files += sorted(p for p in (PYLIB / "R").rglob("*") if p.is_file() and p.suffix != ".R")
    return [(path, path.relative_to(PACKAGE.parent).as_posix()) for path in files]


def assets_dir() -> Path:
    """Installed wheels carry the assets inside the package; a source checkout beside it."""
    for candidate in (PACKAGE / "assets", PACKAGE.parent / "assets"):
        if candidate.is_dir():
            return candidate
    raise CdswError("the cdsw-tui assets are missing from this installation")
