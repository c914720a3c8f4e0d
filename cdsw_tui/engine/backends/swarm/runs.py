"""Runs of a swarm project: on this node's Docker engine, as a Docker project's are (a
run is one process with the project folder at /home/cdsw, which only this machine has)."""

from cdsw_tui.engine.backends.docker.runs import make_runner

__all__ = ["make_runner"]
