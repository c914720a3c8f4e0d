"""A full disk during a build (issue 24, item 3): the build ends failed with one line
naming the disk and what is free on it, nothing stays building, ``--wait`` comes back;
and a build is refused before it starts when the disk is below MIN_FREE_MB. The home is
a small tmpfs of its own, filled by the build's own step as a big download would."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import Served

CODE = 'def add(args):\n    return args["a"] + args["b"]\n'
# the step writes until the disk is full, then gives the space back and fails, as pip
# does when a download fills the disk
FILL = """\
python3 - <<'PY' || { rm -f big; exit 1; }
with open("big", "wb") as fh:
    while True:
        fh.write(b"x" * (1 << 20))
        fh.flush()
PY
"""


@pytest.fixture
def small_home(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=160m,mode=0700", "tmpfs", str(home)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    s = Served(tmp_path, {"m.py": CODE, "cdsw-build.sh": FILL}, config="min_free_mb = 5\n")
    try:
        yield s
    finally:
        s.close()
        subprocess.run(["umount", "-l", str(home)], capture_output=True)


def test_a_build_that_fills_the_disk_fails_in_one_line(small_home: Served):
    s = small_home
    s.cli("project", "create", "srv", "--path", str(s.project))
    began = time.monotonic()
    out = s.cli(
        "model", "create", "srv/add", "--file", "m.py", "--function", "add", "--wait",
        check=False,
    )  # fmt: skip
    assert time.monotonic() - began < 120
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert "No space left on device on the disk holding" in lines[0], lines[0]
    assert f"{s.home}" in lines[0] and "MB free" in lines[0]
    builds = json.loads(s.cli("builds", "srv/add", "--json").stdout)
    assert [b["status"] for b in builds] == ["failed"]
    assert len(builds[0]["reason"]) < 400


def test_a_build_is_refused_below_min_free_mb(small_home: Served):
    s = small_home
    s.cli("project", "create", "srv", "--path", str(s.project))
    s.cli("model", "create", "srv/add", "--file", "m.py", "--function", "add", "--no-deploy")
    filler = s.home / "filler"  # the disk full but for 3 MB
    spare = shutil.disk_usage(s.home).free // (1 << 20) - 3
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=1M", f"count={spare}"], capture_output=True
    )
    before = json.loads(s.cli("builds", "srv/add", "--json").stdout)
    out = s.cli("build", "srv/add", check=False)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert re.search(r"not building: only [345] MB free on the disk holding", out.stderr)
    assert "(MIN_FREE_MB is 5)" in out.stderr
    assert json.loads(s.cli("builds", "srv/add", "--json").stdout) == before
    # full to the last byte: the store cannot even be opened, and the line says why
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=64k", "oflag=append", "conv=notrunc"],
        capture_output=True,
    )
    out = s.cli("build", "srv/add", check=False)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert f"the disk holding {s.home} (0 MB free)" in out.stderr, out.stderr
    filler.unlink()


def test_wait_ends_when_no_controller_is_left_to_end_the_build(tmp_path: Path):
    """``--wait`` on a build whose controller is killed (-9), and whose keeper is gone
    too: one line within seconds, not a wait for ever."""
    import signal
    import sys

    s = Served(tmp_path, {"m.py": CODE, "cdsw-build.sh": "sleep 60\n"})
    try:
        s.cli("project", "create", "srv", "--path", str(s.project))
        waiting = subprocess.Popen(
            [sys.executable, "-m", "cdsw_tui", "model", "create", "srv/add", "--file", "m.py",
             "--function", "add", "--wait"],
            env=s.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (s.home / "logs" / "builds").exists() or not any(
            (s.home / "logs" / "builds").rglob("1.log")
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pid = json.loads(s.cli("status", "--json").stdout)["controller"]["pid"]
        keeper = int((s.home / "run" / "keeper.pid").read_text())
        os.kill(keeper, signal.SIGKILL)  # else it would start the controller again
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = waiting.communicate(timeout=30)
        assert time.monotonic() - killed < 10
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert waiting.returncode == 1 and len(errors) == 1, err
        assert "no controller runs to finish it" in errors[0]
    finally:
        s.close()
