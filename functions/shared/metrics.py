"""Prometheus metrics shared by every function; areas add their business counters here too."""

from __future__ import annotations

import flask
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# Buckets sized for functions answering in milliseconds, with a tail for cold paths.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "shop_http_requests_total",
    "HTTP requests served, by route (the function's name; in the gateway and the registry the route's"
    " path template), method and status code.",
    ["route", "method", "status"],
)
REQUEST_DURATION = Histogram(
    "shop_http_request_duration_seconds",
    "Time to answer an HTTP request, by route (as for shop_http_requests_total), method and status code.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_CONSUMED = Counter(
    "shop_events_consumed_total",
    "CloudEvents received by a consumer, by type and outcome: processed, duplicate (a redelivery that changed"
    " nothing), rejected (refused for good: dead-lettered) or failed (to be retried).",
    ["type", "outcome"],
)
EVENTS_PUBLISHED = Counter(
    "shop_events_published_total",
    "CloudEvents published to Kafka by the outbox relay, by type.",
    ["type"],
)
EVENTS_DEAD_LETTERED = Counter(
    "shop_events_dead_lettered_total",
    "CloudEvents kept by the dead-letter sink after their delivery retries ran out, by type.",
    ["type"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "shop_outbox_oldest_unsent_age_seconds",
    "Age of the oldest outbox row not yet published, seen at the last relay run.",
    ["store"],
)
COLD_STARTS = Counter(
    "shop_function_cold_starts_total",
    "Processes of this function that served their first request.",
)
COLD_START_DURATION = Gauge(
    "shop_function_cold_start_seconds",
    "Seconds from process start to the end of its first request.",
)


# --- business ---------------------------------------------------------------------------------

ORDERS_PLACED = Counter("shop_orders_placed_total", "Orders committed by order-place.")
ORDERS_CANCELLED = Counter("shop_orders_cancelled_total", "Orders cancelled by order-cancel.")
ORDER_VALUE = Histogram(
    "shop_order_value",
    "Totals of placed orders, in their currency's units.",
    ["currency"],
    buckets=(10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
UNITS_RESERVED = Counter("shop_inventory_units_reserved_total", "Units held by new reservations.")
LOW_STOCK_EVENTS = Counter(
    "shop_inventory_low_stock_events_total", "com.shop.inventory.low events queued (a SKU crossed its threshold)."
)
EMAILS_SENT = Counter(
    "shop_notifications_emails_sent_total", "Emails accepted by the SMTP server, by event type.", ["type"]
)
UPSTREAM_CIRCUIT_STATE = Gauge(
    "shop_upstream_circuit_state",
    "Circuit breaker of a function's calls to another service: 0 closed, 1 half-open, 2 open.",
    ["upstream"],
)


def exposition() -> tuple[bytes, str]:
    """The text format body and its content type for GET /metrics."""
    return generate_latest(), CONTENT_TYPE_LATEST


def note_duplicate_delivery() -> None:
    """Marks the CloudEvent being handled as a redelivery; the request's metrics count it as a duplicate."""
    if flask.has_request_context():
        flask.g.shop_event_outcome = "duplicate"


def note_route(template: str) -> None:
    """Names the route the request matched (a path template) for the request's metrics, where one
    function serves several; otherwise they are labelled with the function's name."""
    if flask.has_request_context():
        flask.g.shop_route = template
