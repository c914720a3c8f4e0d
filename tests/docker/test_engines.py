"""Engines per Debian suite (a Python per suite, as CDSW had engines per Python) and the
R check: a model or build script that needs R fails at build time on an engine without R."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from cdsw_tui.services import models, projects
from tests.conftest import Cli, write_project

pytestmark = pytest.mark.docker

BULLSEYE = "cdsw-tui/engine-bullseye:latest"
VERSION = """\
import sys


def version(args):
    return list(sys.version_info[:2])
"""


def test_engine_list_shows_suite_and_python(cli: Cli):
    """A model on it answering 3.9 is tests/compat's bullseye shape."""
    try:
        docker.from_env().images.get(BULLSEYE)
    except docker.errors.ImageNotFound:
        pytest.skip(
            f"{BULLSEYE} missing: cdsw-tui engine build --suite bullseye (.ci/run makes it)"
        )
    engines = json.loads(cli("engine", "list", "--json").out)
    bullseye = next(e for e in engines if BULLSEYE in e["tags"])
    assert (bullseye["suite"], bullseye["python"], bullseye["r"]) == ("bullseye", "3.9", False)
    assert not [e for e in engines if any("-deps:" in t or "-m" in t for t in e["tags"])]


def test_an_unknown_suite_is_refused_in_one_line(cli: Cli):
    out = cli("engine", "build", "--suite", "buster", check=False)
    assert out.code != 0 and "Traceback" not in out.err
    assert "bullseye (Python 3.9)" in out.err and len(out.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "files, file, kernel, needs",
    [
        ({"m.R": "f <- function(args) 1\n"}, "m.R", "r", "the R model m"),
        (
            {"m.py": VERSION, "cdsw-build.sh": "Rscript -e 'install.packages(\"zoo\")'\n"},
            "m.py",
            "python3",
            "cdsw-build.sh, which runs R,",
        ),
    ],
)
def test_r_on_an_engine_without_r_fails_at_build_naming_engine_build_r(
    cli: Cli, wb, tmp_path: Path, files: dict, file: str, kernel: str, needs: str
):
    root = write_project(tmp_path / "p", files)
    projects.create(wb, "p", path=root, runtime="docker")  # the default engine: no R
    fn = "f" if kernel == "r" else "version"
    out = cli(
        "model",
        "create",
        "p/m",
        "--file",
        file,
        "--function",
        fn,
        "--kernel",
        kernel,
        "--wait",
        check=False,
    )
    assert out.code != 0
    assert "engine build --r" in out.err and needs in out.err
    build = models.latest_build(wb, models.resolve(wb, "p/m"))
    assert build.status == "failed" and "engine build --r" in build.reason
    assert "engine build --r" in cli("build-log", "p/m", "1").out
