"""Projects shaped as real CDSW and CML projects are, deployed and called unmodified.
The Docker shapes need an engine (CI has one; locally they skip with the reason)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import stop_controller
from tests.helpers import docker_problem, remove_containers


@pytest.fixture
def docker_engine(home):
    problem = docker_problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Docker compat tests: {problem}")
        pytest.skip(problem)
    yield
    # the controller first: one still running would start a removed replica again, and
    # that container would outlive the test (a fixture asked for inside a test ends
    # before the home's own teardown stops the controller)
    stop_controller(home)
    remove_containers(home)
