"""Files the package ships: the assets folder and the replica runner's scripts."""

from __future__ import annotations

from pathlib import Path

from cdsw_tui.errors import CdswError

PACKAGE = Path(__file__).resolve().parent
# the runner is copied into images and run by replicas as a script, never imported there
RUNNER = PACKAGE / "serving" / "replica.py"
RUNNER_R = PACKAGE / "serving" / "replica.R"
# ``cdsw`` and ``cml`` for model code and the project's scripts (beside the runner)
PYLIB = PACKAGE / "serving" / "pylib"


def assets_dir() -> Path:
    """Installed wheels carry the assets inside the package; a source checkout beside it."""
    for candidate in (PACKAGE / "assets", PACKAGE.parent / "assets"):
        if candidate.is_dir():
            return candidate
    raise CdswError("the cdsw-tui assets are missing from this installation")
