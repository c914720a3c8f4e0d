"""Builds on the local runtime, run by a real controller process."""

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from cdsw_tui.engine.backends.local import sandbox
from cdsw_tui.services import builds, models, projects
from cdsw_tui.services.lock import state
from tests.conftest import ADD, Cli, write_project


@pytest.fixture
def model(wb, tmp_path: Path):
    root = write_project(tmp_path / "proj", {"add_numbers.py": ADD})
    projects.create(wb, "p", path=root)
    return models.create(
        wb, "p", models.ModelSpec(name="add", file="add_numbers.py", function="add")
    )


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper that may never come in a sandbox."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def script(wb, model, text: str) -> None:
    root = Path(projects.get(wb, "p").path)
    (root / "cdsw-build.sh").write_text(text)


def wait_status(wb, build, statuses, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        build = builds.refresh(wb, build)
        if build.status in statuses:
            return build
        time.sleep(0.05)
    raise AssertionError(f"build stayed {build.status}")


def test_failing_build_script_keeps_its_output_and_names_the_status(cli: Cli, wb, model):
    script(wb, model, "echo installing things\necho 'no such package' >&2\nexit 1\n")
    result = cli("build", "p/add", "--wait", check=False)
    assert result.code == 1
    assert (
        result.err.strip().splitlines()[-1]
        == "error: build 1 failed: cdsw-build.sh exited with status 1"
    )
    build = builds.get(wb, model, 1)
    assert build.status == "failed" and build.reason == "cdsw-build.sh exited with status 1"
    log = cli("build-log", "p/add", "1").out
    assert "installing things" in log and "no such package" in log
    # every line carries a timestamp
    assert all(line[:4].isdigit() and "Z " in line[:30] for line in log.splitlines())
    # fixing the script gives a fresh environment that builds
    script(wb, model, "echo fixed\n")
    cli("build", "p/add", "--wait")
    assert builds.get(wb, model, 2).status == "built"


def test_build_log_follow_streams_while_building(cli: Cli, wb, model):
    script(wb, model, "for i in 1 2 3; do echo step $i; sleep 0.3; done\n")
    result = cli("build", "p/add", "--follow")
    out = result.out
    assert out.index("step 1") < out.index("step 3") < out.index("build 1 built")


def test_code_only_rebuild_reuses_dependencies_and_requirements_change_does_not(
    cli: Cli, wb, model
):
    root = Path(projects.get(wb, "p").path)
    script(wb, model, "grep -c . requirements.txt > installed.txt\n")
    (root / "requirements.txt").write_text("# none\n")
    (root / "notes.txt").write_text("not read by cdsw-build.sh\n")
    cli("build", "p/add", "--wait")
    (root / "add_numbers.py").write_text(ADD + "\n# a comment\n")
    (root / "notes.txt").write_text("changed, still not read\n")
    cli("build", "p/add", "--wait")
    b1, b2 = builds.get(wb, model, 1), builds.get(wb, model, 2)
    assert not b1.dep_reused and b2.dep_reused and b1.dep_key == b2.dep_key
    assert b1.tree != b2.tree
    # what cdsw-build.sh wrote into the build is there in the reused build too
    assert (Path(b2.artifact) / "installed.txt").read_text() == "1\n"
    log = cli("build-log", "p/add", "2").out
    assert "reusing cdsw-build.sh from build 1 of p/add" in log
    assert "(cdsw-build.sh, requirements.txt) are unchanged" in log
    # a file it read changed: it runs again, and the log says which
    (root / "requirements.txt").write_text("# changed\n# twice\n")
    cli("build", "p/add", "--wait")
    b3 = builds.get(wb, model, 3)
    assert not b3.dep_reused and b3.dep_key != b1.dep_key
    assert (Path(b3.artifact) / "installed.txt").read_text() == "2\n"
    assert "requirements.txt changed since build 1 of p/add" in cli("build-log", "p/add", "3").out
    # a new file: the step could have looked for it, so it runs again
    (root / "extra.txt").write_text("x\n")
    cli("build", "p/add", "--wait")
    assert (
        "files were added, removed or renamed since build 3 of p/add: +extra.txt"
        in cli("build-log", "p/add", "4").out
    )
    # --no-cache: a clean environment even though nothing changed
    cli("build", "p/add", "--wait", "--no-cache")
    b5 = builds.get(wb, model, 5)
    assert not b5.dep_reused and b5.dep_key != builds.get(wb, model, 4).dep_key and b5.clean


def test_built_directory_is_read_only(cli: Cli, wb, model):
    root = Path(projects.get(wb, "p").path)
    (root / "writer.py").write_text(
        "def write(args):\n"
        "    try:\n"
        "        open('new.txt', 'w').close()\n"
        "    except OSError as exc:\n"
        "        return exc.strerror\n"
        "    return 'written'\n"
    )
    cli("model", "create", "p/w", "--file", "writer.py", "--function", "write", "--wait")
    artifact = Path(builds.get(wb, models.resolve(wb, "p/w"), 1).artifact)
    assert (artifact / ".cdsw-build.json").exists()
    answer = cli("call", "p/w", "{}").json()["response"]
    if sandbox.unavailable():  # unjailed: the folder's modes say so
        assert not os.stat(artifact).st_mode & 0o222
        assert not os.stat(artifact / "add_numbers.py").st_mode & 0o222
        assert answer == "Permission denied"
    else:  # jailed: the replica's /home/cdsw is a read-only mount
        assert answer == "Read-only file system"
    assert not (artifact / "new.txt").exists()


def test_cancel_a_running_build(cli: Cli, wb, model):
    script(wb, model, "echo started\nsleep 60\n")
    cli("build", "p/add")
    build = wait_status(wb, builds.get(wb, model, 1), {"building"})
    deadline = time.monotonic() + 20
    while "running cdsw-build.sh" not in builds.log_path(wb, build).read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "is being cancelled" in cli("cancel", "p/add", "1").out
    build = wait_status(wb, build, {"cancelled", "failed", "built"}, timeout=10)
    assert build.status == "cancelled"
    assert "already cancelled" in cli("cancel", "p/add", "1", check=False).err


def test_build_timeout(cli: Cli, wb, model):
    script(wb, model, "sleep 30\n")
    result = cli("build", "p/add", "--wait", check=False, env={"CDSW_TUI_BUILD_TIMEOUT": "1"})
    assert result.code == 1 and "timedout" in result.err
    assert builds.get(wb, model, 1).status == "timedout"


def test_kill_9_of_the_controller_during_a_build(cli: Cli, wb, model, home: Path):
    script(wb, model, "echo begin\nsleep 120\n")
    cli("build", "p/add")
    build = wait_status(wb, builds.get(wb, model, 1), {"building"})
    deadline = time.monotonic() + 20
    while (
        not builds.refresh(wb, build).pid or "begin" not in builds.log_path(wb, build).read_text()
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = builds.refresh(wb, build).pid
    old = state(home).pid
    os.kill(old, signal.SIGKILL)
    # its keeper starts a new controller, which reconciles before anything else
    build = wait_status(wb, build, {"failed"})
    assert state(home).pid != old
    assert (build.status, build.reason) == ("failed", "interrupted")
    con = sqlite3.connect(home / "cdsw.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    script(wb, model, "echo ok\n")
    cli("build", "p/add", "--wait")
    assert builds.get(wb, model, 2).status == "built"
    # the orphaned build script was killed by the reconciler
    assert not alive(child)
    assert "interrupted" in cli("build-log", "p/add", "1").out
    assert [m.name for m in models.list_models(wb)] == ["add"]


SYSTEM_PYTHON = "/usr/bin/python3"


def test_a_project_python_builds_and_serves_on_that_interpreter(cli: Cli, tmp_path: Path):
    """CDSW's engines pin a Python per project; on the local runtime ``--python`` does."""
    import subprocess
    import sys

    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"no {SYSTEM_PYTHON} here")
    theirs = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if theirs == sys.version.split()[0]:
        pytest.skip(f"{SYSTEM_PYTHON} is this Python: nothing would tell them apart")
    root = tmp_path / "pinned"
    root.mkdir()
    (root / "m.py").write_text("import sys\n\ndef v(args):\n    return sys.version.split()[0]\n")
    (root / "cdsw-build.sh").write_text(
        "python -c 'import sys; print(\"built with\", sys.version)'\n"
    )
    out = cli(
        "project", "create", "pinned", "--path", str(root), "--python", SYSTEM_PYTHON, "--json"
    )
    assert json.loads(out.out)["python"] == SYSTEM_PYTHON
    cli("model", "create", "pinned/v", "--file", "m.py", "--function", "v", "--wait")
    assert json.loads(cli("call", "pinned/v", "{}").out)["response"] == theirs
    log = cli("build-log", "pinned/v", "1").out
    assert f"Python {theirs}, {SYSTEM_PYTHON}" in log and f"built with {theirs}" in log


@pytest.mark.parametrize(
    "python, says",
    [("/nonexistent/python3", "no Python interpreter"), ("/bin/true", "not a Python")],
)
def test_a_bad_project_python_is_refused_in_one_line(
    cli: Cli, tmp_path: Path, python: str, says: str
):
    (tmp_path / "p").mkdir()
    out = cli(
        "project", "create", "p", "--path", str(tmp_path / "p"), "--python", python, check=False
    )
    assert out.code != 0 and says in out.err and "Traceback" not in out.err
    assert json.loads(cli("project", "list", "--json").out) == []  # nothing was made
