"""Docker builds against hostile projects: secrets kept out of image history, and a
silent build step stopped on time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import docker
import pytest

from cdsw_tui.services import builds, models
from tests.conftest import Cli, write_project

pytestmark = pytest.mark.docker

CODE = """\
import os


def env(args):
    return os.environ.get("API_TOKEN", "")
"""


def sleepers() -> list:
    """Running containers of a build step (the classic builder runs each RUN in one)."""
    client = docker.from_env()
    return [
        c for c in client.containers.list() if "cdsw-build.sh" in " ".join(c.attrs["Args"] or [])
    ]


def test_secret_variables_stay_out_of_the_image(cli: Cli, wb, tmp_path: Path):
    root = write_project(tmp_path / "p", {"m.py": CODE, "cdsw-build.sh": "echo building\n"})
    cli("project", "create", "p", "--path", str(root), "--runtime", "docker")
    cli("env", "set", "--project", "p", "API_TOKEN=tok-9f8e7d6c5b4a", "PLAIN_SETTING=visible")
    cli("model", "create", "p/env", "--file", "m.py", "--function", "env", "--wait", timeout=600)
    build = builds.get(wb, models.resolve(wb, "p/env"), 1)
    client = docker.from_env()
    history = json.dumps(client.api.history(build.image_id))
    config = json.dumps(client.api.inspect_image(build.image_id))
    assert "tok-9f8e7d6c5b4a" not in history and "tok-9f8e7d6c5b4a" not in config
    assert "visible" in history  # ordinary variables still reach the build
    assert "API_TOKEN are not passed to the image build" in cli("build-log", "p/env", "1").out
    # the replica has it, at run time
    assert json.loads(cli("call", "p/env").out)["response"] == "tok-9f8e7d6c5b4a"


@pytest.mark.parametrize("stop", ["timeout", "cancel"])
def test_a_silent_build_step_is_stopped_on_time(cli: Cli, wb, tmp_path: Path, stop: str):
    root = write_project(
        tmp_path / "p", {"m.py": CODE, "cdsw-build.sh": f"sleep 120  # {stop} {time.time()}\n"}
    )
    cli("project", "create", "p", "--path", str(root), "--runtime", "docker")
    cli("model", "create", "p/env", "--file", "m.py", "--function", "env", "--no-deploy")
    start = time.monotonic()
    if stop == "timeout":
        result = cli("build", "p/env", "--wait", check=False, env={"CDSW_TUI_BUILD_TIMEOUT": "8"})
        assert result.code == 1 and "timedout" in result.err
        assert "Running in" in cli("build-log", "p/env", "1").out  # the silent step had begun
    else:
        cli("build", "p/env")
        model = models.resolve(wb, "p/env")
        deadline = time.monotonic() + 60
        while not sleepers():
            assert time.monotonic() < deadline, "the build step never started"
            time.sleep(0.2)
        start = time.monotonic()
        cli("cancel", "p/env")
        while builds.get(wb, model, 1).status not in ("cancelled", "failed", "built"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert builds.get(wb, model, 1).status == "cancelled"
    assert time.monotonic() - start < 20  # not the 120 s the step would take
    deadline = time.monotonic() + 15
    while sleepers():  # and the step's container goes with it
        assert time.monotonic() < deadline, "the build step's container survived"
        time.sleep(0.2)


REACH = """\
import os
import socket


def reach(args):
    try:
        socket.create_connection((args["host"], args["port"]), timeout=3).close()
        return "reached"
    except OSError as exc:
        return f"not reached: {exc.strerror or exc}"


def fill(args):
    written = 0
    try:
        with open("/run/cdsw/fill", "wb") as fh:
            for _ in range(200):
                fh.write(b"x" * (1 << 20))
                fh.flush()
                written += 1
    except OSError as exc:
        return {"mb": written, "error": exc.strerror}
    finally:
        try:
            os.unlink("/run/cdsw/fill")
        except OSError:
            pass
    return {"mb": written, "error": ""}
"""


def bridge_address() -> str:
    """This host's address on Docker's bridge (what a container's default route is)."""
    import ipaddress

    config = docker.from_env().networks.get("bridge").attrs["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return config["Gateway"]
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))  # dockerd gives it .1


def test_replicas_reach_no_host_listener_and_cannot_fill_the_home(cli: Cli, wb, tmp_path: Path):
    """A listener of this host on 0.0.0.0, dialled through the bridge, and 200 MB written
    into the replica's socket folder (a host folder under the home). Before: reached, and
    200 MB landed in the home. Now: no network unless the project allows egress, and the
    folder is a 1 MB tmpfs; with `project egress p on` a new replica reaches it."""
    import os
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    threading.Thread(
        target=lambda: [listener.accept()[0].close() for _ in range(4)], daemon=True
    ).start()
    try:
        root = write_project(tmp_path / "p", {"m.py": REACH})
        cli("project", "create", "p", "--path", str(root), "--runtime", "docker")
        for fn in ("reach", "fill"):
            cli("model", "create", f"p/{fn}", "--file", "m.py", "--function", fn, "--wait",
                timeout=600)  # fmt: skip
        target = json.dumps({"host": bridge_address(), "port": port})
        assert json.loads(cli("call", "p/reach", target).out)["response"].startswith("not reached")
        filled = json.loads(cli("call", "p/fill", "{}").out)["response"]
        if os.geteuid() == 0:  # the folder is a tmpfs where the controller may mount one
            assert filled["mb"] <= 1 and filled["error"] == "No space left on device", filled
        info = docker.from_env().containers.list(filters={"label": "cdsw.home=" + str(wb.home)})
        host = info[0].attrs["HostConfig"]
        assert host["NetworkMode"] == "none" and host["Tmpfs"]["/tmp"].startswith("size=256m")
        cli("project", "egress", "p", "on")
        cli("restart", "p/reach", "--wait", timeout=300)
        assert json.loads(cli("call", "p/reach", target).out)["response"] == "reached"
    finally:
        listener.close()
