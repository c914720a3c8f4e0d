"""Swarm tests need an engine that is a swarm manager, the engine image and a registry.
Locally they skip with the reason; in CI (CI=true) a missing one fails them, because CI
makes a one-node swarm. The registry is the one ``REGISTRY`` names (CI's), else one
started here with ``cdsw-tui registry start`` for the whole session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_controller
from tests.helpers import ENGINE


def _problem() -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=10)
        swarm = client.info().get("Swarm", {})
    except Exception as exc:
        return f"no Docker engine reachable ({type(exc).__name__})"
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        return "the Docker engine is not a swarm manager (docker swarm init --advertise-addr 127.0.0.1)"
    try:
        client.images.get(ENGINE)
    except Exception:
        return f"engine image {ENGINE} missing (cdsw-tui engine build)"
    return None


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    problem = _problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the swarm tests: {problem}")
        pytest.skip(problem)
    if os.environ.get("CDSW_TUI_REGISTRY"):
        yield os.environ["CDSW_TUI_REGISTRY"]
        return
    home = tmp_path_factory.mktemp("registry-home")
    port = free_port()
    env = {**os.environ, "CDSW_TUI_HOME": str(home)}
    started = subprocess.run(
        [sys.executable, "-m", "cdsw_tui", "registry", "start", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        pytest.skip(f"no registry: {started.stderr.strip()}")
    yield f"127.0.0.1:{port}"
    subprocess.run([sys.executable, "-m", "cdsw_tui", "registry", "stop"], env=env, check=True)


@pytest.fixture(autouse=True)
def _swarm_home(registry: str, home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CDSW_TUI_REGISTRY", registry)
    yield
    import docker

    stop_controller(home)  # first: a running controller would replace what goes next
    api = docker.from_env().api
    for service in api.services(filters={"label": f"cdsw.home={home}"}):
        api.remove_service(service["ID"])
    for secret in api.secrets(filters={"label": f"cdsw.home={home}"}):
        try:
            api.remove_secret(secret["ID"])
        except Exception:
            pass  # a task that still holds it goes with its service
