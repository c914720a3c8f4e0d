"""Docker tests need a reachable engine and the engine image. Locally they skip with the
reason; in CI (CI=true) a missing engine fails them, because CI installs one."""

from __future__ import annotations

import os

import pytest

ENGINE = os.environ.get("CDSW_TUI_ENGINE_IMAGE", "cdsw-tui/engine:latest")


def _problem() -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:
        return f"no Docker engine reachable ({type(exc).__name__})"
    try:
        client.images.get(ENGINE)
    except Exception:
        return f"engine image {ENGINE} missing (cdsw-tui engine build)"
    return None


@pytest.fixture(scope="session", autouse=True)
def docker_engine() -> None:
    problem = _problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Docker tests: {problem}")
    pytest.skip(problem)


@pytest.fixture(autouse=True)
def _remove_containers(home):
    yield
    import docker

    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"label": f"cdsw.home={home}"}):
        container.remove(force=True)
