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


TRAIN = """\
import json
C = {c}
json.dump({{"by": "{by}", "c": C}}, open("artifact.json", "w"))
"""
SERVE = """\
import json


def predict(args):
    return json.load(open("artifact.json"))
"""


def trained_project(root: Path, by: str, c: float = 1.0) -> Path:
    return write_project(
        root,
        {
            "cdsw-build.sh": "python3 train.py\n",
            "train.py": TRAIN.format(by=by, c=c),
            "serve.py": SERVE,
        },
    )


def test_a_build_never_serves_another_projects_artifact(cli: Cli, tmp_path: Path):
    # the same cdsw-build.sh in two projects: each trains its own
    for name in ("a", "b"):
        cli("project", "create", name, "--path", str(trained_project(tmp_path / name, name)))
        cli("model", "create", f"{name}/m", "--file", "serve.py", "--function", "predict",
            "--wait", timeout=300)  # fmt: skip
    assert cli("call", "a/m", "{}").json()["response"] == {"by": "a", "c": 1.0}
    assert cli("call", "b/m", "{}").json()["response"] == {"by": "b", "c": 1.0}
    log = cli("build-log", "b/m", "1").out
    assert "running cdsw-build.sh: no earlier build of this project ran it" in log


def test_a_change_to_what_training_reads_trains_again(cli: Cli, tmp_path: Path):
    root = trained_project(tmp_path / "t", "t", c=1.0)
    cli("project", "create", "t", "--path", str(root))
    cli("model", "create", "t/m", "--file", "serve.py", "--function", "predict", "--wait",
        timeout=300)  # fmt: skip
    assert cli("call", "t/m", "{}").json()["response"]["c"] == 1.0
    (root / "train.py").write_text(TRAIN.format(by="t", c=0.01))  # regularisation 1.0 -> 0.01
    cli("build", "t/m", "--wait", timeout=300)
    cli("deploy", "t/m", "--build", "2", "--wait", timeout=300)
    assert cli("call", "t/m", "{}").json()["response"]["c"] == 0.01
    assert "train.py changed since build 1 of t/m" in cli("build-log", "t/m", "2").out
    # the serving code alone changed: the training is reused, with its artifact
    (root / "serve.py").write_text(SERVE + "# a comment\n")
    cli("build", "t/m", "--wait", timeout=300)
    log = cli("build-log", "t/m", "3").out
    assert "reusing cdsw-build.sh from build 2 of t/m" in log
    assert "(cdsw-build.sh, train.py) are unchanged" in log
    cli("deploy", "t/m", "--build", "3", "--wait", timeout=300)
    assert cli("call", "t/m", "{}").json()["response"]["c"] == 0.01


def test_step_results_no_build_stands_on_go_but_the_newest_two(cli: Cli, wb, tmp_path: Path):
    root = write_project(
        tmp_path / "s",
        {"add.py": "def add(args):\n    return 1\n", "cdsw-build.sh": "cat deps.txt > out.txt\n"},
    )
    cli("project", "create", "s", "--path", str(root))
    cli("model", "create", "s/m", "--file", "add.py", "--function", "add", "--no-deploy")
    for i in range(4):
        (root / "deps.txt").write_text(f"{i}\n")
        cli("build", "s/m", "--wait", timeout=300)
    steps = wb.envs_dir() / "p1"
    assert len(list(steps.glob("b*/step.json"))) == 4  # every build stands on its own
    cli("model", "delete", "s/m", "--yes")
    assert sorted(p.parent.name for p in steps.glob("b*/step.json")) == ["b3", "b4"]
    cli("project", "delete", "s", "--yes")
    assert not steps.exists()
