"""AMP launches with small AMP-shaped projects of our own, laid out as Cloudera's
CML_AMP_* repositories are: every task type in order on both runtimes with the AMP's
Python 3.9 picked, a required variable missing, a failed task and ``amp run`` going on
from it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cdsw_tui.services import amps
from tests.conftest import Cli, write_project

METADATA = """\
name: Tiny Prototype
description: >-
  every task type,
  in order
author: us
specification_version: 1.0
prototype_version: 1.0
date: "2026-12-03"
environment_variables:
  STORAGE_MODE:
    default: local
    description: where the data is
  USE_PREBUILT_MODEL:
    default: yes
  DEV_MODE:
    default: False
  SECRET_TOKEN:
    description: a token the app needs
    required: true
feature_dependencies:
  - model_metrics
runtimes:
  - editor: PBJ Workbench
    kernel: Python 3.9
    edition: Standard
tasks:
  - type: run_session
    name: Install Dependencies
    script: code/0_install.py
    cpu: 64
    memory: 1
  - type: create_job
    name: Train Model
    entity_label: train
    script: code/1_train.py
    arguments: None
    environment:
      TASK_TYPE: CREATE/RUN_JOB
  - type: run_job
    entity_label: train
    cpu: 1
    memory: 1
  - type: create_model
    name: Price Regressor
    entity_label: pr
    description: predicts
    access_key_environment_variable: SHTM_ACCESS_KEY
    default_resources:
      cpu: 1
      memory: 1
    default_replication_policy:
      type: fixed
      num_replicas: 1
  - type: build_model
    name: Price Regressor
    entity_label: pr
    target_file_path: code/2_predict.py
    target_function_name: predict
    examples:
      - request: {"x": 2}
        response: {"y": 14}
  - type: deploy_model
    name: Price Regressor
    entity_label: pr
    cpu: 1
  - type: start_application
    name: Price Dashboard
    subdomain: dash
    script: code/3_app.py
    environment_variables:
      TASK_TYPE: START_APPLICATION
"""

FILES = {
    ".project-metadata.yaml": METADATA,
    "code/0_install.py": """\
    import json, os, sys
    with open("install.json", "w") as fh:
        json.dump({"python": sys.version.split()[0], "mode": os.environ["STORAGE_MODE"],
                   "prebuilt": os.environ["USE_PREBUILT_MODEL"],
                   "dev": os.environ["DEV_MODE"]}, fh)
    """,
    "code/1_train.py": """\
    import json, os
    with open("seed.json") as fh:  # what the failing launch lacks at first
        seed = json.load(fh)
    os.makedirs("models", exist_ok=True)
    with open("models/w.json", "w") as fh:
        json.dump({"w": seed["w"], "task": os.environ["TASK_TYPE"]}, fh)
    print("trained")
    """,
    "code/2_predict.py": """\
    import json

    with open("/home/cdsw/models/w.json") as fh:
        W = json.load(fh)["w"]


    def predict(args):
        return {"y": W * args["x"]}
    """,
    "code/3_app.py": """\
    import json, os
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import cdsw

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            answer = cdsw.call_model(os.environ["SHTM_ACCESS_KEY"], {"x": 3})
            body = json.dumps({"model": answer["response"],
                               "task": os.environ["TASK_TYPE"]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    HTTPServer(("127.0.0.1", int(os.environ["CDSW_APP_PORT"])), Page).serve_forever()
    """,
    "seed.json": '{"w": 7}',
}


def amp_folder(root: Path, files: dict[str, str] | None = None) -> Path:
    write_project(root, files or FILES)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


@pytest.mark.parametrize("runtime", ["local", "docker"])
def test_every_task_type_launches_in_order_on_the_amps_python(
    cli: Cli, tmp_path: Path, request, runtime
):
    if runtime == "docker":
        request.getfixturevalue("docker_engine")
        if (
            "engine-bullseye"
            not in subprocess.run(
                ["docker", "images", "--format", "{{.Repository}}"], capture_output=True, text=True
            ).stdout
        ):
            pytest.skip("no bullseye engine (cdsw-tui engine build --suite bullseye)")
    elif amps.find_python("3.9") is None:
        pytest.skip("no Python 3.9 here (pyenv install 3.9)")
    root = amp_folder(tmp_path / "tiny")
    out = cli(
        "project", "create", "tiny", "--amp", str(root), "--env", "SECRET_TOKEN=s3",
        "--runtime", runtime, "--wait", timeout=1200,
    )  # fmt: skip
    lines = [line for line in out.out.splitlines() if line.startswith("task ")]
    assert len(lines) == 7 and all(" succeeded in " in line for line in lines), out.out
    assert "task 3/7 run_job 'Train Model' succeeded" in out.out  # named from its job
    assert "AMP tiny launched: 7 tasks" in out.out
    project = cli("project", "list", "--json").json()[0]
    if runtime == "local":
        assert project["python"].endswith("python3.9")
    else:
        assert project["engine"] == "cdsw-tui/engine-bullseye:latest"

    installed = json.loads((root / "install.json").read_text())
    assert installed["python"].startswith("3.9.")
    # variables keep their text as written (YAML would make yes and False booleans)
    assert (installed["mode"], installed["prebuilt"], installed["dev"]) == ("local", "yes", "False")
    assert json.loads((root / "models/w.json").read_text()) == {"w": 7, "task": "CREATE/RUN_JOB"}

    model = cli("model", "list", "--json").json()[0]
    assert (model["name"], model["status"]) == ("Price Regressor", "deployed")
    assert json.loads(cli("call", "tiny/Price Regressor").out)["response"] == {"y": 14}
    app = cli("app", "list", "tiny", "--json").json()[0]
    assert (app["name"], app["subdomain"], app["status"]) == ("Price Dashboard", "dash", "running")
    page = httpx.get(app["url"], timeout=30, trust_env=False).json()
    assert page == {"model": {"y": 21}, "task": "START_APPLICATION"}  # its key from the task

    status = cli("amp", "status", "tiny", "--json").json()
    assert [t["type"] for t in status] == [
        "run_session", "create_job", "run_job", "create_model", "build_model", "deploy_model",
        "start_application",
    ]  # fmt: skip
    assert all(t["status"] == "succeeded" and t["took"] is not None for t in status)


def test_a_required_variable_missing_is_refused_before_anything(cli: Cli, tmp_path: Path):
    root = amp_folder(tmp_path / "tiny")
    out = cli("project", "create", "tiny", "--amp", str(root), check=False)
    assert out.code == 1
    assert out.err.strip().splitlines() == [
        "error: the AMP needs SECRET_TOKEN (a token the app needs): give it with "
        "--env SECRET_TOKEN=VALUE"
    ]
    assert cli("project", "list", "--json").json() == []
    not_amp = cli("project", "create", "x", "--amp", str(tmp_path), check=False)
    assert not_amp.code == 1 and "no .project-metadata.yaml" in not_amp.err


def test_a_failed_task_stops_the_launch_and_amp_run_goes_on_from_it(cli: Cli, tmp_path: Path):
    files = {k: val for k, val in FILES.items() if k != "seed.json"}
    text = files[".project-metadata.yaml"]
    files[".project-metadata.yaml"] = text.replace("kernel: Python 3.9", "kernel: Python 3")
    root = amp_folder(tmp_path / "tiny", files)
    first = cli(
        "project", "create", "tiny", "--amp", str(root), "--env", "SECRET_TOKEN=s3", "--wait",
        check=False, timeout=600,
    )  # fmt: skip
    assert first.code == 1
    assert "task 1/7 run_session 'Install Dependencies' succeeded" in first.out
    assert "task 3/7 run_job 'Train Model' failed" in first.out
    assert "seed.json" in first.err  # the tail of its log: the script's traceback
    assert "stopped at task 3 (run_job 'Train Model')" in first.err
    assert "cdsw-tui amp run tiny" in first.err
    status = cli("amp", "status", "tiny", "--json").json()
    assert [t["status"] for t in status[:4]] == ["succeeded", "succeeded", "failed", "pending"]
    assert "launch failed" in cli("amp", "status", "tiny").out

    (root / "seed.json").write_text('{"w": 7}')
    again = cli("amp", "run", "tiny", timeout=600)
    assert "going on from task 3 (run_job 'Train Model')" in again.out
    assert "task 1/7" not in again.out and "AMP tiny launched" in again.out
    assert [r["trigger"] for r in cli("job", "runs", "tiny/Train Model", "--json").json()] == [
        "amp",
        "amp",
    ]
    status = cli("amp", "status", "tiny", "--json").json()
    assert all(t["status"] == "succeeded" for t in status)
    assert cli("amp", "run", "tiny").out.strip() == "every task of tiny has succeeded"


def test_a_task_whose_run_a_controller_restart_interrupted_runs_again(
    cli: Cli, wb, home: Path, tmp_path: Path
):
    """The controller stopped in the middle of a run_session: the next controller marks
    the run interrupted, and the launch starts the task again rather than failing it."""
    files = dict(FILES)
    files[".project-metadata.yaml"] = METADATA.replace("kernel: Python 3.9", "kernel: Python 3")
    files["code/0_install.py"] = (
        "import os, time\n"
        "if not os.path.exists('first.txt'):\n"
        "    open('first.txt', 'w').write('x')\n"
        "    time.sleep(600)\n"
    )
    root = amp_folder(tmp_path / "tiny", files)
    cli("project", "create", "tiny", "--amp", str(root), "--env", "SECRET_TOKEN=s3")
    deadline = time.monotonic() + 120
    while not (root / "first.txt").exists():
        assert time.monotonic() < deadline, "the first task did not start"
        time.sleep(0.2)
    cli("controller", "stop")
    cli("controller", "start")  # nothing else typed: the launch goes on by itself
    deadline = time.monotonic() + 300
    while True:
        tasks = cli("amp", "status", "tiny", "--json").json()
        if all(t["status"] == "succeeded" for t in tasks):
            break
        assert not any(t["status"] == "failed" for t in tasks), tasks
        assert time.monotonic() < deadline, tasks
        time.sleep(0.5)
    assert tasks[0]["detail"] == "run 2 succeeded"


def test_metadata_fields_read_and_ignored(tmp_path: Path):
    root = amp_folder(tmp_path / "tiny")
    meta = amps.read(root)
    assert (meta.name, meta.python, meta.kernel) == ("Tiny Prototype", "3.9", "Python 3.9")
    assert meta.description == "every task type, in order"
    assert [(v.name, v.default, v.required) for v in meta.variables] == [
        ("STORAGE_MODE", "local", False),
        ("USE_PREBUILT_MODEL", "yes", False),
        ("DEV_MODE", "False", False),
        ("SECRET_TOKEN", "", True),
    ]
    assert meta.ignored == ["feature_dependencies"]
    (root / ".project-metadata.yaml").write_text("tasks:\n  - type: run_notebook\n")
    with pytest.raises(Exception, match="task 1 has type 'run_notebook'"):
        amps.read(root)
