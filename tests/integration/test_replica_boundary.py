"""The replica boundary on the local runtime, tried as an attacker and as an impatient
user would: every defect the replica-boundary issue lists has its test here (Docker's
in tests/docker)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from cdsw_tui.services import deployments, models, projects, readmodels
from cdsw_tui.services.lock import state
from tests.conftest import Cli, replica_pid, write_project
from tests.helpers import call, create_model, host_pid, replica_socket

CODE = """\
import os
import subprocess
import time


def add(args):
    return args["a"] + args["b"]


def slow(args):
    time.sleep(args.get("s", 0))
    return os.environ["CDSW_REPLICA_ID"]


def spawn(args):
    # a child that ignores SIGTERM, and a daemon that left our session (setsid, double fork)
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; while true; do sleep 1; done"])
    subprocess.run(["bash", "-c", "setsid bash -c 'sleep 600' </dev/null >/dev/null 2>&1 &"])
    time.sleep(0.3)
    return stubborn.pid
"""


@pytest.fixture
def project(wb, tmp_path: Path) -> Path:
    root = write_project(tmp_path / "proj", {"m.py": CODE})
    projects.create(wb, "p", path=root)
    return root


def replicas(wb, ref: str) -> list:
    return deployments.replicas_of(wb, models.active_deployment(wb, models.resolve(wb, ref)))


def listening_inodes() -> set[str]:
    """Inodes of every TCP socket in LISTEN state on this machine."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                found.add(fields[9])
    return found


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def test_a_replica_answers_nobody_but_the_gateway(cli: Cli, wb, project, home: Path):
    create_model(cli, "add", "add")
    [replica] = replicas(wb, "p/add")
    pid = replica_pid(replica)
    # no TCP listener at all: the replica is reached on a Unix socket ...
    assert not socket_inodes(pid) & listening_inodes()
    sock = replica_socket(home, replica.name)
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    # ... in a folder only the controller's user (and a jailed replica's uid) may enter,
    # inside the controller's own
    assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "run" / "local").st_mode) == 0o700
    if os.geteuid() == 0:
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os, socket, sys; os.setgid(65534); os.setuid(65534); "
                "fd = os.open(sys.argv[1], os.O_PATH); s = socket.socket(socket.AF_UNIX); "
                "s.connect(f'/proc/self/fd/{fd}')",
                str(sock),
            ],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "PermissionError" in probe.stderr
    # and the gateway still gets its answer
    assert call(wb, "p/add", {"a": 3, "b": 5}).json()["response"] == 8


def test_a_squatter_on_every_new_replica_does_not_stall_a_deploy(cli: Cli, wb, project, home: Path):
    """Whoever may reach a replica's endpoint connects first to each new one and stalls
    there; the controller's probe still gets through, the deploy still completes."""
    held: list[socket.socket] = []
    seen: set[Path] = set()
    stop = threading.Event()

    def squat() -> None:
        while not stop.is_set():
            try:
                found = [*(home / "run").rglob("*.sock"), *(home / "run").rglob("*.port")]
            except OSError:  # a folder went while it was listed
                continue
            for path in found:
                if path in seen:
                    continue
                try:
                    if path.suffix == ".sock":  # by its fd: a pytest path is too long
                        fd = os.open(path, os.O_PATH)
                        s = socket.socket(socket.AF_UNIX)
                        try:
                            s.connect(f"/proc/self/fd/{fd}")
                        finally:
                            os.close(fd)
                    else:
                        s = socket.create_connection(("127.0.0.1", int(path.read_text())))
                    s.sendall(b"POST /call HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
                except (OSError, ValueError):
                    continue
                seen.add(path)
                held.append(s)
            time.sleep(0.002)

    thread = threading.Thread(target=squat)
    thread.start()
    try:
        start = time.monotonic()
        create_model(cli, "add", "add", "--replicas", "2")
        assert time.monotonic() - start < 20
        assert call(wb, "p/add", {"a": 1, "b": 2}).json()["response"] == 3
        assert held  # it did hold every replica it could reach
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()


def test_stop_leaves_no_process_behind(cli: Cli, wb, project):
    create_model(cli, "spawn", "spawn")
    [replica] = replicas(wb, "p/spawn")
    stubborn = call(wb, "p/spawn", {}).json()["response"]
    marker = f"CDSW_TUI_REPLICA={wb.home / 'run' / 'local'}/{replica.name}".encode()

    def members() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "environ").read_bytes().split(b"\0"):
                        if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                            found.append(int(entry.name))
                except OSError:
                    pass
        return found

    # the model sees its own PID namespace's numbers when jailed
    stubborn = host_pid(stubborn, members()) or stubborn
    assert stubborn in members() and len(members()) >= 4  # runner, stubborn child, daemon...
    cli("stop", "p/spawn", "--wait")
    deadline = time.monotonic() + 5
    while members():
        assert time.monotonic() < deadline, f"survivors: {members()}"
        time.sleep(0.05)


def test_a_build_script_daemon_does_not_outlive_its_build(cli: Cli, wb, project: Path):
    (project / "cdsw-build.sh").write_text(
        "setsid bash -c 'sleep 600' </dev/null >/dev/null 2>&1 &\necho started a daemon\n"
    )
    cli("model", "create", "p/add", "--file", "m.py", "--function", "add", "--no-deploy")
    cli("build", "p/add", "--wait")
    time.sleep(0.2)
    survivors = [
        entry.name
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _has(entry, f"CDSW_TUI_BUILD={wb.home}:".encode())
    ]
    assert survivors == []


def _has(entry: Path, prefix: bytes) -> bool:
    try:
        return any(v.startswith(prefix) for v in (entry / "environ").read_bytes().split(b"\0"))
    except OSError:
        return False


def test_a_call_waits_while_the_only_replica_is_replaced(cli: Cli, wb, project, home: Path):
    (home / "config.toml").write_text("request_timeout = 1\nbusy_timeout = 20\n")
    create_model(cli, "slow", "slow")
    assert call(wb, "p/slow", {"s": 5}).status_code == 504
    # the replica is being replaced: callers wait for the new one, as in CDSW
    r = call(wb, "p/slow", {"s": 0})
    assert r.status_code == 200, r.text


def test_a_restarted_controller_makes_callers_wait_not_fail(cli: Cli, wb, project, home: Path):
    """The controller died, and so did the replica meanwhile: calls made while the new
    controller replaces it wait for it, as during any replacement, instead of a 503."""
    import signal

    (home / "config.toml").write_text("busy_timeout = 20\n")
    create_model(cli, "add", "add")
    [replica] = replicas(wb, "p/add")
    os.kill(state(home).pid, signal.SIGKILL)
    while state(home).running:
        time.sleep(0.02)
    os.killpg(replica_pid(replica), signal.SIGKILL)
    statuses: list[int] = []
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            try:
                statuses.append(call(wb, "p/add", {"a": 1, "b": 1}, timeout=30).status_code)
            except httpx.TransportError:
                time.sleep(0.005)  # nobody listens yet

    thread = threading.Thread(target=caller)
    thread.start()
    try:
        from cdsw_tui.services import background

        background.ensure(wb)
        deadline = time.monotonic() + 20
        while statuses.count(200) < 3:
            assert time.monotonic() < deadline, statuses[-5:]
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert set(statuses) == {200}, sorted(set(statuses))  # no 503 while it was replaced


def test_stop_does_not_wait_for_a_rollout(cli: Cli, wb, project: Path):
    (project / "loads_forever.py").write_text(
        "import time\ntime.sleep(600)\n\ndef f(a):\n    return 1\n"
    )
    cli("model", "create", "p/lazy", "--file", "loads_forever.py", "--function", "f", "--no-deploy")
    cli("build", "p/lazy", "--wait")
    cli("deploy", "p/lazy", "--replicas", "2")
    model = models.resolve(wb, "p/lazy")
    deadline = time.monotonic() + 20
    while (
        len(
            [
                r
                for r in deployments.replicas_of(wb, deployments.list_deployments(wb, model)[0])
                if r.handle
            ]
        )
        < 2
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    start = time.monotonic()
    cli("stop", "p/lazy", "--wait", timeout=60)
    assert time.monotonic() - start < 10
    d = deployments.list_deployments(wb, model)[0]
    assert d.status == "stopped"
    assert all(r.status == "stopped" for r in deployments.replicas_of(wb, d, current=False))


def test_the_controller_runs_the_installed_package_whatever_the_callers_folder(
    wb, project: Path, tmp_path: Path
):
    shadow = tmp_path / "checkout"
    (shadow / "cdsw_tui").mkdir(parents=True)
    (shadow / "cdsw_tui" / "__init__.py").write_text("raise SystemExit('shadowed')\n")
    (shadow / "cdsw_tui" / "__main__.py").write_text("raise SystemExit('shadowed')\n")
    env = dict(os.environ, CDSW_TUI_HOME=str(wb.home), CDSW_TUI_POLL_INTERVAL="0.05")
    script = Path(sys.executable).parent / "cdsw-tui"
    entry = [str(script)] if script.exists() else [sys.executable, "-P", "-m", "cdsw_tui"]
    result = subprocess.run(
        [*entry, "model", "create", "p/add", "--file", "m.py", "--function", "add", "--wait"],
        cwd=shadow,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for log in ("controller.log", "controller.out"):
        assert "shadowed" not in (wb.home / "logs" / log).read_text()


def test_monitoring_keeps_the_counts_of_replaced_replicas(cli: Cli, wb, project):
    create_model(cli, "add", "add")
    for i in range(5):
        assert call(wb, "p/add", {"a": i, "b": 1}).status_code == 200
    time.sleep(1.2)  # the controller saves counts every second
    cli("restart", "p/add", "--wait")
    detail = readmodels.model_detail(wb, "p/add")
    assert sum(r.processed for r in detail.replaced) == 5
    assert all(r.status == "stopped" for r in detail.replaced)
    assert detail.replicas and not {r.name for r in detail.replicas} & {
        r.name for r in detail.replaced
    }


def test_nothing_in_the_home_is_world_writable(cli: Cli, wb, project, home: Path):
    create_model(cli, "add", "add")
    call(wb, "p/add", {"a": 1, "b": 2})
    time.sleep(0.3)
    for path in [home, *home.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        assert not mode & 0o002, f"{path} is world-writable ({mode:o})"
    logs = next(home.glob("logs/replicas/m*/d*"))
    assert stat.S_IMODE(os.stat(logs).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in logs.iterdir())


def test_a_port_file_or_tcp_port_is_no_longer_written(cli: Cli, wb, project, home: Path):
    create_model(cli, "add", "add")
    assert not list(home.rglob("*.port"))
    assert json.loads(cli("status", "--json").out)["controller"]["running"]
