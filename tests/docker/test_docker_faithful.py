"""Faithful builds and replicas no host user owns, on Docker (issue 21): each project's
cdsw-build.sh result is its own and reruns when what it read changed, and a container's
uid is no account of this host, so no host user reaches its environment or its socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from cdsw_tui.engine.accounts import holder, replica_identity
from cdsw_tui.services import deployments, models
from tests.conftest import Cli, write_project

pytestmark = pytest.mark.docker

TRAIN = """\
import json
C = {c}
json.dump({{"by": "{by}", "c": C}}, open("artifact.json", "w"))
"""
SERVE = """\
import json
import os


def predict(args):
    return dict(json.load(open("artifact.json")), secret=os.environ.get("MY_TOKEN", ""))
"""


def trained(root: Path, by: str, c: float = 1.0) -> Path:
    return write_project(
        root,
        {"cdsw-build.sh": "python3 train.py\n", "train.py": TRAIN.format(by=by, c=c),
         "serve.py": SERVE},
    )  # fmt: skip


def call(cli: Cli, ref: str) -> dict:
    answer = cli("call", ref, "{}", check=False).json()
    assert answer["success"], answer
    return answer["response"]


def test_each_project_trains_its_own_and_a_change_trains_again(cli: Cli, tmp_path: Path):
    for name in ("a", "b"):
        cli("project", "create", name, "--path", str(trained(tmp_path / name, name)),
            "--runtime", "docker")  # fmt: skip
        cli("model", "create", f"{name}/m", "--file", "serve.py", "--function", "predict",
            "--wait", timeout=600)  # fmt: skip
    assert call(cli, "a/m")["by"] == "a" and call(cli, "b/m")["by"] == "b"
    root = tmp_path / "b"
    (root / "train.py").write_text(TRAIN.format(by="b", c=0.01))
    cli("build", "b/m", "--wait", timeout=600)
    assert "train.py changed since build 1 of b/m" in cli("build-log", "b/m", "2").out
    cli("deploy", "b/m", "--build", "2", "--wait", timeout=300)
    assert call(cli, "b/m")["c"] == 0.01
    (root / "serve.py").write_text(SERVE + "# served differently\n")
    cli("build", "b/m", "--wait", timeout=600)
    log = cli("build-log", "b/m", "3").out
    assert "reusing cdsw-build.sh from build 2 of b/m" in log
    cli("deploy", "b/m", "--build", "3", "--wait", timeout=300)
    assert call(cli, "b/m")["c"] == 0.01  # the trained artifact came with the reuse


def test_no_host_user_reaches_a_container_replica(cli: Cli, wb, tmp_path: Path):
    root = trained(tmp_path / "u", "u")
    cli("project", "create", "u", "--path", str(root), "--runtime", "docker")
    cli("model", "create", "u/m", "--file", "serve.py", "--function", "predict",
        "--env", "MY_TOKEN=s3cret-value", "--wait", timeout=600)  # fmt: skip
    assert call(cli, "u/m")["secret"] == "s3cret-value"
    uid = replica_identity(wb.settings.replica_uid).uid
    assert uid != 1000 and holder(uid) == ""
    [replica] = deployments.replicas_of(wb, models.active_deployment(wb, models.resolve(wb, "u/m")))
    container = docker.from_env().containers.get(replica.handle)
    assert container.attrs["Config"]["User"] == f"{uid}:{uid}"
    pid = container.attrs["State"]["Pid"]
    # the host's uid 1000 (an account on many hosts; here, cloudsdk) tries what it did before
    probe = (
        "import os, socket, sys\n"
        "os.setgid(1000); os.setuid(1000)\n"
        "pid = sys.argv[1]\n"
        "out = {}\n"
        "try:\n"
        "    out['environ'] = b's3cret' in open(f'/proc/{pid}/environ', 'rb').read()\n"
        "except OSError as exc:\n"
        "    out['environ'] = exc.strerror\n"
        "try:\n"
        "    fd = os.open(f'/proc/{pid}/root/run/cdsw/replica.sock', os.O_PATH)\n"
        "    s = socket.socket(socket.AF_UNIX); s.connect(f'/proc/self/fd/{fd}')\n"
        "    out['socket'] = 'connected'\n"
        "except OSError as exc:\n"
        "    out['socket'] = exc.strerror\n"
        "print(json.dumps(out))\n"
    )
    if os.geteuid() != 0:
        pytest.skip("becoming uid 1000 needs root")
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + probe, str(pid)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {"environ": "Permission denied", "socket": "Permission denied"}
