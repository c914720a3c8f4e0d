"""The Docker runtime for real: image builds, containers as replicas, adoption, OOM."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import docker
import httpx
import pytest

from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.engine.backends.docker.runtime import home_id
from cdsw_tui.services import background, builds, deployments, models
from cdsw_tui.services.lock import state
from tests.conftest import Cli, write_project
from tests.helpers import call

pytestmark = pytest.mark.docker


def containers(home: Path) -> dict[str, str]:
    client = docker.from_env()
    return {c.name: c.id for c in client.containers.list(filters={"label": f"cdsw.home={home}"})}


def test_quickstart_on_docker_with_pip_from_pypi(cli: Cli, wb, home: Path):
    cli("project", "create", "dk", "--template", "quickstart", "--runtime", "docker")
    root = Path(models.projects.get(wb, "dk").path)
    with open(root / "requirements.txt", "a") as fh:  # a fresh dependency layer: pip must run
        fh.write(f"# {time.time_ns()}\n")
    cli(
        "model",
        "create",
        "dk/add",
        "--file",
        "add_numbers.py",
        "--function",
        "add",
        "--example-input",
        '{"a":3,"b":5}',
        "--wait",
        timeout=600,
    )
    out = json.loads(cli("call", "dk/add").out)
    assert out["success"] and out["response"] == 8
    assert out["ReplicaID"] in containers(home)  # the container is named after its replica
    model = models.resolve(wb, "dk/add")
    build = builds.get(wb, model, 1)
    assert build.artifact == f"cdsw-tui/{home_id(home)}-m{model.id}-add:1"
    assert build.image_id.startswith("sha256:")
    # the replica runs the image recorded on the build, whatever its tag names now
    container = docker.from_env().containers.get(out["ReplicaID"])
    assert container.attrs["Image"] == build.image_id
    image = docker.from_env().images.get(build.artifact)
    assert image.labels["cdsw.build"] == "1" and image.labels["cdsw.snapshot"] == build.snapshot
    log = cli("build-log", "dk/add", "1").out
    assert "Successfully installed numpy" in log  # cdsw-build.sh ran pip behind the proxy
    # the iris model imports numpy, installed by cdsw-build.sh inside the image
    cli(
        "model",
        "create",
        "dk/iris",
        "--file",
        "iris_model.py",
        "--function",
        "predict",
        "--example-input",
        '{"petal_length": 4.7, "petal_width": 1.4}',
        "--wait",
        timeout=600,
    )
    iris = json.loads(cli("call", "dk/iris").out)
    assert iris["response"] == {"species": "versicolor", "probability": 0.97}
    # a code-only change reuses the dependency layer
    (root / "add_numbers.py").write_text("def add(args):\n    return args['a'] + args['b']  # v2\n")
    cli("build", "dk/add", "--wait")
    assert builds.get(wb, models.resolve(wb, "dk/add"), 2).dep_reused
    # stop leaves no container behind
    cli("stop", "dk/add", "--wait")
    cli("stop", "dk/iris", "--wait")
    assert containers(home) == {}


def test_kill_9_then_containers_are_adopted_not_recreated(cli: Cli, wb, home: Path, tmp_path: Path):
    root = write_project(tmp_path / "p", {"m.py": "def f(args):\n    return 'ok'\n"})
    cli("project", "create", "p", "--path", str(root), "--runtime", "docker")
    cli(
        "model",
        "create",
        "p/f",
        "--file",
        "m.py",
        "--function",
        "f",
        "--replicas",
        "2",
        "--wait",
        timeout=600,
    )
    before = containers(home)
    assert len(before) == 2
    info = docker.from_env().api.inspect_container(next(iter(before.values())))
    uid = replica_identity().uid  # REPLICA_UID: no host account has it
    assert info["Config"]["User"] == f"{uid}:{uid}" and info["HostConfig"]["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in info["HostConfig"]["SecurityOpt"]
    assert info["HostConfig"]["Privileged"] is False
    assert not info["HostConfig"]["PortBindings"]  # reached through its socket only
    assert info["HostConfig"]["PidsLimit"] > 0
    # its socket folder, and the gateway's (read-only: the forwarder to the gateway)
    mounts = {m["Destination"]: m["RW"] for m in info["Mounts"]}
    assert mounts == {"/run/cdsw": True, "/run/cdsw-gateway": False}
    os.kill(state(home).pid, signal.SIGKILL)
    while state(home).running:
        time.sleep(0.02)
    start = time.monotonic()
    background.ensure(wb)
    while True:
        try:
            if call(wb, "p/f", {}).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() - start < 5, "no answer within 5 s"
        time.sleep(0.05)
    assert containers(home) == before  # the same containers, adopted
    cli("stop", "p/f", "--wait")
    assert containers(home) == {}


def test_out_of_memory_is_reported_and_restarted(cli: Cli, wb, home: Path, tmp_path: Path):
    code = "def hog(args):\n    return len(bytearray(args['mb'] * 1024 * 1024))\n"
    root = write_project(tmp_path / "p", {"m.py": code})
    cli("project", "create", "p", "--path", str(root), "--runtime", "docker")
    cli(
        "model",
        "create",
        "p/hog",
        "--file",
        "m.py",
        "--function",
        "hog",
        "--memory",
        "128",
        "--wait",
        timeout=600,
    )
    assert call(wb, "p/hog", {"mb": 10}).status_code == 200
    response = call(wb, "p/hog", {"mb": 400})
    assert response.status_code == 502 and response.json()["error"]["code"] == "replica.failed"
    d = models.active_deployment(wb, models.resolve(wb, "p/hog"))
    deadline = time.monotonic() + 30
    while True:
        replica = deployments.replicas_of(wb, d)[0]
        if replica.restarts >= 1 and replica.status == "running":
            break
        assert time.monotonic() < deadline, replica
        time.sleep(0.1)
    assert "out of memory" in replica.reason  # the last failure stays visible
    assert "out of memory" in cli("logs", "p/hog").out
    assert call(wb, "p/hog", {"mb": 10}).status_code == 200


def test_missing_engine_image_says_how_to_make_one(cli: Cli, wb, tmp_path: Path):
    root = write_project(tmp_path / "p", {"m.py": "def f(args):\n    return 1\n"})
    cli(
        "project",
        "create",
        "p",
        "--path",
        str(root),
        "--runtime",
        "docker",
        "--engine",
        "nowhere/engine:9",
    )
    cli("model", "create", "p/f", "--file", "m.py", "--function", "f", "--no-deploy")
    result = cli("build", "p/f", "--wait", check=False)
    assert result.code == 1
    assert "nowhere/engine:9 does not exist" in result.err and "cdsw-tui engine build" in result.err


R_ENGINE = "cdsw-tui/engine-r:latest"


def test_r_models_on_docker(cli: Cli, wb, home: Path, tmp_path: Path):
    try:
        docker.from_env().images.get(R_ENGINE)
    except docker.errors.ImageNotFound:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must build {R_ENGINE} (cdsw-tui engine build --r)")
        pytest.skip(f"{R_ENGINE} missing (cdsw-tui engine build --r)")
    code = (
        "add <- function(args) {\n  args$a + args$b\n}\n"
        "describe <- function(args) {\n  x <- unlist(args$values)\n  list(n = length(x), max = max(x))\n}\n"
        "fails <- function(args) {\n  stop('no such species')\n}\n"
    )
    root = write_project(tmp_path / "r", {"model.R": code})
    cli("project", "create", "r", "--path", str(root), "--runtime", "docker", "--engine", R_ENGINE)
    for name in ("add", "describe", "fails"):
        cli(
            "model",
            "create",
            f"r/{name}",
            "--file",
            "model.R",
            "--function",
            name,
            "--kernel",
            "r",
            "--wait",
            timeout=600,
        )
    assert call(wb, "r/add", {"a": 3, "b": 5}).json()["response"] == 8
    assert call(wb, "r/describe", {"values": [4, 9]}).json()["response"] == {"n": 2, "max": 9}
    failed = call(wb, "r/fails", {})
    assert failed.status_code == 500 and "no such species" in failed.json()["error"]["message"]


def _dockerd_restart() -> None:
    """Stop dockerd (its containers stop with it) and start it again as .ci/run does."""
    import subprocess

    subprocess.run(["pkill", "-x", "dockerd"], check=False)
    deadline = time.monotonic() + 60
    while subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "dockerd did not stop"
        time.sleep(0.2)
    while (
        subprocess.run(
            ["pgrep", "-f", "docker/containerd/containerd.toml"], capture_output=True
        ).returncode
        == 0
    ):
        assert time.monotonic() < deadline, "dockerd's containerd did not stop"
        time.sleep(0.2)
    subprocess.Popen(
        ["dockerd"],
        stdout=open("/tmp/cdsw-test-dockerd.log", "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    while True:
        try:
            docker.from_env(timeout=5).ping()
            return
        except Exception:
            assert time.monotonic() < deadline, "dockerd did not come back"
            time.sleep(0.5)


def test_a_build_whose_engine_restarts_is_built_again_once(
    cli: Cli, wb, home: Path, tmp_path: Path
):
    """Near the end of this file: it restarts the Docker engine. A build whose
    cdsw-build.sh is running when dockerd goes: before, it failed, not retried; now it
    waits for the engine and is built again, saying so in its log."""
    root = write_project(
        tmp_path / "p",
        {
            "m.py": "def f(args):\n    return 'ok'\n",
            "cdsw-build.sh": "#!/bin/sh\necho working; sleep 20; echo done\n",
        },
    )
    cli("project", "create", "p", "--path", str(root), "--runtime", "docker")
    cli("model", "create", "p/f", "--file", "m.py", "--function", "f", "--no-deploy")
    model = models.resolve(wb, "p/f")
    build = builds.request(wb, model)
    background.ensure(wb)
    log = builds.log_path(wb, build)
    deadline = time.monotonic() + 120
    while not (log.exists() and "working" in log.read_text()):
        assert time.monotonic() < deadline, "cdsw-build.sh did not start"
        time.sleep(0.2)
    _dockerd_restart()
    final = builds.wait(wb, build, timeout=300)
    text = log.read_text()
    assert final.status == "built", (final.reason, text[-2000:])
    assert "the Docker engine went away during the build" in text
    assert "the Docker engine answers again: building again" in text
    assert text.count("working") == 2  # its step ran again, whole


def test_dockerd_restart_under_a_deployment(cli: Cli, wb, home: Path, tmp_path: Path):
    """Last in this file: it restarts the Docker engine itself."""
    root = write_project(tmp_path / "p", {"m.py": "def f(args):\n    return 'ok'\n"})
    cli("project", "create", "p", "--path", str(root), "--runtime", "docker")
    cli(
        "model",
        "create",
        "p/f",
        "--file",
        "m.py",
        "--function",
        "f",
        "--replicas",
        "2",
        "--wait",
        timeout=600,
    )
    assert call(wb, "p/f", {}).status_code == 200
    _dockerd_restart()
    deadline = time.monotonic() + 60
    while True:
        try:
            if call(wb, "p/f", {}).status_code == 200 and len(containers(home)) == 2:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "not recovered within 60 s of dockerd's return"
        time.sleep(0.2)
    d = models.active_deployment(wb, models.resolve(wb, "p/f"))
    assert d.status == "deployed"
    assert sum(r.restarts for r in deployments.replicas_of(wb, d)) >= 2  # restarted, not replaced
    cli("stop", "p/f", "--wait")
    assert containers(home) == {}
    assert not docker.from_env().containers.list(all=True, filters={"label": f"cdsw.home={home}"})
