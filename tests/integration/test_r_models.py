"""R models on the local runtime: jsonlite in, jsonlite out, R's errors and prints kept."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli, write_project

R_CODE = """\
add <- function(args) {
  args$a + args$b
}

describe <- function(args) {
  x <- unlist(args$values)
  print(paste("describing", length(x), "values"))
  list(n = length(x), mean = mean(x), max = max(x))
}

fails <- function(args) {
  stop("the input has no petals")
}

not_a_function <- 42
"""


@pytest.fixture(autouse=True)
def r_installed() -> None:
    if shutil.which("Rscript") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the R tests: Rscript is missing")
        pytest.skip("R is not installed (apt-get install r-base-core r-cran-jsonlite)")


@pytest.fixture
def project(cli: Cli, tmp_path: Path) -> Path:
    root = write_project(tmp_path / "rproj", {"model.R": R_CODE})
    cli("project", "create", "rp", "--path", str(root))
    return root


def test_r_add_named_list_error_and_prints(cli: Cli, project: Path):
    cli(
        "model",
        "create",
        "rp/add",
        "--file",
        "model.R",
        "--function",
        "add",
        "--kernel",
        "r",
        "--example-input",
        '{"a": 3, "b": 5}',
        "--wait",
        timeout=300,
    )
    assert json.loads(cli("call", "rp/add").out)["response"] == 8  # a length-one result is a scalar
    cli(
        "model",
        "create",
        "rp/describe",
        "--file",
        "model.R",
        "--function",
        "describe",
        "--kernel",
        "r",
        "--wait",
        timeout=300,
    )
    out = json.loads(cli("call", "rp/describe", '{"values": [1, 2, 6]}').out)
    assert out["response"] == {"n": 3, "mean": 3, "max": 6}  # a named list is an object
    logged = cli("logs", "rp/describe").out
    assert "describing 3 values" in logged  # R's stdout reaches the log
    # its stream named as the workbench names it (before: stdout, where the TUI has OUT)
    assert " OUT " in logged and " stdout " not in logged, logged
    cli(
        "model",
        "create",
        "rp/fails",
        "--file",
        "model.R",
        "--function",
        "fails",
        "--kernel",
        "r",
        "--wait",
        timeout=300,
    )
    result = cli("call", "rp/fails", check=False)
    body = json.loads(result.out)
    assert result.code == 1
    assert (
        body["error"]["code"] == "model.error"
        and "the input has no petals" in body["error"]["message"]
    )
    assert "the input has no petals" in cli("logs", "rp/fails").out


def test_r_file_without_the_function(cli: Cli, project: Path):
    result = cli(
        "model",
        "create",
        "rp/x",
        "--file",
        "model.R",
        "--function",
        "predict",
        "--kernel",
        "r",
        "--no-deploy",
        check=False,
    )
    assert result.code == 1 and "function 'predict' is not defined" in result.err
    assert (
        "add" in result.err
        and "describe" in result.err
        and "not_a_function" not in result.err.split("found:")[1]
    )


def test_missing_r_is_one_clear_line(cli: Cli, project: Path, tmp_path: Path):
    import shutil

    git = tmp_path / "git-only"  # cdsw-tui needs git, found before anything else
    git.mkdir()
    (git / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    python_only = f"{Path(sys.executable).parent}:{git}"
    result = cli(
        "model",
        "create",
        "rp/add",
        "--file",
        "model.R",
        "--function",
        "add",
        "--kernel",
        "r",
        "--no-deploy",
        check=False,
        env={"PATH": python_only},
    )
    assert result.code == 1
    assert result.err.strip() == (
        "error: R is not installed here: Rscript was not found on PATH (install r-base-core and "
        "r-cran-jsonlite, or use the docker runtime with an engine from 'engine build --r')"
    )
    # a replica that finds no R says so as the deployment's reason
    cli(
        "model",
        "create",
        "rp/add",
        "--file",
        "model.R",
        "--function",
        "add",
        "--kernel",
        "r",
        "--env",
        f"PATH={python_only}",
        "--no-deploy",
    )
    cli("build", "rp/add", "--wait")
    deployed = cli("deploy", "rp/add", "--wait", check=False)
    assert deployed.code == 1 and "R is not installed here" in deployed.err


R_PACKAGE = {
    "rpkg/DESCRIPTION": (
        "Package: cdswtestpkg\nVersion: 0.1\nTitle: A package of the project\n"
        "Description: Installed by cdsw-build.sh.\nAuthor: cdsw-tui\n"
        "Maintainer: cdsw-tui <cdsw@example.org>\nLicense: MIT\n"
    ),
    "rpkg/NAMESPACE": "export(hello)\n",
    "rpkg/R/hello.R": 'hello <- function() "from the build\'s library"\n',
    "cdsw-build.sh": "R CMD INSTALL rpkg\n",
    "model.R": "library(cdswtestpkg)\n\nf <- function(args) {\n  hello()\n}\n",
}


def test_an_r_package_cdsw_build_sh_installs_lands_in_the_build(cli: Cli, tmp_path: Path):
    """Not in the host's site library (CDSW's engines kept it in the project's image)."""
    import subprocess

    root = write_project(tmp_path / "rpkgproj", R_PACKAGE)
    cli("project", "create", "rpkg", "--path", str(root))
    cli(
        "model",
        "create",
        "rpkg/m",
        "--file",
        "model.R",
        "--function",
        "f",
        "--kernel",
        "r",
        "--wait",
    )
    assert json.loads(cli("call", "rpkg/m", "{}").out)["response"] == "from the build's library"
    host = subprocess.run(
        ["Rscript", "-e", 'cat(nzchar(system.file(package = "cdswtestpkg")))'],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "R_LIBS_USER"},
    )
    assert host.stdout.strip() == "FALSE"  # absent from every library of the host
    assert "R-library" in cli("build-log", "rpkg/m", "1").out  # where R said it installed


CDSW_R = """\
library(cdsw)

relay <- function(args) {
  track.metric("input", args$x)
  answer <- call.model(args$key, list(a = args$x, b = 1))
  list(sum = answer$response, replica = answer$ReplicaID != "")
}
"""


def test_an_r_model_uses_library_cdsw_to_call_another_model(cli: Cli, project: Path):
    (project / "relay.R").write_text(CDSW_R)
    for name, file, fn in (("add", "model.R", "add"), ("relay", "relay.R", "relay")):
        cli("model", "create", f"rp/{name}", "--file", file, "--function", fn, "--kernel", "r",
            "--wait", timeout=600)  # fmt: skip
    key = cli("model", "show", "rp/add", "--show-key", "--json").json()["access_key"]
    out = json.loads(cli("call", "rp/relay", json.dumps({"key": key, "x": 41})).out)
    assert out["success"], out
    assert out["response"] == {"sum": 42, "replica": True}
    assert "cdsw: metric input = 41" in cli("logs", "rp/relay").out
