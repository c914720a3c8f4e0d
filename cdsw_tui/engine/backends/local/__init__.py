"""The local runtime: builds are virtual environments, replicas are processes of this machine."""

from cdsw_tui.engine.backends import Backend

BACKEND = Backend(
    name="local",
    label="local (virtual environment)",
    package=__name__,
    enforces=frozenset({"memory"}),  # a resource limit on the heap; cpu and gpu are advisory
    engine_image=False,
    r="host",
)
