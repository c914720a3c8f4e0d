"""Docker tests need a reachable engine and the engine image. Locally they skip with the
reason; in CI (CI=true) a missing engine fails them, because CI installs one."""

from __future__ import annotations

import os

import pytest

from tests.helpers import docker_problem, remove_containers


@pytest.fixture(scope="session", autouse=True)
def docker_engine() -> None:
    problem = docker_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Docker tests: {problem}")
    pytest.skip(problem)


@pytest.fixture(autouse=True)
def _remove_containers(home):
    yield
    remove_containers(home)
