"""The gateway's connection caps, and the file limit they stay under.

Every connection holds a file, and so does each replica socket, log and store handle of
the controller. The caps keep callers below the limit with a reserve for the rest, so
callers at the cap get 503 while replicas, logs and the store keep working."""

from __future__ import annotations

import logging
import resource
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("cdsw_tui.gateway")

C = TypeVar("C", bound="Conn")
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


class Conn(Protocol):
    peer: str

    def close(self) -> None: ...


class Connections(Generic[C]):
    """The open connections, counted in total and per peer address; those idle between
    requests in the order they went idle, so the one idle longest can make room."""

    def __init__(self, total: int, per_peer: int) -> None:
        self.total, self.per_peer = total, per_peer
        self.open: set[C] = set()
        self.peers: dict[str, int] = {}
        self.idle: dict[C, None] = {}
        self.leaving = 0  # turned away, given a moment to read why
        self.most_leaving = max(16, total // 8)  # beyond: closed at once
        self.turned_away = 0

    def admit(self, conn: C) -> str:
        """Count ``conn`` in, or say why it cannot be ("": admitted)."""
        peer = conn.peer
        count = self.peers.get(peer, 0)
        if count >= self.per_peer:
            return f"too many connections from {peer} (MAX_CONNECTIONS_PER_PEER is {self.per_peer})"
        if len(self.open) >= self.total:
            if not self.idle:
                return f"too many open connections (MAX_CONNECTIONS is {self.total})"
            oldest = next(iter(self.idle))
            self.forget(oldest)  # counted out now: its close comes later
            oldest.close()
        self.peers[peer] = count + 1
        self.open.add(conn)
        return ""

    def forget(self, conn: C) -> None:
        if conn in self.open:
            self.open.discard(conn)
            self.idle.pop(conn, None)
            left = self.peers.get(conn.peer, 1) - 1
            if left:
                self.peers[conn.peer] = left
            else:
                self.peers.pop(conn.peer, None)

    def turning_away(self, why: str) -> None:
        self.turned_away += 1
        if self.turned_away & (self.turned_away - 1) == 0:  # 1, 2, 4, ...: no flood
            log.warning("turned a connection away (%d so far): %s", self.turned_away, why)
