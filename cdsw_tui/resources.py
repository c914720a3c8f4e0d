"""Files the package ships: the assets folder, and the replica runner with what it needs."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
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


def runner_copy(home: Path) -> Path:
    """The runner folder of a copy of ``runner_files()`` in the home, made once for each
    content (``lib/runner-DIGEST/``): replicas run from it, so a reinstall that removes
    this package (``pip install -e`` over ``pip install .``) leaves their next start
    working. The copy is the controller's (0755/0644, nothing a model writes) and whole
    or absent: made beside its place, then renamed there."""
    files = runner_files()
    digest = hashlib.sha256()
    for path, name in files:
        digest.update(f"{name}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    lib = home / "lib"
    lib.mkdir(parents=True, exist_ok=True, mode=0o755)
    root = lib / f"runner-{digest.hexdigest()[:16]}"
    if not root.is_dir() or root.is_symlink():
        tmp = Path(tempfile.mkdtemp(prefix=".runner-", dir=lib))
        try:
            for path, name in files:
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            for folder, _dirs, names in os.walk(tmp):
                os.chmod(folder, 0o755)
                for name in names:
                    os.chmod(os.path.join(folder, name), 0o644)
            try:
                os.rename(tmp, root)
            except OSError:  # another process made it first: theirs is the same content
                if not root.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root / RUNNER.relative_to(PACKAGE.parent)


def assets_dir() -> Path:
    """Installed wheels carry the assets inside the package; a source checkout beside it."""
    for candidate in (PACKAGE / "assets", PACKAGE.parent / "assets"):
        if candidate.is_dir():
            return candidate
    raise CdswError("the cdsw-tui assets are missing from this installation")
