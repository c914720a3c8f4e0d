"""One deployed model with four replicas, served by a real controller, for load and faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdsw_tui.config import load_settings
from cdsw_tui.services import deployments, models
from cdsw_tui.services.context import Workbench
from tests.conftest import free_port, stop_controller, stop_replicas, write_project

CODE = """\
import time


def predict(args):
    if args.get("boom"):
        raise ValueError("boom requested")
    time.sleep(args.get("s", 0))
    return {"sum": args.get("a", 0) + args.get("b", 0)}
"""


class Cluster:
    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.home.mkdir(parents=True)
        self.port = free_port()
        (self.home / "config.toml").write_text(
            f"gateway_port = {self.port}\nbusy_timeout = 10\nrequest_timeout = 5\npoll_interval = 0.05\n"
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_TUI_")}
        self.env["CDSW_TUI_HOME"] = str(self.home)
        self.url = f"http://127.0.0.1:{self.port}"
        self.project = write_project(root / "project", {"model.py": CODE})

    def cli(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "cdsw_tui", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=300,
        )
        if proc.returncode:
            raise AssertionError(proc.stderr)
        return proc.stdout

    def controller_pid(self) -> int:
        return json.loads(self.cli("status", "--json"))["controller"]["pid"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("reliability"))
    c.cli("project", "create", "r", "--path", str(c.project))
    c.cli(
        "model",
        "create",
        "r/m",
        "--file",
        "model.py",
        "--function",
        "predict",
        "--replicas",
        "4",
        "--wait",
    )
    c.wb = Workbench(load_settings(c.home))
    c.model = models.resolve(c.wb, "r/m")
    yield c
    c.wb.close()
    stop_controller(c.home)
    stop_replicas(c.home)


def running_replicas(c: Cluster) -> list:
    d = models.active_deployment(c.wb, c.model)
    return [r for r in deployments.replicas_of(c.wb, d) if r.status == "running"]


def wait_for_replicas(c: Cluster, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(running_replicas(c)) != n:
        assert time.monotonic() < deadline, running_replicas(c)
        time.sleep(0.1)
