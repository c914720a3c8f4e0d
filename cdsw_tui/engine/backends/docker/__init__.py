"""The Docker runtime: builds are images from an engine image, replicas are containers."""

from cdsw_tui.engine.backends import Backend

BACKEND = Backend(
    name="docker",
    label="docker (containers)",
    package=__name__,
    enforces=frozenset({"cpu", "memory", "gpu"}),
    engine_image=True,
    r="engine",
)
