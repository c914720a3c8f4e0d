"""The swarm runtime for real, on a one-node swarm: services as replicas behind the
challenged channel, digests from a registry, rollouts and scaling under traffic, a
controller killed and restarted, and a task Swarm reschedules."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import docker
import pytest

from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.engine.backends.swarm.runtime import NOT_A_MANAGER, manager
from cdsw_tui.errors import CdswError
from cdsw_tui.services import projects
from cdsw_tui.services.lock import state
from tests.conftest import Cli, stop_controller, write_project
from tests.helpers import call, services, settle, traffic

pytestmark = pytest.mark.swarm

CODE = """\
import os

VERSION = {version}


def predict(args):
    return {{"version": VERSION, "replica": os.environ["CDSW_REPLICA_ID"]}}
"""
SMALL = ("--cpu", "0.25", "--memory", "256")  # two rollouts' reservations fit on 2 cores


def create_model(cli: Cli, *extra: str, check: bool = True):
    """p/m from CODE's ``predict``, built and deployed (``--wait``)."""
    return cli(
        "model",
        "create",
        "p/m",
        "--file",
        "model.py",
        "--function",
        "predict",
        "--wait",
        *extra,
        check=check,
        timeout=600,
    )


def test_quickstart_on_swarm_adopted_rescheduled_and_stopped(cli: Cli, wb, home: Path):
    cli(
        "project",
        "create",
        "sw",
        "--template",
        "quickstart",
        "--runtime",
        "swarm",
        "--constraint",
        "node.role==manager",
    )
    cli(
        "model",
        "create",
        "sw/add",
        "--file",
        "add_numbers.py",
        "--function",
        "add",
        "--example-input",
        '{"a":3,"b":5}',
        "--replicas",
        "2",
        *SMALL,
        "--wait",
        timeout=600,
    )
    seen = {call(wb, "sw/add", {"a": 3, "b": 5}).json()["ReplicaID"] for _ in range(8)}
    found = services(home)
    assert seen == set(found) and len(found) == 2  # a service per replica, both serving
    spec = next(iter(found.values()))["Spec"]
    task = spec["TaskTemplate"]
    registry = os.environ["CDSW_TUI_REGISTRY"]
    assert task["ContainerSpec"]["Image"].startswith(f"{registry}/")
    assert "@sha256:" in task["ContainerSpec"]["Image"]  # the pushed digest, not a tag
    uid = replica_identity().uid  # REPLICA_UID: no account of this host has it
    assert task["ContainerSpec"]["User"] == f"{uid}:{uid}"
    assert task["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
    assert task["Resources"]["Limits"]["NanoCPUs"] == 250_000_000
    assert task["Resources"]["Reservations"]["MemoryBytes"] == 256 * 1024 * 1024
    assert task["Placement"]["Constraints"] == ["node.role==manager"]
    assert spec["Labels"]["cdsw.home"] == str(home)
    build_log = cli("build-log", "sw/add", "1").out
    assert "pushed; replicas start from" in build_log

    # the published port answers nobody without the replica's key
    tasks = docker.from_env().api.tasks(filters={"service": next(iter(found.values()))["ID"]})
    running = [t for t in tasks if t["Status"]["State"] == "running"]
    port = running[0]["Status"]["PortStatus"]["Ports"][0]["PublishedPort"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.recv(16)  # the challenge
        sock.sendall(b"H\x00\x00\x00\x00" + b"\0" * 27)
        assert sock.recv(1024) == b""

    # logs come from the service logs API
    logs = cli("logs", "sw/add").out
    assert all(f"replica {name} ready" in logs for name in found)

    # a controller killed with SIGKILL: the next one adopts the same services
    ids = {name: s["ID"] for name, s in found.items()}
    stop_controller(home, signal.SIGKILL)
    assert not state(home).running
    assert set(services(home)) == set(ids)  # the replicas outlive their controller
    cli("call", "sw/add")  # starts a controller, which adopts them
    deadline = time.monotonic() + 30
    while {call(wb, "sw/add", {"a": 1, "b": 1}).json().get("ReplicaID") for _ in range(6)} != set(
        ids
    ):
        assert time.monotonic() < deadline, "the adopted replicas did not both serve"
    assert {n: s["ID"] for n, s in services(home).items()} == ids  # adopted, none replaced
    assert "adopted replica" in (home / "logs" / "controller.log").read_text()

    # Swarm replaces one task (as after a node failure): the replica rejoins at its new port
    moved = sorted(ids)[0]
    with traffic(wb, "sw/add", {"a": 1, "b": 2}) as (answers, failures):
        docker.from_env().services.get(ids[moved]).force_update()
        deadline = time.monotonic() + 60
        while "moved; rejoining" not in (home / "logs" / "controller.log").read_text():
            assert time.monotonic() < deadline, "the controller did not see the task move"
            time.sleep(0.2)
        time.sleep(1)
        count = len(answers)
        time.sleep(2)
    # only a call in flight on the task Swarm stopped may fail (as on a node failure)
    assert len(failures) <= 3
    assert all(json.loads(f)["error"]["code"] == "replica.failed" for f in failures)
    assert {a["ReplicaID"] for a in answers[count:]} == set(ids)  # both serve again
    assert {n: s["ID"] for n, s in services(home).items()} == ids  # the same services

    cli("stop", "sw/add", "--wait")
    assert services(home) == {}
    api = docker.from_env().api
    assert api.secrets(filters={"label": f"cdsw.home={home}"}) == []


def test_rollback_and_scaling_under_traffic_lose_no_call(cli: Cli, wb, home: Path, tmp_path: Path):
    root = write_project(tmp_path / "proj", {"model.py": CODE.format(version=1)})
    projects.create(wb, "p", path=root, runtime="swarm")
    create_model(cli, "--replicas", "2", *SMALL)
    (root / "model.py").write_text(CODE.format(version=2))
    cli("build", "p/m", "--wait", timeout=600)
    with traffic(wb, "p/m") as (answers, failures):
        cli("deploy", "p/m", "--build", "2", "--wait", timeout=300)
        time.sleep(0.5)
        cli("deploy", "p/m", "--build", "1", "--wait", timeout=300)  # the rollback
        time.sleep(0.5)
    assert failures == []
    versions = [a["response"]["version"] for a in answers]
    assert 1 in versions and 2 in versions and versions[-1] == 1
    settle(home, 2)  # the replaced deployments' services go once they stopped

    cli("scale", "p/m", "1", "--wait", timeout=300)
    with traffic(wb, "p/m") as (answers, failures):
        cli("scale", "p/m", "3", "--wait", timeout=300)
        settle(home, 3)
        time.sleep(1)
        mark = len(answers)
        time.sleep(1)
        serving = {a["ReplicaID"] for a in answers[mark:]}
        cli("scale", "p/m", "1", "--wait", timeout=300)
        time.sleep(0.5)
    assert failures == []
    assert len(serving) == 3  # all three took calls
    settle(home, 1)
    listed = json.loads(cli("deployments", "p/m", "--json").out)
    assert listed[0]["replicas"] == 1 and len(listed) == 3  # scaled, not redeployed


def test_a_redeploy_that_does_not_fit_rolls_one_replica_at_a_time(
    cli: Cli, wb, home: Path, tmp_path: Path
):
    """The quickstart's two replicas with the default cpu (1 each on this 2-core machine:
    the node's whole capacity). New-before-old needs twice that, so Swarm places no new
    replica ("no suitable node"); before, the redeploy failed. Now one old replica makes
    room at a time, at least one serves throughout, and the reason says how it went."""
    cores = os.cpu_count() or 2
    fill = () if cores == 2 else ("--cpu", f"{cores / 2:g}")  # two replicas fill the node
    root = write_project(tmp_path / "proj", {"model.py": CODE.format(version=1)})
    projects.create(wb, "p", path=root, runtime="swarm")
    create_model(cli, "--replicas", "2", "--memory", "256", *fill)
    (root / "model.py").write_text(CODE.format(version=2))
    cli("build", "p/m", "--wait", timeout=600)
    with traffic(wb, "p/m") as (answers, failures):
        cli("deploy", "p/m", "--build", "2", "--wait", timeout=300)
        settle(home, 2)  # the old ones gone, the second new one placed in their room
        # its service is there before its replica answers: it joins the gateway once ready
        settled, deadline = len(answers), time.monotonic() + 60
        while len({a["ReplicaID"] for a in answers[settled:]}) < 2:
            assert time.monotonic() < deadline, "the second new replica never served"
            time.sleep(0.2)
    assert failures == [], failures[:3]
    versions = [a["response"]["version"] for a in answers]
    assert 1 in versions and versions[-1] == 2
    assert all(a["response"]["version"] == 2 for a in answers[settled:])  # both new ones serve
    latest = json.loads(cli("deployments", "p/m", "--json").out)[0]
    assert latest["status"] == "deployed", latest
    assert "one replica at a time" in latest["reason"] and "no suitable node" in latest["reason"]


def test_a_swarm_build_without_a_registry_says_how_to_get_one(
    cli: Cli, wb, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("CDSW_TUI_REGISTRY")
    root = write_project(tmp_path / "proj", {"model.py": CODE.format(version=1)})
    projects.create(wb, "p", path=root, runtime="swarm")
    out = create_model(cli, check=False)
    assert out.code != 0
    assert "cdsw-tui registry start" in out.err and "Traceback" not in out.err
    assert len(out.err.strip().splitlines()) <= 2


def test_an_engine_that_is_no_manager_is_named_with_the_command_to_fix_it():
    class Worker:  # what a plain engine (no swarm) or a worker node says of itself
        def info(self):
            return {"Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False}}

    with pytest.raises(CdswError) as raised:
        manager(Worker())
    assert raised.value.message == NOT_A_MANAGER
    assert "docker swarm init" in NOT_A_MANAGER
