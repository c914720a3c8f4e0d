"""Projects shaped as real CDSW and CML projects are, deployed and called unmodified.
The Docker shapes need an engine (CI has one; locally they skip with the reason)."""

from __future__ import annotations

import os

import pytest

from tests.helpers import docker_problem, remove_containers


@pytest.fixture
def docker_engine(home):
    problem = docker_problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Docker compat tests: {problem}")
        pytest.skip(problem)
    yield
    remove_containers(home)
