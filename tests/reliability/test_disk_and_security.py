"""A full log disk, the gateway's bind address, and keys kept out of every log."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cdsw_tui.services import models
from tests.conftest import Cli, write_project

CHATTY = """\
def predict(args):
    print("x" * 20000)
    return "ok"
"""


@pytest.fixture
def small_log_disk(home: Path):
    logs = home / "logs"
    logs.mkdir(parents=True)
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(logs)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield logs
    subprocess.run(["umount", "-l", str(logs)], capture_output=True)


def test_full_log_disk_does_not_stop_serving(
    cli: Cli, wb, home: Path, tmp_path: Path, small_log_disk: Path
):
    root = write_project(tmp_path / "p", {"m.py": CHATTY})
    cli("project", "create", "p", "--path", str(root))
    cli("model", "create", "p/chatty", "--file", "m.py", "--function", "predict", "--wait")
    filler = small_log_disk / "filler"
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True
    )  # until ENOSPC
    key = models.resolve(wb, "p/chatty").access_key
    for _ in range(30):
        r = httpx.post(
            wb.settings.gateway_url + "/model", json={"accessKey": key, "request": {}}, timeout=10
        )
        assert r.status_code == 200 and r.json()["response"] == "ok"
    filler.unlink()
    for _ in range(3):
        httpx.post(
            wb.settings.gateway_url + "/model", json={"accessKey": key, "request": {}}, timeout=10
        )
    time.sleep(0.3)
    log = cli("logs", "p/chatty").out
    assert "log lines dropped: No space left on device" in log


def test_gateway_warns_when_bound_beyond_127_0_0_1(cli: Cli, home: Path, tmp_path: Path):
    root = write_project(tmp_path / "p", {"m.py": "def f(args):\n    return 1\n"})
    cli("project", "create", "p", "--path", str(root))
    cli("model", "create", "p/f", "--file", "m.py", "--function", "f", "--no-deploy")
    cli("build", "p/f", "--wait", env={"CDSW_TUI_GATEWAY_HOST": "127.0.0.2"})
    text = (home / "logs" / "controller.log").read_text()
    # the risk named: keys in clear text, and what to do about it
    assert "the gateway listens on 127.0.0.2 without TLS" in text
    assert "clear text (set TLS_CERT and TLS_KEY" in text


def test_no_key_in_any_log_after_load_and_faults(cluster):
    from tests.reliability.test_load_and_faults import run_load  # noqa: F401  (ran before in this module set)

    key = cluster.model.access_key
    checked = 0
    for path in cluster.home.rglob("*"):  # every file but the store, rotated logs included
        if path.is_file() and not path.name.startswith("cdsw.db"):
            assert key.encode() not in path.read_bytes(), path
            checked += 1
    assert checked >= 4
    assert json.loads(cluster.cli("model", "show", "r/m", "--json")).get("access_key") is None
