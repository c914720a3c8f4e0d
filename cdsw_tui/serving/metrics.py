"""Prometheus figures of the gateway: requests, errors, latency, busy waits.

Requests and latency are counted from the gateway's call records (serving/calllog.py)
when the controller files them and before every scrape, so a call pays no lock."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from cdsw_tui.serving.calllog import Record

# the codes a label may take (SPEC's and the gateway's own): a replica's answer carries
# its code, and model code can make one up on every call; each new label would be a new
# series, kept for ever. Any other code counts as model.error (the request log keeps it).
CODES = frozenset(
    (
        "ok",
        "request.invalid",
        "request.too_large",
        "auth.invalid_key",
        "auth.api_key_required",
        "model.busy",
        "model.not_deployed",
        "model.error",
        "model.invalid_response",
        "model.timeout",
        "replica.failed",
        "gateway.overloaded",
        "gateway.error",
    )
)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cdsw_requests",
            "Model calls answered by the gateway",
            ["model", "deployment", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cdsw_request_seconds",
            "Time from request to answer at the gateway",
            ["model", "deployment"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.busy_waits = Counter(
            "cdsw_busy_waits",
            "Calls that waited for a free replica",
            ["model", "deployment"],
            registry=self.registry,
        )
        self.replicas = Gauge(
            "cdsw_replicas_ready",
            "Replicas in service",
            ["model", "deployment"],
            registry=self.registry,
        )

        self._children: dict[tuple[str, str, str], tuple] = {}

    def catch_up(self, calls: Iterable[Record]) -> None:
        """Count calls the gateway answered since the last time (label lookups cost more
        than the increments: the children are kept)."""
        for call in calls:
            key = (call.model, call.deployment, call.code if call.code in CODES else "model.error")
            children = self._children.get(key)
            if children is None:
                children = (
                    self.requests.labels(*key),
                    self.latency.labels(call.model, call.deployment),
                )
                self._children[key] = children
            children[0].inc()
            children[1].observe(call.seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
