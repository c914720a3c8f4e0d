"""The replica boundary on Docker, attacked for real from inside a container: links
planted in every folder a replica can write, a socket swapped for a link to another,
look-alike names sharing a tag, and what a deleted model leaves behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import docker
import httpx
import pytest

from cdsw_tui.engine.backends.docker.builder import image_tag
from cdsw_tui.services import background, builds, deployments, models
from cdsw_tui.services.lock import state
from tests.conftest import Cli, write_project
from tests.helpers import call

pytestmark = pytest.mark.docker

PLANT = """\
import os

TARGET = os.environ["TARGET"]
DECOY = os.environ["DECOY"]

# every folder of the host this container can write: fill it with links to a host file
for folder in ("/var/log/cdsw", "/run/cdsw"):
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        continue
    names = set(os.listdir(folder)) | {"metrics.jsonl", "x.log"}
    for name in names:
        path = os.path.join(folder, name)
        if name == "replica.sock" or os.path.isdir(path):
            continue
        try:
            os.rename(path, path + ".moved")
        except OSError:
            pass
        try:
            os.symlink(TARGET, path)
        except OSError:
            pass


def f(args):
    return "ok"


def swap(args):
    # our own socket becomes a link to another one of the host's (say, dockerd's)
    os.rename("/run/cdsw/replica.sock", "/run/cdsw/replica.sock.moved")
    os.symlink(DECOY, "/run/cdsw/replica.sock")
    return "swapped"
"""


def containers(home: Path) -> dict[str, str]:
    client = docker.from_env()
    return {c.name: c.id for c in client.containers.list(filters={"label": f"cdsw.home={home}"})}


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "host-secret"
    path.write_text("root only\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def decoy(tmp_path: Path):
    """A Unix socket of the host that counts who connects to it."""
    path = tmp_path / "decoy.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    server.settimeout(0.2)
    hits: list[int] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            hits.append(1)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path, hits
    stop.set()
    server.close()


def test_links_planted_by_model_code_are_never_followed(
    cli: Cli, wb, home: Path, tmp_path: Path, target: Path, decoy
):
    decoy_path, hits = decoy
    root = write_project(tmp_path / "p", {"m.py": PLANT})
    cli("project", "create", "p", "--path", str(root), "--runtime", "docker")
    cli("env", "set", "--project", "p", f"TARGET={target}", f"DECOY={decoy_path}")
    cli("model", "create", "p/f", "--file", "m.py", "--function", "f", "--wait", timeout=600)
    assert call(wb, "p/f", {}).json()["response"] == "ok"
    cli("restart", "p/f", "--wait", timeout=120)  # new replicas: where the controller used to chown
    assert call(wb, "p/f", {}).json()["response"] == "ok"
    # the replica swaps its socket for a link; a restarted controller probes it again
    cli("model", "create", "p/swap", "--file", "m.py", "--function", "swap", "--wait", timeout=600)
    assert call(wb, "p/swap", {}).json()["response"] == "swapped"
    os.kill(state(home).pid, signal.SIGKILL)
    while state(home).running:
        time.sleep(0.02)
    background.ensure(wb)
    deadline = time.monotonic() + 60
    while True:  # replaced, since it could not be reached
        try:
            if call(wb, "p/swap", {}).status_code == 200:
                break
        except httpx.TransportError:
            pass  # the new controller listens once it has taken over
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # the host file is as it was, and the gateway never dialled the other socket
    st = os.stat(target)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, os.geteuid())
    assert target.read_text() == "root only\n"
    assert hits == []
    sockets = home / "run" / "docker"
    for path in [home, *home.rglob("*")]:
        if path.is_symlink() or path.parent.parent == sockets:
            continue  # what a container wrote in its own folder is the container's
        assert not stat.S_IMODE(os.lstat(path).st_mode) & 0o002, f"{path} is world-writable"
    cli("stop", "p/f", "--wait")
    cli("stop", "p/swap", "--wait")


def test_a_container_listens_on_no_network_port(cli: Cli, wb, home: Path, tmp_path: Path):
    root = write_project(tmp_path / "p", {"m.py": "def f(args):\n    return 'ok'\n"})
    cli("project", "create", "p", "--path", str(root), "--runtime", "docker")
    cli("model", "create", "p/f", "--file", "m.py", "--function", "f", "--wait", timeout=600)
    [cid] = containers(home).values()
    container = docker.from_env().containers.get(cid)
    assert not container.attrs["NetworkSettings"]["Ports"]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        code, out = container.exec_run(["cat", table])
        rows = [line.split() for line in out.decode().splitlines()[1:]] if code == 0 else []
        # the forwarder to the gateway's socket listens on the container's own loopback
        # (the gateway's port): unreachable from outside it
        forwarder = f"0100007F:{wb.settings.gateway_port:04X}"
        listening = [r for r in rows if r[3] == "0A" and r[1] != forwarder]
        assert not listening, f"a listener in {table}: {out!r}"
    assert container.attrs["HostConfig"]["PidsLimit"] > 0
    assert call(wb, "p/f", {}).json()["response"] == "ok"


def test_look_alike_names_never_share_an_image(cli: Cli, wb, home: Path, tmp_path: Path):
    """tagA/x-y and tagA-x/y once shared a tag, so deploying one ran the other's code."""
    for project, model, answer in (("tagA", "x-y", "first"), ("tagA-x", "y", "second")):
        root = write_project(tmp_path / project, {"m.py": f"def f(args):\n    return {answer!r}\n"})
        cli("project", "create", project, "--path", str(root), "--runtime", "docker")
        cli(
            "model",
            "create",
            f"{project}/{model}",
            "--file",
            "m.py",
            "--function",
            "f",
            "--wait",
            timeout=600,
        )
    first, second = models.resolve(wb, "tagA/x-y"), models.resolve(wb, "tagA-x/y")
    tags = {builds.get(wb, m, 1).artifact for m in (first, second)}
    assert len(tags) == 2
    cli("deploy", "tagA/x-y", "--build", "1", "--wait", timeout=120)  # a re-deploy of the first
    assert call(wb, "tagA/x-y", {}).json()["response"] == "first"
    assert call(wb, "tagA-x/y", {}).json()["response"] == "second"
    # another home gives the same model another tag
    assert image_tag(home, int(first.id), "x-y", 1) != image_tag(
        tmp_path / "other", int(first.id), "x-y", 1
    )


def test_model_delete_removes_its_images_and_engine_list_lists_engines(
    cli: Cli, wb, home: Path, tmp_path: Path
):
    root = write_project(tmp_path / "p", {"m.py": "def f(args):\n    return 1\n"})
    cli("project", "create", "p", "--path", str(root), "--runtime", "docker")
    cli("model", "create", "p/f", "--file", "m.py", "--function", "f", "--no-deploy")
    cli("build", "p/f", "--wait", timeout=600)
    model = models.resolve(wb, "p/f")
    image_id = builds.get(wb, model, 1).image_id
    client = docker.from_env()
    assert client.images.get(image_id)
    listed = json.loads(cli("engine", "list", "--json").out)
    assert listed and not [e for e in listed if any("-m" in t for t in e["tags"])]
    cli("model", "delete", "p/f", "--yes")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(image_id)
    # what is left is the project's: its cdsw-build.sh result, kept for its next model
    left = client.images.list(filters={"label": f"cdsw.home={home}"})
    assert [i.labels.get("cdsw.deps") for i in left] == ["p1-b1"]
    assert deployments.list_deployments(wb) == []
    cli("project", "delete", "p", "--yes")
    assert not client.images.list(filters={"label": f"cdsw.home={home}"})
