"""The README's two commands in order: ``pip install .`` starts a controller, then
``pip install -e`` removes the package it runs from. Replicas run the runner from a copy
in the home, and the controller notices the reinstall and restarts into the new code,
adopting its replicas, so the next deploy works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

import cdsw_tui
from cdsw_tui.services.lock import state
from tests.conftest import ADD, write_project

SOURCE = Path(cdsw_tui.__file__).resolve().parents[1]


def _copy_source(dest: Path) -> Path:
    """What a wheel is built from (not the checkout itself: a build writes beside it)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (SOURCE / name).exists():
            shutil.copy(SOURCE / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(SOURCE / "cdsw_tui", dest / "cdsw_tui", ignore=ignore)
    shutil.copytree(SOURCE / "assets", dest / "assets", ignore=ignore)
    return dest


def _pip(venv: Path, *args: str) -> None:
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
         "--no-build-isolation", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_reinstall_under_a_running_controller_restarts_it_and_deploys_still_work(
    home: Path, tmp_path: Path
):
    source = _copy_source(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
        check=True, timeout=120,
    )  # fmt: skip
    python = str(venv / "bin" / "python")
    _pip(venv, str(source))  # pip install . : a copy in the venv's site-packages
    installed = Path(
        subprocess.run(
            [python, "-P", "-c", "import cdsw_tui; print(cdsw_tui.__file__)"],
            cwd=tmp_path, capture_output=True, text=True, check=True,
        ).stdout.strip()
    ).parent  # fmt: skip
    assert str(installed).startswith(str(venv)), installed
    env = dict(os.environ, CDSW_TUI_HOME=str(home), CDSW_TUI_POLL_INTERVAL="0.05")

    def cli(*args: str) -> str:
        proc = subprocess.run(
            [python, "-P", "-m", "cdsw_tui", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
        return proc.stdout

    project = write_project(tmp_path / "plain", {"add_numbers.py": ADD})
    cli("project", "create", "p", "--path", str(project))
    cli("model", "create", "p/add", "--file", "add_numbers.py", "--function", "add", "--wait")
    first = state(home).pid
    url = f"http://127.0.0.1:{env['CDSW_TUI_GATEWAY_PORT']}/model"
    access = json.loads(cli("model", "show", "p/add", "--show-key", "--json"))["access_key"]

    def call() -> httpx.Response:
        return httpx.post(url, json={"accessKey": access, "request": {"a": 1, "b": 2}}, timeout=10)

    assert call().json()["response"] == 3
    # the replica runs the runner from its copy in the home, not from the package
    replica = next(
        p for p in Path("/proc").iterdir()
        if p.name.isdigit() and b"runner" in _cmdline(p) and str(home).encode() in _cmdline(p)
    )  # fmt: skip
    assert f"{home}/lib/runner-".encode() in _cmdline(replica), _cmdline(replica)

    _pip(venv, "-e", str(source))  # pip install -e . : the package in site-packages goes
    assert not (installed / "serving" / "runner").exists()
    log = home / "logs" / "controller.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = state(home)
        if now.running and now.pid not in (None, first) and "adopted replica" in log.read_text():
            break
        time.sleep(0.2)
    text = log.read_text()
    assert "was reinstalled under this controller" in text, text[-2000:]
    assert state(home).pid != first
    assert call().json()["response"] == 3  # the replica went on serving, adopted
    assert replica.exists()
    cli("scale", "p/add", "2", "--wait")  # a new replica, by the new controller
    cli("build", "p/add", "--wait")
    cli("deploy", "p/add", "--wait")  # a new build's deployment
    assert call().json()["response"] == 3
    cli("controller", "stop")


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
