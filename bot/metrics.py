"""Prometheus metrics of the process (served at /metrics when the HTTP server is on)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POLLS = Counter("tunewatch_polls_total", "Status polls of the API by outcome", ["outcome"])
API_LATENCY = Histogram(
    "tunewatch_api_latency_seconds",
    "Time of one status poll",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
POLL_RESULTS_WRITTEN = Counter(
    "tunewatch_poll_results_written_total",
    "Poll results with something new (a step, a state, an error) recorded in the database",
)
POLL_RESULTS_REFUSED = Counter(
    "tunewatch_poll_results_refused_total",
    "Poll results the database refused for their values (the training is polled again); "
    "the rest of their batch is recorded",
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
