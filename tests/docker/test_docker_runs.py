"""Runs on the Docker runtime: a container of the project's engine, as REPLICA_UID, the
project folder itself read-write at /home/cdsw, the project's environment kept between
runs, and nothing left behind (no container, no mounted view) after it ends or is
cancelled."""

from __future__ import annotations

import time
from pathlib import Path

import docker

from tests.conftest import write_project

PROBE = """\
import json, os, sys
import cmlapi  # the gateway answers inside the container (through its socket)
projects = [p.name for p in cmlapi.default_client().list_projects().projects]
env = os.environ["VIRTUAL_ENV"]
kept = os.path.join(env, "kept.txt")
before = open(kept).read() if os.path.exists(kept) else ""
open(kept, "w").write("from run " + sys.argv[1])
print(json.dumps({
    "uid": os.getuid(), "cwd": os.getcwd(), "before": before,
    "sees_home": os.path.exists(sys.argv[2]), "python": sys.executable,
    "projects": projects,
}))
open("out-" + sys.argv[1] + ".txt", "w").write("written")
"""

SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(300)\n"


def containers(home: Path) -> list:
    client = docker.from_env()
    return client.containers.list(all=True, filters={"label": [f"cdsw.home={home}", "cdsw.run"]})


def views(home: Path) -> list[str]:
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if f"{home}/run/runs/" in line.split()[4]
    ]


def test_a_docker_run_writes_the_project_as_replica_uid_and_keeps_its_environment(
    cli, home, tmp_path
):
    import json

    root = write_project(tmp_path / "proj", {"probe.py": PROBE})
    cli("project", "create", "d", "--path", str(root), "--runtime", "docker")
    first = json.loads(
        cli("run", "d", "probe.py", "1", str(home), timeout=300).out.splitlines()[-1]
    )
    assert first["uid"] >= 65600 and first["cwd"] == "/home/cdsw"
    assert first["sees_home"] is False
    assert first["projects"] == ["d"]  # its own project's key
    assert first["python"].startswith("/opt/cdsw-env/")
    assert (root / "out-1.txt").read_text() == "written"
    assert (root / "out-1.txt").stat().st_uid == root.stat().st_uid  # the owner's on disk
    second = json.loads(
        cli("run", "d", "probe.py", "2", str(home), timeout=300).out.splitlines()[-1]
    )
    assert second["before"] == "from run 1"  # the project's environment outlived run 1
    assert not containers(home) and not views(home)


def test_a_cancelled_docker_run_leaves_no_container(cli, home, tmp_path):
    root = write_project(tmp_path / "proj", {"sleeper.py": SLEEPER})
    cli("project", "create", "d", "--path", str(root), "--runtime", "docker")
    cli("job", "create", "d/s", "--script", "sleeper.py")
    cli("job", "run", "d/s")
    deadline = time.monotonic() + 180
    while "started" not in cli("job", "log", "d/s").out:
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)
    assert len(containers(home)) == 1
    cli("job", "cancel", "d/s")
    deadline = time.monotonic() + 30
    while cli("job", "runs", "d/s", "--json").json()[0]["status"] == "running":
        assert time.monotonic() < deadline, "the cancel did not end the run"
        time.sleep(0.2)
    assert cli("job", "runs", "d/s", "--json").json()[0]["status"] == "cancelled"
    deadline = time.monotonic() + 10
    while containers(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not containers(home) and not views(home)


def test_an_r_run_on_docker_uses_library_cdsw_and_reaches_the_gateway(cli, home, tmp_path):
    script = (
        "library(cdsw)\n"
        "track.metric('auc', 0.9)\n"
        "answer <- call.model('not-a-key', list(a = 1))\n"
        "cat('gateway said', answer$error$code, '\\n')\n"
    )
    root = write_project(tmp_path / "rproj", {"score.R": script})
    cli("project", "create", "r", "--path", str(root), "--runtime", "docker",
        "--engine", "cdsw-tui/engine-r:latest")  # fmt: skip
    out = cli("run", "r", "score.R", timeout=300).out
    assert "cdsw: metric auc = 0.9" in out and "gateway said auth.invalid_key" in out
    assert not containers(home) and not views(home)
