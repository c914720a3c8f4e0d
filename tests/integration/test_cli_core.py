"""The core flow and every bad input of the core issue, through the real CLI."""

import shutil
from pathlib import Path

import pytest

from tests.conftest import ADD, Cli, write_project
from tests.helpers import dump, one_line_error


def test_quickstart_build_twice_and_list_builds(cli: Cli, home: Path):
    cli("project", "create", "demo", "--template", "quickstart")
    cli(
        "model",
        "create",
        "demo/add",
        "--file",
        "add_numbers.py",
        "--function",
        "add",
        "--example-input",
        '{"a":3,"b":5}',
        "--example-output",
        "8",
        "--no-deploy",
    )
    first = cli("build", "demo/add", "--wait", timeout=300)
    assert "build 1" in first.out and "started the controller" in first.err
    cli("build", "demo/add", "--wait")
    builds = cli("builds", "demo/add", "--json").json()
    assert [b["number"] for b in builds] == [2, 1]
    assert all(b["status"] == "built" for b in builds)
    assert all(len(b["snapshot"]) == 40 for b in builds)
    assert builds[0]["tree"] == builds[1]["tree"]
    assert builds[0]["dependencies_reused"] and not builds[1]["dependencies_reused"]
    log = cli("build-log", "demo/add", "1").out
    assert "Successfully installed numpy" in log
    projects = cli("project", "list", "--json").json()
    assert projects[0]["name"] == "demo" and projects[0]["runtime"] == "local"
    models = cli("model", "list", "--json").json()
    assert {k: models[0][k] for k in ("name", "project", "file", "function", "kernel")} == {
        "name": "add",
        "project": "demo",
        "file": "add_numbers.py",
        "function": "add",
        "kernel": "python3",
    }
    assert "access_key" not in models[0]
    shown = cli("model", "show", "demo/add", "--json").json()
    assert "access_key" not in shown
    key = cli("model", "show", "add", "--show-key", "--json").json()["access_key"]
    assert len(key) == 32
    assert key not in cli("model", "show", "demo/add").out
    status = cli("status", "--json").json()
    assert status["controller"]["running"] and status["gateway"].startswith("http://127.0.0.1:")


@pytest.fixture
def project(wb, tmp_path: Path) -> Path:
    """Made through the services (fast); the commands under test go through the CLI."""
    from cdsw_tui.services import models, projects

    root = write_project(
        tmp_path / "proj",
        {
            "add_numbers.py": ADD + "\ndef pair(a, b):\n    return a\n",
            "r_model.R": "add <- function(args) { args$a + args$b }\n",
        },
    )
    projects.create(wb, "p", path=root)
    models.create(wb, "p", models.ModelSpec(name="add", file="add_numbers.py", function="add"))
    return root


BAD = {
    "missing file": (["--file", "nope.py", "--function", "add"], "does not exist"),
    "missing function": (["--file", "add_numbers.py", "--function", "predict"], "is not defined"),
    "wrong arity": (["--file", "add_numbers.py", "--function", "pair"], "2 required arguments"),
    "invalid input json": (
        ["--file", "add_numbers.py", "--function", "add", "--example-input", "{a:3}"],
        "example input is not valid JSON",
    ),
    "invalid output json": (
        ["--file", "add_numbers.py", "--function", "add", "--example-output", "[1,"],
        "example output is not valid JSON",
    ),
    "replicas 0": (
        ["--file", "add_numbers.py", "--function", "add", "--replicas", "0"],
        "between 1 and 9",
    ),
    "replicas 10": (
        ["--file", "add_numbers.py", "--function", "add", "--replicas", "10"],
        "between 1 and 9",
    ),
    "cpu 0": (
        ["--file", "add_numbers.py", "--function", "add", "--cpu", "0"],
        "cpu must be greater than 0",
    ),
    "memory 64": (
        ["--file", "add_numbers.py", "--function", "add", "--memory", "64"],
        "at least 128 MB",
    ),
    "kernel mismatch": (["--file", "r_model.R", "--function", "add"], "choose kernel r"),
    "escape": (["--file", "../x.py", "--function", "add"], "outside the project"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_model_input_is_one_line_and_changes_nothing(
    cli: Cli, home: Path, project: Path, case: str
):
    args, expected = BAD[case]
    before = dump(home)
    line = one_line_error(cli("model", "create", "p/other", *args, "--no-deploy", check=False))
    assert expected in line
    assert dump(home) == before


def test_duplicate_model_name(cli: Cli, home: Path, project: Path):
    before = dump(home)
    result = cli(
        "model",
        "create",
        "p/add",
        "--file",
        "add_numbers.py",
        "--function",
        "add",
        "--no-deploy",
        check=False,
    )
    assert "already exists" in one_line_error(result)
    assert dump(home) == before


def test_unknown_names(cli: Cli, project: Path):
    assert "no model named 'ghost'" in one_line_error(cli("build", "p/ghost", check=False))
    assert "no project named 'nope'" in one_line_error(cli("build", "nope/add", check=False))
    assert "has no build 7" in one_line_error(cli("build-log", "p/add", "7", check=False))


def test_big_file_stops_the_build_before_a_number_is_taken(cli: Cli, home: Path, project: Path):
    with open(project / "model.pt", "wb") as fh:
        fh.truncate(60 * 1024 * 1024)
    before = dump(home)
    line = one_line_error(cli("build", "p/add", check=False))
    assert "model.pt (60.0 MB)" in line and ".gitignore" in line
    assert dump(home) == before


def test_nested_git_builds_with_a_warning(cli: Cli, project: Path):
    import subprocess

    write_project(project / "vendored", {"helper.py": "H = 1\n"})
    subprocess.run(["git", "init", "-q"], cwd=project / "vendored", check=True)
    result = cli("build", "p/add", "--wait")
    assert "warning: nested repository vendored/" in result.err
    build = cli("builds", "p/add", "--json").json()[0]
    assert build["status"] == "built" and build["warnings"]
    assert (Path(cli.home) / "builds" / "m1" / "1" / "vendored" / "helper.py").exists()


def test_unwritable_home_is_one_line(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cli = Cli(blocker / "home", tmp_path)
    for args in (["project", "list"], ["status"], ["model", "list", "--json"]):
        line = one_line_error(cli(*args, check=False))
        assert "cannot write to CDSW_TUI_HOME" in line
    assert blocker.read_text() == ""


def test_env_levels_and_precedence(cli: Cli, wb, project: Path):
    from cdsw_tui.services import env, models

    cli("env", "set", "A=global", "B=global", "C=global", "API_TOKEN=t0ps3cret")
    cli("env", "set", "--project", "p", "B=project", "C=project")
    cli("env", "set", "--model", "p/add", "C=model")
    listed = cli("env", "list", "--json").json()
    assert {r["key"]: r["value"] for r in listed}["API_TOKEN"] != "t0ps3cret"
    assert "t0ps3cret" in cli("env", "list", "--show-secrets").out
    model = models.resolve(wb, "p/add")
    resolved = env.resolve(wb, model)
    assert (resolved["A"], resolved["B"], resolved["C"]) == ("global", "project", "model")
    cli("env", "unset", "--model", "p/add", "C")
    assert env.resolve(wb, model)["C"] == "project"
    assert "not set" in one_line_error(cli("env", "unset", "--model", "p/add", "C", check=False))
    assert "must be written K=V" in one_line_error(cli("env", "set", "NOEQUALS", check=False))


def test_a_template_project_carries_no_bytecode(cli: Cli, home: Path, tmp_path: Path):
    """Whoever ran the template's code (a test, a user) left __pycache__ beside it."""
    import py_compile

    from cdsw_tui.resources import assets_dir

    source = assets_dir() / "templates" / "quickstart"
    made = not (source / "__pycache__").exists()
    py_compile.compile(str(source / "add_numbers.py"))
    try:
        target = tmp_path / "fresh"
        cli("project", "create", "fresh", "--template", "quickstart", "--path", str(target))
        assert (target / "add_numbers.py").exists()
        assert not list(target.rglob("__pycache__")) and not list(target.rglob("*.pyc"))
    finally:
        if made:
            shutil.rmtree(source / "__pycache__", ignore_errors=True)


def test_a_controller_that_cannot_start_says_why_in_one_line(cli: Cli, project: Path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = cli("build", "p/add", check=False, env={"CDSW_TUI_GATEWAY_PORT": port})
    line = one_line_error(result)
    assert "the controller could not start (the gateway cannot listen on" in line, line
    assert f":{port}" in line and "controller.out" in line


def test_a_template_project_made_again_after_its_delete(cli: Cli, home: Path):
    """Before: the copy stayed, and making the project again said only '... is not empty;
    a template needs an empty folder'. Now the delete offers to remove the copy (asked,
    or --remove-folder), and the refusal says what to do."""
    cli("project", "create", "demo", "--template", "quickstart")
    copy = home / "projects" / "demo"
    assert (copy / "add_numbers.py").is_file()
    cli("project", "delete", "demo", input="y\nn\n")  # the project, not its folder
    assert copy.is_dir()
    again = cli("project", "create", "demo", "--template", "quickstart", check=False)
    assert again.code != 0 and len(again.err.strip().splitlines()) == 1, again.err
    assert "give another folder (--path)" in again.err and f"remove {copy}" in again.err
    cli("project", "create", "demo", "--path", str(copy))  # the user's folder now: kept
    cli("project", "delete", "demo", input="y\n")  # no template: nothing more is asked
    assert copy.is_dir()
    shutil.rmtree(copy)
    cli("project", "create", "demo", "--template", "quickstart")
    deleted = cli("project", "delete", "demo", input="y\ny\n")
    assert not copy.exists() and "removed (the copy of its template)" in deleted.err
    cli("project", "create", "demo", "--template", "quickstart")
    cli("project", "delete", "demo", "--yes", "--remove-folder")
    assert not copy.exists()


def test_without_git_every_command_says_so_in_one_line(tmp_path: Path):
    """Before: GitPython's 15-line message, on the first build. Now one line at start."""
    import subprocess
    import sys

    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"HOME": str(tmp_path), "PATH": str(empty), "CDSW_TUI_HOME": str(tmp_path / "h")}
    for args in ([], ["project", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "cdsw_tui", *args], env=env, capture_output=True, text=True
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert (
            lines[0].startswith("error: git is not installed") and "apt-get install git" in lines[0]
        )
