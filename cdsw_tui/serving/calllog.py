"""The gateway's record of recent calls per model: time, outcome, latency, replica, sizes.

Never a body. The records are also what the Prometheus figures are counted from, in
bulk (serving/metrics.py), rather than by two locked counters on every call. The gateway keeps the last ``size`` calls of each model in memory (for
``/health/<project>/<model>``'s latency percentiles) and hands every record to the
controller, which files them as JSON lines (``requests MODEL`` and the Monitoring tab
read those files). Records are plain tuples until they are filed, so a call pays an
append and no formatting.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from cdsw_tui.serving.router import Route

WINDOW = 60.0  # seconds of calls the percentiles cover


@dataclass(slots=True)
class Call:
    """One call while the gateway handles it."""

    route: Route
    size_in: int
    start: float
    deployment: str = ""
    replica: str = ""


class Record(NamedTuple):
    time: float
    model_id: int
    model: str
    deployment: str
    replica: str
    status: int
    code: str
    seconds: float
    size_in: int
    size_out: int

    def as_json(self) -> dict[str, object]:
        t = self.time
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
            + f".{int(t % 1 * 1000):03d}Z",
            "model": self.model,
            "deployment": int(self.deployment) if self.deployment else None,
            "replica": self.replica or None,
            "status": self.status,
            "code": self.code,
            "ms": round(self.seconds * 1000, 3),
            "bytes_in": self.size_in,
            "bytes_out": self.size_out,
        }

    def line(self) -> bytes:
        return json.dumps(self.as_json()).encode() + b"\n"


_new = tuple.__new__  # a Record without its Python-level __new__ (every call makes one)


def percentiles(latencies_ms: list[float]) -> dict[str, float | int | None]:
    """p50/p95/p99 (nearest rank) of the given latencies, and how many there were."""
    ordered = sorted(latencies_ms)
    n = len(ordered)

    def rank(q: float) -> float | None:
        return round(ordered[min(n - 1, max(0, int(q * n + 0.5) - 1))], 3) if n else None

    return {"calls": n, "p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99)}


class CallLog:
    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.recent: dict[int, deque[Record]] = {}
        self.unfiled: list[Record] = []
        self.unmetered: list[Record] = []  # for the Prometheus figures, counted in bulk

    def add(self, call: Call, status: int, code: str, seconds: float, size_out: int) -> None:
        route = call.route
        record = _new(
            Record,
            (
                time.time(),
                route.model_id,
                route.label,
                call.deployment,
                call.replica,
                status,
                code,
                seconds,
                call.size_in,
                size_out,
            ),
        )
        ring = self.recent.get(route.model_id)
        if ring is None:
            ring = self.recent[route.model_id] = deque(maxlen=self.size)
        ring.append(record)
        if len(self.unfiled) < 100_000:  # the controller files every half second
            self.unfiled.append(record)
        if len(self.unmetered) < 100_000:  # and counts them as often (and on every scrape)
            self.unmetered.append(record)

    def take(self) -> list[Record]:
        """The records not filed yet, for the controller to write."""
        taken, self.unfiled = self.unfiled, []
        return taken

    def take_unmetered(self) -> list[Record]:
        """The records not counted in the metrics yet."""
        taken, self.unmetered = self.unmetered, []
        return taken

    def percentiles(self, model_id: int, now: float | None = None) -> dict[str, float | int | None]:
        since = (now or time.time()) - WINDOW
        ring = self.recent.get(model_id, ())
        return percentiles([r.seconds * 1000 for r in ring if r.time >= since])
