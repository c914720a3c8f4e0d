"""The workflow around a model in an AMP-shaped project: a session-style install script
with IPython lines, a job that trains into the project, then a build that serves what
it trained, on both runtimes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdsw_tui.resources import PYLIB
from tests.conftest import Cli, write_project

# as CML_AMP_Churn_Prediction and its kin are laid out
AMP = {
    "requirements.txt": "",
    "cdsw-build.sh": "pip3 install -r requirements.txt\n",
    "0_bootstrap.py": """\
    # a CML session's syntax, as the AMPs' install scripts use it
    !pip3 install -r requirements.txt
    !mkdir -p models
    %env STAGE=bootstrap
    import os
    import requests  # a CML session has it, as the Flight AMP's bootstrap expects
    print("bootstrapped", os.environ["STAGE"])
    """,
    "1_train.py": """\
    import json, os, sys
    weight = float(sys.argv[1])
    os.makedirs("models", exist_ok=True)
    with open("models/model.json", "w") as fh:
        json.dump({"weight": weight, "trained_by": os.getuid()}, fh)
    print("trained", weight)
    """,
    "2_predict.py": """\
    import json

    with open("/home/cdsw/models/model.json") as fh:
        MODEL = json.load(fh)


    def predict(args):
        return {"prediction": MODEL["weight"] * args["x"]}
    """,
}


@pytest.mark.parametrize("runtime", ["local", "docker"])
def test_a_job_trains_into_the_project_and_a_build_serves_it(
    cli: Cli, tmp_path: Path, request, runtime
):
    if runtime == "docker":
        request.getfixturevalue("docker_engine")
    root = write_project(tmp_path / "amp", AMP)
    cli("project", "create", "amp", "--path", str(root), "--runtime", runtime)
    boot = cli("run", "amp", "0_bootstrap.py", timeout=600)
    assert "bootstrapped bootstrap" in boot.out
    assert "installing IPython and requests" in boot.err
    assert (root / "models").is_dir()  # made by a !cmd line, in the project itself
    cli("job", "create", "amp/train", "--script", "1_train.py", "--arg", "2.5")
    cli("job", "run", "amp/train", "--wait", timeout=300)
    trained = json.loads((root / "models" / "model.json").read_text())
    assert trained["weight"] == 2.5
    cli(
        "model", "create", "amp/predict", "--file", "2_predict.py", "--function", "predict",
        "--example-input", '{"x": 2}', "--wait", timeout=900,
    )  # fmt: skip
    out = json.loads(cli("call", "amp/predict", '{"x": 4}').out)
    assert out["response"] == {"prediction": 10.0}
    # retrained: the running build keeps what it was built with; the next build serves it
    cli("job", "run", "amp/train", "--wait", timeout=300)  # same arguments: a second run
    (root / "1_train.py").write_text(
        (root / "1_train.py").read_text().replace("sys.argv[1]", "'4'")
    )
    cli("job", "run", "amp/train", "--wait", timeout=300)
    assert json.loads(cli("call", "amp/predict", '{"x": 1}').out)["response"]["prediction"] == 2.5
    cli("build", "amp/predict", "--wait", timeout=600)
    cli("deploy", "amp/predict", "--build", "2", "--wait", timeout=300)
    assert json.loads(cli("call", "amp/predict", '{"x": 1}').out)["response"]["prediction"] == 4.0
    runs = cli("job", "runs", "amp/train", "--json").json()
    assert [(r["number"], r["status"]) for r in runs] == [
        (1, "succeeded"),
        (2, "succeeded"),
        (3, "succeeded"),
    ]


METRICS_MODEL = """\
import cdsw


@cdsw.model_metrics
def predict(args):
    cdsw.track_metric("x", args["x"])
    return {"y": args["x"] * 2}
"""

# what the AMPs' simulations do: a call, then at once its ground truth by the call's uuid
SIMULATION = """\
import sys
import cdsw

key, count = sys.argv[1], int(sys.argv[2])
accepted = 0
for i in range(count):
    answer = cdsw.call_model(key, {"x": i})
    assert answer["success"], answer
    cdsw.track_delayed_metrics({"actual": i * 2}, answer["response"]["uuid"])
    accepted += 1
print("accepted", accepted, "of", count)
"""


@pytest.mark.parametrize("runtime", ["local", "docker"])
def test_delayed_metrics_sent_right_after_their_calls_are_all_accepted(
    cli: Cli, tmp_path: Path, request, runtime
):
    if runtime == "docker":
        request.getfixturevalue("docker_engine")
    root = write_project(tmp_path / "mon", {"model.py": METRICS_MODEL, "simulate.py": SIMULATION})
    cli("project", "create", "mon", "--path", str(root), "--runtime", runtime)
    cli(
        "model", "create", "mon/m", "--file", "model.py", "--function", "predict",
        "--example-input", '{"x": 1}', "--wait", timeout=900,
    )  # fmt: skip
    key = cli("model", "show", "mon/m", "--show-key", "--json").json()["access_key"]
    if runtime == "local":  # a project run, with the project's metrics token
        out = cli("run", "mon", "simulate.py", key, "100", timeout=300).out
    else:  # a script of the user's own on this machine, with the home's token
        env = dict(
            os.environ,
            PYTHONPATH=str(PYLIB),
            CDSW_TUI_HOME=str(cli.home),
            CDSW_TUI_GATEWAY_URL=cli("status", "--json").json()["gateway"],
        )
        done = subprocess.run(
            [sys.executable, "simulate.py", key, "100"],
            cwd=root, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        out = done.stdout
    assert "accepted 100 of 100" in out
    records = cli("metrics", "mon/m", "--json").json()
    assert sum(1 for r in records if r["metrics"].get("actual") == r["metrics"]["x"] * 2) == 100


CALLER = """\
import json, os, urllib.request


def echo(args):
    return {"echo": args["x"]}


def relay(args):
    # as AMP code builds it from the engine's variables
    url = "http://modelservice." + os.environ["CDSW_DOMAIN"] + "/model"
    body = json.dumps({"accessKey": args["key"], "request": {"x": args["x"]}}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return {"via": url.split("/")[2].split(":")[0], "answer": json.load(answer)["response"]}
"""


@pytest.mark.parametrize("runtime", ["local", "docker"])
def test_a_replica_calls_another_model_at_modelservice_cdsw_domain(
    cli: Cli, tmp_path: Path, request, runtime
):
    if runtime == "docker":
        request.getfixturevalue("docker_engine")
    root = write_project(tmp_path / "relay", {"models.py": CALLER})
    cli("project", "create", "r", "--path", str(root), "--runtime", runtime)
    for fn in ("echo", "relay"):
        cli("model", "create", f"r/{fn}", "--file", "models.py", "--function", fn, "--wait",
            timeout=900)  # fmt: skip
    key = cli("model", "show", "r/echo", "--show-key", "--json").json()["access_key"]
    out = json.loads(cli("call", "r/relay", json.dumps({"key": key, "x": 5})).out)
    assert out["success"], out
    assert out["response"] == {"via": "modelservice.cdsw-tui.localhost", "answer": {"echo": 5}}
