"""The gateway's connection caps, and the file limit they stay under.

Every connection holds a file, and so does each replica socket, log and store handle of
the controller. The caps keep callers below the limit with a reserve for the rest, so
callers at the cap get 503 while replicas, logs and the store keep working."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("cdsw_tui.controller")

MOST_FILES = 1 << 16  # the soft limit is raised this far at most (the hard one may be 2^20)
MOST_CONNECTIONS = 60_000
LEAST_CONNECTIONS = 64


def file_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_file_limit() -> int:
    """Raise the soft file limit to the hard one (within MOST_FILES); the new soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = MOST_FILES if hard == resource.RLIM_INFINITY else min(hard, MOST_FILES)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the file limit from %d to %d: %s", soft, want, exc)
        return soft
    return want


def connection_caps(total: int, per_peer: int, files: int | None = None) -> tuple[int, int]:
    """(connections in all, from one address): the settings, or where they are 0, what the
    file limit leaves after a reserve of a quarter of it (at least 256 files)."""
    if total <= 0:
        files = file_limit() if files is None else files
        total = files - max(256, files // 4)
        total = max(LEAST_CONNECTIONS, min(total, MOST_CONNECTIONS))
    if per_peer <= 0:
        per_peer = max(1, total // 2)
    return total, min(per_peer, total)
