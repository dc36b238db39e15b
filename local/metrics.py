"""The local runtime's own Prometheus metrics (served at /_local/metrics), apart from any function's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

# Eventing: the Broker ingress, Triggers and sources.
RECEIVED = Counter(
    "shop_eventing_events_received_total", "Events the Broker ingress stored, by broker.", ["broker"], registry=REGISTRY
)
DELIVERIES = Counter(
    "shop_eventing_deliveries_total",
    "Events settled by a Trigger or source, by destination and outcome (delivered, dead_lettered, dropped).",
    ["destination", "outcome"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "shop_eventing_delivery_retries_total",
    "Delivery attempts after the first, by destination.",
    ["destination"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "shop_eventing_consumer_lag_messages",
    "Records not yet consumed, by consumer group and topic.",
    ["group", "topic"],
    registry=REGISTRY,
)

# Serving: processes started for requests (scale from zero) or min-scale.
COLD_STARTS = Counter(
    "shop_serving_cold_starts_total",
    "Processes started for a request or min-scale, by service.",
    ["service"],
    registry=REGISTRY,
)
COLD_START_SECONDS = Histogram(
    "shop_serving_cold_start_seconds",
    "From process start to ready, by service.",
    ["service"],
    buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
    registry=REGISTRY,
)
