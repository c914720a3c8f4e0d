"""The swarm runtime: builds are the Docker builder's images pushed to a registry, and
replicas are Docker Swarm services spread over the swarm's nodes."""

from cdsw_tui.engine.backends import Backend

BACKEND = Backend(
    name="swarm",
    label="swarm (services on a Docker Swarm)",
    package=__name__,
    enforces=frozenset({"cpu", "memory", "gpu"}),
    engine_image=True,
    r="engine",
    spans_hosts=True,
)
