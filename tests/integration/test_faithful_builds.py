"""A build is exactly its project (issue 21): what git keeps is in it, the home never is,
and what its steps made comes from its own project and its own code."""

import subprocess
from pathlib import Path

from tests.conftest import Cli, write_project
from tests.helpers import dump, one_line_error


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=a@b", "-c", "user.name=a", *args], cwd=cwd, check=True,
        capture_output=True,
    )  # fmt: skip


def test_a_tracked_file_gitignore_matches_is_built_and_answers(cli: Cli, tmp_path: Path):
    root = write_project(
        tmp_path / "amp",
        {".gitignore": "R\n", "code/R/m.py": "def f(args):\n    return 'tracked'\n"},
    )
    git(root, "init", "-q")
    git(root, "add", "-f", ".gitignore", "code/R/m.py")
    write_project(root, {"code/R/untracked.py": "def f(args):\n    return 1\n"})
    cli("project", "create", "amp", "--path", str(root))
    line = one_line_error(
        cli("model", "create", "amp/u", "--file", "code/R/untracked.py", "--function", "f",
            "--no-deploy", check=False)
    )  # fmt: skip
    assert "code/R/untracked.py will not be in the build" in line
    assert ".gitignore line 1 ('R')" in line and "git add -f" in line
    cli("model", "create", "amp/m", "--file", "code/R/m.py", "--function", "f", "--wait",
        timeout=300)  # fmt: skip
    assert cli("call", "amp/m", "{}").json()["response"] == "tracked"


def test_a_folder_that_holds_or_lies_in_the_home_is_no_project(cli: Cli, home: Path):
    cli("status")  # the home exists
    before = dump(home)
    inner = home / "builds"
    inner.mkdir(exist_ok=True)
    for folder in ("/", str(home.parent), str(home), str(inner)):
        line = one_line_error(cli("project", "create", "p", "--path", folder, check=False))
        assert f"cdsw-tui home {home.resolve()}" in line and "never go into a build" in line
    assert dump(home) == before
    # the home's own projects/ (where templates go) is not refused
    cli("project", "create", "t", "--template", "quickstart")
