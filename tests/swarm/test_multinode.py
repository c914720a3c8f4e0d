"""Two worker nodes on this machine: docker-in-docker containers made from the engine
image plus docker.io, joined to this machine's swarm. Replicas run only on them, are
called through the gateway, and one moves to the other node when its node is drained.
Traffic stays between this machine's own containers and loopback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from cdsw_tui.services import projects
from tests.conftest import Cli, free_port, write_project
from tests.helpers import ENGINE, call, services, settle, traffic

pytestmark = pytest.mark.swarm

NODE_DOCKERFILE = f"""\
FROM {ENGINE}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \\
    --no-install-recommends docker.io iptables ca-certificates >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
LABEL cdsw.engine=0
"""
CODE = """\
import os


def where(args):
    return os.environ["CDSW_REPLICA_ID"]
"""
FORWARD = Path(__file__).with_name("forward.py")


def sh(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def node_image(client) -> str:
    """The worker node image, built once per recipe (docker.io from Debian's packages)."""
    tag = "cdsw-tui/swarm-node:" + hashlib.sha256(NODE_DOCKERFILE.encode()).hexdigest()[:12]
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        import io

        client.images.build(fileobj=io.BytesIO(NODE_DOCKERFILE.encode()), tag=tag, rm=True)
    return tag


@pytest.fixture(scope="module")
def workers(registry: str) -> Iterator[list[str]]:
    client = docker.from_env()
    manager = client.api.inspect_node(client.info()["Swarm"]["NodeID"])["Status"]["Addr"]
    if manager.startswith("127."):
        why = (
            f"the swarm manager is advertised on {manager}, which worker containers cannot "
            "reach (.ci/run advertises the docker0 bridge address)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    image = node_image(client)
    token = client.swarm.attrs["JoinTokens"]["Worker"]
    registry_port = int(registry.rpartition(":")[2])
    relay_port = free_port()
    relay = subprocess.Popen(  # bridge address -> the registry on loopback
        [sys.executable, str(FORWARD), manager, str(relay_port), "127.0.0.1", str(registry_port)]
    )
    names, nodes = [], []
    try:
        for n in (1, 2):
            name = f"cdsw-test-node-{os.getpid()}-{n}"
            names.append(name)
            sh(  # dockerd inside needs what --privileged gives, less what these VMs refuse
                "docker",
                "run",
                "-d",
                "--name",
                name,
                "--label",
                "cdsw.test=swarm-node",
                "--cap-add",
                "ALL",
                "--cap-drop",
                "SYS_RESOURCE",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
                "--security-opt",
                "systempaths=unconfined",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--tmpfs",
                "/var/lib/docker:exec",
                image,
                "dockerd",
                "--storage-driver",
                "vfs",
            )
        for name in names:
            deadline = time.monotonic() + 60
            while subprocess.run(
                ["docker", "exec", name, "docker", "info"], capture_output=True
            ).returncode:
                assert time.monotonic() < deadline, f"dockerd did not start in {name}"
                time.sleep(0.5)
            sh("docker", "cp", str(FORWARD), f"{name}:/forward.py")
            sh(  # inside the node, the registry's loopback address leads to this machine
                "docker",
                "exec",
                "-d",
                name,
                "python3",
                "/forward.py",
                "127.0.0.1",
                str(registry_port),
                manager,
                str(relay_port),
            )
            address = client.containers.get(name).attrs["NetworkSettings"]["IPAddress"]
            sh(
                "docker",
                "exec",
                name,
                "docker",
                "swarm",
                "join",
                "--token",
                token,
                "--advertise-addr",
                address,
                f"{manager}:2377",
            )
            nodes.append(
                sh("docker", "exec", name, "docker", "info", "--format", "{{.Swarm.NodeID}}")
            )
        yield nodes
    finally:
        for name in names:
            subprocess.run(
                ["docker", "exec", name, "docker", "swarm", "leave", "--force"],
                capture_output=True,
                timeout=60,
            )
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        for node in nodes:
            subprocess.run(["docker", "node", "rm", "--force", node], capture_output=True)
        relay.kill()
        relay.wait()


def node_of(service_id: str) -> str:
    tasks = docker.from_env().api.tasks(filters={"service": service_id, "desired-state": "running"})
    running = [t for t in tasks if t["Status"]["State"] == "running"]
    return running[0]["NodeID"] if running else ""


def test_replicas_on_two_worker_nodes_and_one_moved_by_a_drain(
    cli: Cli, wb, home: Path, tmp_path: Path, workers: list[str]
):
    root = write_project(tmp_path / "proj", {"m.py": CODE})
    projects.create(wb, "p", path=root, runtime="swarm", placement=["node.role==worker"])
    cli(
        "model",
        "create",
        "p/m",
        "--file",
        "m.py",
        "--function",
        "where",
        "--replicas",
        "2",
        "--cpu",
        "0.25",
        "--memory",
        "256",
        "--wait",
        timeout=600,
    )
    found = services(home)
    ids = {name: s["ID"] for name, s in found.items()}
    placed = {name: node_of(sid) for name, sid in ids.items()}
    assert set(placed.values()) <= set(workers)  # only on the worker nodes
    assert {call(wb, "p/m").json()["response"] for _ in range(8)} == set(ids)

    moved = sorted(ids, key=lambda n: placed[n])[0]
    drained = placed[moved]
    with traffic(wb, "p/m") as (answers, failures):
        sh("docker", "node", "update", "--availability", "drain", drained)
        deadline = time.monotonic() + 180
        while node_of(ids[moved]) in ("", drained):
            assert time.monotonic() < deadline, "Swarm did not move the task"
            time.sleep(0.5)
        while "moved; rejoining" not in (home / "logs" / "controller.log").read_text():
            assert time.monotonic() < deadline, "the controller did not see the task move"
            time.sleep(0.2)
        mark = len(answers)
        deadline = time.monotonic() + 60
        while {a["response"] for a in answers[mark:]} != set(ids):
            assert time.monotonic() < deadline, "the moved replica did not rejoin"
            time.sleep(0.2)
    assert all('"replica.failed"' in f for f in failures) and len(failures) <= 3
    assert node_of(ids[moved]) in workers and node_of(ids[moved]) != drained
    assert {n: s["ID"] for n, s in services(home).items()} == ids  # the same services
    sh("docker", "node", "update", "--availability", "active", drained)
    cli("stop", "p/m", "--wait")
    settle(home, 0)
