"""One project per shape found in Cloudera's own examples and AMPs, each built, deployed
and called through the gateway with its code as Cloudera documents it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cdsw_tui.services import builds, models
from tests.conftest import Cli, write_project

BULLSEYE = "cdsw-tui/engine-bullseye:latest"


def deploy(cli: Cli, ref: str, file: str, function: str, *extra: str) -> None:
    cli(
        "model",
        "create",
        ref,
        "--file",
        file,
        "--function",
        function,
        *extra,
        "--wait",
        timeout=900,
    )


def call(cli: Cli, ref: str, request: object) -> dict:
    out = json.loads(cli("call", ref, json.dumps(request)).out)
    assert out["success"], out
    return out["response"]


def tracked(cli: Cli, ref: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 15
    while True:
        records = cli("metrics", ref, "--json").json()
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


# CML's documented model example (ml-models-examples): the decorator alone
CML_EXAMPLE = """\
import cml.models_v1 as models


@models.cml_model
def add(args):
    return args["a"] + args["b"]
"""


def test_cml_documented_example_answers_8(cli: Cli, tmp_path: Path):
    root = write_project(tmp_path / "cml", {"add.py": CML_EXAMPLE})
    cli("project", "create", "cml", "--path", str(root))
    deploy(cli, "cml/add", "add.py", "add")
    assert call(cli, "cml/add", {"a": 3, "b": 5}) == 8


# predict_with_metrics.py, as CML's metrics documentation shapes it
CML_METRICS = """\
import cml.metrics_v1 as metrics
import cml.models_v1 as models


@models.cml_model(metrics=True)
def predict(args):
    metrics.track_metric("input", args["x"])
    if args.get("read"):  # the model reads its own deployment's metrics
        return [r["predictionUuid"] for r in metrics.read_metrics()["metrics"]]
    metrics.track_metric("output", args["x"] * 2)
    return args["x"] * 2
"""

# use_model_metrics.py: a script of the project, run with the build's Python
MONITOR = """\
import json, sys, time
import cml.metrics_v1 as metrics

model_crn, uuid = sys.argv[1], sys.argv[2]
now = int(time.time() * 1000)
metrics.track_delayed_metrics({"actual": 42}, uuid)
found = metrics.read_metrics(model_crn=model_crn, start_timestamp_ms=0, end_timestamp_ms=now)
first = found["metrics"][0]
metrics.track_aggregate_metrics(
    {"accuracy": 0.5}, first["startTimeStampMs"], now,
    model_deployment_crn=first["modelDeploymentCrn"],
)
again = metrics.read_metrics(model_deployment_crn=first["modelDeploymentCrn"])
print(json.dumps(again))
"""


def test_cml_model_with_metrics_is_tracked_and_read_back(cli: Cli, wb, tmp_path: Path):
    root = write_project(tmp_path / "mm", {"predict.py": CML_METRICS, "monitor.py": MONITOR})
    cli("project", "create", "mm", "--path", str(root))
    deploy(cli, "mm/predict", "predict.py", "predict")
    answer = call(cli, "mm/predict", {"x": 21})
    assert answer["prediction"] == 42 and len(answer["uuid"]) == 36  # as CML returns it
    [record] = tracked(cli, "mm/predict", 1)
    assert record["uuid"] == answer["uuid"] and record["build"] == 1
    assert record["metrics"] == {"input": 21, "output": 42}
    # inside the replica, read_metrics reads its own deployment
    assert answer["uuid"] in call(cli, "mm/predict", {"x": 1, "read": True})["prediction"]
    # the project's own script, with the build's Python: delayed and aggregate metrics
    model = models.resolve(wb, "mm/predict")
    python = Path(builds.get(wb, model, 1).env_path) / "bin" / "python"
    done = subprocess.run(
        [str(python), "monitor.py", f"crn:cdsw-tui:model/{model.id}", answer["uuid"]],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)["metrics"]
    first = next(r for r in records if r["predictionUuid"] == answer["uuid"])
    assert first["metrics"] == {"input": 21, "output": 42, "actual": 42}
    assert first["modelBuildCrn"] == f"crn:cdsw-tui:build/{builds.get(wb, model, 1).id}"
    assert [r["metrics"] for r in records if r["aggregate"]] == [{"accuracy": 0.5}]
    shown = cli("metrics", "mm/predict").out
    assert '"actual": 42' in shown and '"accuracy": 0.5' in shown


# a CDSW project laid out as AMPs are: code/ for the model, src/ for the library, and
# models/ for what training wrote, opened by its /home/cdsw path
LAYOUT = {
    "code/serve.py": """\
        import json
        import os

        from src.scaling import scale

        with open("/home/cdsw/models/params.json") as fh:
            PARAMS = json.load(fh)


        def predict(args):
            return {
                "y": scale(args["x"], PARAMS["factor"]),
                "cwd": os.getcwd(),
                "home": os.environ["HOME"],
                "api": os.environ["CDSW_API_URL"],
                "domain": os.environ["CDSW_DOMAIN"],
                "project_url": os.environ["CDSW_PROJECT_URL"],
            }
        """,
    "src/__init__.py": "",
    "src/scaling.py": "def scale(x, factor):\n    return x * factor\n",
    "models/params.json": '{"factor": 3}\n',
}


def test_model_in_code_imports_src_and_reads_home_cdsw(cli: Cli, wb, tmp_path: Path):
    from cdsw_tui.engine.backends.local import sandbox

    if sandbox.unavailable() and os.environ.get("CI") != "true":
        pytest.skip(f"no /home/cdsw here: {sandbox.unavailable()}")
    root = write_project(tmp_path / "amp", LAYOUT)
    cli("project", "create", "amp", "--path", str(root))
    deploy(cli, "amp/serve", "code/serve.py", "predict")
    answer = call(cli, "amp/serve", {"x": 7})
    assert answer["y"] == 21
    assert (answer["cwd"], answer["home"]) == ("/home/cdsw", "/home/cdsw")
    url = wb.settings.gateway_url
    port = wb.settings.gateway_port
    assert answer["api"] == f"{url}/api/v1" and answer["domain"] == f"cdsw-tui.localhost:{port}"
    assert (
        answer["project_url"].startswith(f"{url}/api/v1/projects/")
        and "/amp" in answer["project_url"]
    )
    assert not any(Path("/home/cdsw").iterdir())  # the mount was the replica's alone


# an R package of the project's own, installed by cdsw-build.sh (CRAN is not reachable
# here; install.packages() from CRAN lands in the same library)
R_PROJECT = {
    "cdsw-build.sh": "R CMD INSTALL greeter\n",
    "greeter/DESCRIPTION": """\
        Package: greeter
        Version: 0.1
        Title: Greets
        Description: Greets whoever asks.
        License: MIT
        Authors@R: person("A", "B", role = c("aut", "cre"), email = "a@b.c")
        """,
    "greeter/NAMESPACE": "export(greet)\n",
    "greeter/R/greet.R": 'greet <- function(name) paste("hello", name)\n',
    "model.R": """\
        library(greeter)
        predict <- function(args) {
          list(greeting = greet(args$name), lib = .libPaths()[1])
        }
        """,
}


def test_r_package_from_cdsw_build_sh_is_the_builds_not_the_hosts(cli: Cli, tmp_path: Path):
    if shutil.which("Rscript") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the R tests: Rscript is missing")
        pytest.skip("R is not installed")
    root = write_project(tmp_path / "rp", R_PROJECT)
    cli("project", "create", "rp", "--path", str(root))
    deploy(cli, "rp/greet", "model.R", "predict", "--kernel", "r")
    answer = call(cli, "rp/greet", {"name": "cdsw"})
    assert answer["greeting"] == "hello cdsw"
    # the build's environment: /home/cdsw/.venv in a jail, its own folder outside one
    assert answer["lib"] in ("/home/cdsw/.venv/R-library",) or "/envs/" in answer["lib"]
    assert answer["lib"].endswith("R-library")
    host = subprocess.run(
        ["Rscript", "-e", 'cat(requireNamespace("greeter", quietly = TRUE))'],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "R_LIBS_USER"},
    )
    assert host.stdout.strip() == "FALSE"  # the host's libraries never saw it


# a package of the project installed editable by requirements.txt, its code under src/
EDITABLE = {
    "cdsw-build.sh": "pip3 install -r requirements.txt\n",
    "requirements.txt": "-e .\n",
    "pyproject.toml": """\
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "shop"
        version = "0.1"

        [tool.setuptools.packages.find]
        where = ["src"]
        """,
    "src/shop/__init__.py": 'VERSION = "v1"\n',
    "serve.py": "import shop\n\n\ndef version(args):\n    return shop.VERSION\n",
}


@pytest.mark.parametrize("runtime", ["local", "docker"])
def test_editable_install_serves_each_builds_code(cli: Cli, wb, tmp_path: Path, request, runtime):
    if runtime == "docker":
        request.getfixturevalue("docker_engine")
    root = write_project(tmp_path / "shop", EDITABLE)
    cli("project", "create", "shop", "--path", str(root), "--runtime", runtime)
    deploy(cli, "shop/v", "serve.py", "version")
    assert call(cli, "shop/v", {}) == "v1"
    (root / "src" / "shop" / "__init__.py").write_text('VERSION = "v2"\n')
    cli("build", "shop/v", "--wait", timeout=600)
    model = models.resolve(wb, "shop/v")
    assert builds.get(wb, model, 2).dep_reused  # the code changed, not the dependencies
    cli("deploy", "shop/v", "--build", "2", "--wait", timeout=300)
    assert call(cli, "shop/v", {}) == "v2"
    # another project with the same dependency files imports its own code, not shop's
    other = write_project(
        tmp_path / "other", {**EDITABLE, "src/shop/__init__.py": 'VERSION = "o"\n'}
    )
    cli("project", "create", "other", "--path", str(other), "--runtime", runtime)
    deploy(cli, "other/v", "serve.py", "version")
    assert call(cli, "other/v", {}) == "o"
    cli("deploy", "shop/v", "--build", "1", "--wait", timeout=300)  # a rollback serves v1
    assert call(cli, "shop/v", {}) == "v1"


def test_without_home_cdsw_an_editable_build_gets_its_own_environment(
    cli: Cli, wb, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("CDSW_TUI_NO_HOME_MOUNT", "1")  # as where unshare is not allowed
    root = write_project(tmp_path / "shop", EDITABLE)
    cli("project", "create", "shop", "--path", str(root))
    deploy(cli, "shop/v", "serve.py", "version")
    assert call(cli, "shop/v", {}) == "v1"
    (root / "src" / "shop" / "__init__.py").write_text('VERSION = "v2"\n')
    cli("build", "shop/v", "--wait", timeout=600)
    model = models.resolve(wb, "shop/v")
    assert "an environment of its own" in cli("build-log", "shop/v", "2").out
    assert builds.get(wb, model, 2).env_path != builds.get(wb, model, 1).env_path
    deployed = cli("deploy", "shop/v", "--build", "2", "--wait", timeout=300)
    assert "warning: model code runs as you (uid " in deployed.err
    assert "in its build folder, not at /home/cdsw" in deployed.err
    assert call(cli, "shop/v", {}) == "v2"
    logs = cli("logs", "shop/v").out
    assert "model code is not jailed (turned off by CDSW_TUI_NO_HOME_MOUNT)" in logs


VERSION = "import sys\n\n\ndef version(args):\n    return list(sys.version_info[:2])\n"


def test_bullseye_engine_reports_python_3_9(cli: Cli, tmp_path: Path, docker_engine):
    import docker

    try:
        docker.from_env().images.get(BULLSEYE)
    except docker.errors.ImageNotFound:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{BULLSEYE} missing (.ci/run makes it)")
        pytest.skip(f"{BULLSEYE} missing: cdsw-tui engine build --suite bullseye")
    root = write_project(tmp_path / "old", {"model.py": VERSION})
    cli(
        "project", "create", "old", "--path", str(root), "--runtime", "docker", "--engine", BULLSEYE
    )
    deploy(cli, "old/v", "model.py", "version")
    assert call(cli, "old/v", {}) == [3, 9]
