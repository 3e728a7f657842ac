"""Prometheus metrics of the process (served at /metrics when the HTTP server is on)."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily


class LoopHistogram:
    """A histogram observed only from the event loop, thousands of times a second.

    ``observe`` is a bisect and two additions: prometheus_client's Histogram takes a lock per
    bucket and per sum on every call, which showed in the poll loop's profile. It is exported
    through prometheus_client's collector interface, in the same format.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Iterable[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(sorted(float(b) for b in buckets))
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        if registry is not None:
            registry.register(self)

    def observe(self, value: float) -> None:
        """Count one value (in the first bucket whose bound is at least the value)."""
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histogram in the shape prometheus_client exports."""
        family = HistogramMetricFamily(self._name, self._documentation)
        buckets = []
        cumulative = 0
        for bound, count in zip((*self._bounds, math.inf), self._counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        family.add_metric([], buckets, self._sum)
        yield family


POLLS = Counter("tunewatch_polls_total", "Status polls of the API by outcome", ["outcome"])
API_LATENCY = LoopHistogram(
    "tunewatch_api_latency_seconds",
    "Time of one status poll",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
POLL_RESULTS_WRITTEN = Counter(
    "tunewatch_poll_results_written_total",
    "Poll results with something new (a step, a state, an error) recorded in the database",
)
DELIVERIES = Counter("tunewatch_deliveries_total", "Discord deliveries by outcome", ["outcome"])
DELIVERY_DELAY = Histogram(
    "tunewatch_delivery_delay_seconds",
    "Time from a step being seen to its message being sent",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900),
)
ACTIVE_TRAININGS = Gauge("tunewatch_active_trainings", "Trainings being polled")
SUBSCRIPTIONS = Gauge(
    "tunewatch_subscriptions", "Subscriptions by kind and status", ["kind", "status"]
)
NEXT_POLL = Gauge(
    "tunewatch_training_next_poll_timestamp_seconds",
    "When each followed training is polled next (Unix time), and why then",
    ["training_id", "key_ref", "reason"],
)
LAST_TICK_AGE = Gauge("tunewatch_tracker_last_tick_age_seconds", "Age of the last tracker tick")
