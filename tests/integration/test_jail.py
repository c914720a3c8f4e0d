"""Model code on the local runtime under a root controller (issue 21, items 4 and 5), tried
as an attacker would from inside a model: it runs as an unprivileged uid no host account
has, sees neither the store nor another model, cannot change its build or environment,
and its whole process tree is bounded and stopped together."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from cdsw_tui.engine.accounts import replica_identity
from cdsw_tui.engine.backends.local import sandbox
from cdsw_tui.services import builds, deployments, models
from tests.conftest import ADD, Cli, replica_pid, write_project

PROBE = """\
import os
import socket


def probe(args):
    seen = {}
    for name, path in args["read"].items():
        try:
            open(path, "rb").read(1)
            seen[name] = "read"
        except OSError as exc:
            seen[name] = exc.strerror or str(exc)
    for name, path in args["write"].items():
        try:
            with open(path, "a") as fh:
                fh.write("tampered")
            seen[name] = "written"
        except OSError as exc:
            seen[name] = exc.strerror or str(exc)
    for name, path in args["connect"].items():
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            seen[name] = "connected"
        except OSError as exc:
            seen[name] = exc.strerror or str(exc)
    seen["uid"] = os.getuid()
    seen["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    seen["home"] = os.path.exists(args["home"])
    return seen
"""

TREE = """\
import subprocess
import sys
import time


def hog(args):
    code = (
        f"b = bytearray({args['mb']} << 20); b[::4096] = bytes(len(b[::4096])); "
        "import time; time.sleep(60)"
    )
    kids = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(args["n"])]
    time.sleep(args.get("wait", 4))
    alive = sum(k.poll() is None for k in kids)
    for k in kids:
        k.kill()
    return alive


def shm(args):
    with open(f"/dev/shm/{args['name']}", "wb") as fh:
        fh.write(b"x" * (args["mb"] << 20))
    return "written"


def daemon(args):
    subprocess.run(["env", "-i", "setsid", "-f", "sleep", args["tag"]], check=True)
    return "started"
"""

REACH = """\
import json
import os
import socket
import urllib.request


def reach(args):
    seen = {}
    for host in ("127.0.0.1", args["other"]):
        sock = socket.socket()
        sock.settimeout(2)
        try:
            sock.connect((host, args["port"]))
            seen[host] = "reached"
        except OSError as exc:
            seen[host] = "not reached: " + (exc.strerror or str(exc))
        finally:
            sock.close()
    # the gateway, at the name AMP code builds from the engine's variables
    url = "http://modelservice." + os.environ["CDSW_DOMAIN"] + "/model"
    body = json.dumps({"accessKey": args["key"], "request": {"a": 1, "b": 2}}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        seen["gateway"] = json.load(answer)["response"]
    return seen
"""


@pytest.fixture(autouse=True)
def jailed():
    why = sandbox.unavailable()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs as root and must jail model code: {why}")
        pytest.skip(f"model code is not jailed here: {why}")


def deploy(cli: Cli, ref: str, file: str, fn: str, *extra: str) -> None:
    cli("model", "create", ref, "--file", file, "--function", fn, "--wait", *extra, timeout=300)


def call(cli: Cli, ref: str, request: dict) -> object:
    import json

    answer = cli("call", ref, json.dumps(request), check=False).json()
    assert answer["success"], answer
    return answer["response"]


def sleeping(tag: str) -> list[int]:
    """Host processes running ``sleep TAG``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", tag.encode()]:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_model_code_reaches_neither_the_store_nor_another_model(cli: Cli, wb, tmp_path: Path):
    victim = write_project(tmp_path / "victim", {"add.py": ADD})
    attacker = write_project(tmp_path / "attacker", {"probe.py": PROBE})
    cli("project", "create", "victim", "--path", str(victim))
    cli("project", "create", "attacker", "--path", str(attacker))
    deploy(cli, "victim/add", "add.py", "add")
    deploy(cli, "attacker/probe", "probe.py", "probe")
    home = wb.home
    victim_model = models.resolve(wb, "victim/add")
    victim_build = Path(builds.get(wb, victim_model, 1).artifact)
    [victim_replica] = deployments.replicas_of(wb, models.active_deployment(wb, victim_model))
    seen = call(
        cli,
        "attacker/probe",
        {
            "read": {"store": str(home / "cdsw.db"), "key": str(home / "secret.key")},
            "write": {
                "other build": str(victim_build / "add.py"),
                "own build": "/home/cdsw/probe.py",
                "own environment": "/home/cdsw/.venv/bin/sitecustomize.py",
            },
            "connect": {"other replica": str(home / "run" / "local" / "x.sock")},
            "home": str(home),
        },
    )
    assert seen["uid"] == replica_identity(wb.settings.replica_uid).uid != 0
    assert seen["store"] != "read" and seen["key"] != "read"
    assert seen["other build"] != "written"
    assert "tampered" not in (victim_build / "add.py").read_text()
    assert seen["own build"] == "Read-only file system"
    assert seen["own environment"] == "Read-only file system"
    assert seen["other replica"] != "connected"
    assert seen["home"] is False  # the home is not even visible
    # its /proc holds its own processes only, not the victim's
    assert len(seen["pids"]) < 10 and replica_pid(victim_replica) not in seen["pids"]
    assert call(cli, "victim/add", {"a": 1, "b": 2}) == 3


def test_memory_bounds_the_whole_tree_and_stop_kills_it_all(cli: Cli, wb, tmp_path: Path):
    root = write_project(tmp_path / "tree", {"tree.py": TREE})
    cli("project", "create", "tree", "--path", str(root))
    deploy(cli, "tree/hog", "tree.py", "hog", "--memory", "256")
    # four children of 150 MB each: per process they would all fit; together they cannot
    assert call(cli, "tree/hog", {"mb": 150, "n": 4}) <= 1
    deploy(cli, "tree/shm", "tree.py", "shm", "--memory", "256")
    name = f"cdsw-test-{uuid.uuid4().hex}"
    assert call(cli, "tree/shm", {"name": name, "mb": 50}) == "written"
    assert not Path("/dev/shm", name).exists()  # its /dev/shm is its own
    deploy(cli, "tree/daemon", "tree.py", "daemon")
    tag = str(600 + uuid.uuid4().int % 1000)
    assert call(cli, "tree/daemon", {"tag": tag}) == "started"
    assert sleeping(tag)  # a daemon with no trace of the replica in its environment
    cli("stop", "tree/daemon", "--wait")
    deadline = time.monotonic() + 5
    while sleeping(tag):
        assert time.monotonic() < deadline, "the daemon outlived its replica's stop"
        time.sleep(0.05)


def test_a_build_scripts_unmarked_daemon_ends_with_its_build(cli: Cli, tmp_path: Path):
    tag = str(1600 + uuid.uuid4().int % 1000)
    root = write_project(
        tmp_path / "b",
        {"add.py": ADD, "cdsw-build.sh": f"env -i setsid -f sleep {tag}\necho started\n"},
    )
    cli("project", "create", "b", "--path", str(root))
    cli("model", "create", "b/add", "--file", "add.py", "--function", "add", "--no-deploy")
    cli("build", "b/add", "--wait", timeout=300)
    deadline = time.monotonic() + 5
    while sleeping(tag):
        assert time.monotonic() < deadline, "the build's daemon outlived it"
        time.sleep(0.05)


def test_an_unjailed_runtime_says_model_code_runs_as_you(cli: Cli, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CDSW_TUI_NO_HOME_MOUNT", "1")  # the controller cannot jail
    root = write_project(tmp_path / "u", {"add.py": ADD})
    cli("project", "create", "u", "--path", str(root))
    deployed = cli("model", "create", "u/add", "--file", "add.py", "--function", "add",
                   "--wait", timeout=300)  # fmt: skip
    assert f"warning: model code runs as you (uid {os.geteuid()})" in deployed.err
    assert call(cli, "u/add", {"a": 1, "b": 2}) == 3


def host_address() -> str:
    """An address of this host other than loopback (where a host listener on 0.0.0.0
    is also found)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: the route's source address
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def test_a_replica_reaches_no_host_listener_unless_its_project_allows_egress(
    cli: Cli, wb, tmp_path: Path
):
    """A listener of this host on 0.0.0.0, dialled at 127.0.0.1 and at the host's address
    from a jailed replica (before: reached, as the jail shared the host's network). Now:
    a network namespace of its own with loopback alone, as a Docker replica has no
    network; the gateway is still there at modelservice.$CDSW_DOMAIN (through its
    socket); with `project egress p on` a new replica reaches the listener."""
    import socket
    import threading

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(16)
    port = listener.getsockname()[1]

    def accept() -> None:
        while True:
            try:
                listener.accept()[0].close()
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        root = write_project(tmp_path / "p", {"m.py": REACH, "add.py": ADD})
        cli("project", "create", "p", "--path", str(root))
        deploy(cli, "p/add", "add.py", "add")
        deploy(cli, "p/reach", "m.py", "reach")
        key = cli("model", "show", "p/add", "--show-key", "--json").json()["access_key"]
        other = host_address()
        asked = {"port": port, "other": other, "key": key}
        seen = call(cli, "p/reach", asked)
        assert isinstance(seen, dict)
        assert seen["127.0.0.1"].startswith("not reached"), seen
        assert seen[other].startswith("not reached"), seen
        assert seen["gateway"] == 3
        cli("project", "egress", "p", "on")
        cli("restart", "p/reach", "--wait", timeout=300)
        seen = call(cli, "p/reach", asked)
        assert seen == {"127.0.0.1": "reached", other: "reached", "gateway": 3}, seen
    finally:
        listener.close()
