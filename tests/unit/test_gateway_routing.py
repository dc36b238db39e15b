"""The gateway's route table, breaker and rate limiter, without a network."""

from __future__ import annotations

import time

import pytest

from functions.shared.problems import Problem
from functions.shared.resilience import BreakerPolicy, WindowBreaker
from gateway.rate_limit import RateLimiter
from gateway.routing import RatePolicy, RouteTable


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable.load()


@pytest.mark.parametrize(
    ("method", "path", "service", "params"),
    [
        ("GET", "/api/products", "product-list", {}),
        ("GET", "/api/products/iphone_15", "product-get", {"sku": "iphone_15"}),
        ("PATCH", "/api/products/iphone_15", "product-update", {"sku": "iphone_15"}),
        ("GET", "/api/product", "product-list", {}),
        ("POST", "/api/orders/ORD-1/cancel", "order-cancel", {"orderNumber": "ORD-1"}),
        ("HEAD", "/api/orders", "order-list", {}),
        ("POST", "/api/deadletters/7/replay", "dead-letter", {"id": "7"}),
    ],
)
def test_requests_find_their_route(
    table: RouteTable, method: str, path: str, service: str, params: dict[str, str]
) -> None:
    route, found = table.match(method, path)
    assert route.service == service and found == params


def test_unknown_paths_and_methods_are_problems(table: RouteTable) -> None:
    with pytest.raises(Problem) as missing:
        table.match("GET", "/api/nothing")
    assert missing.value.status == 404
    with pytest.raises(Problem) as wrong:
        table.match("DELETE", "/api/products")
    assert wrong.value.status == 405 and wrong.value.headers["Allow"] == "GET, POST"


def test_posts_are_never_retried_and_upstream_paths_are_rewritten(table: RouteTable) -> None:
    place, _ = table.match("POST", "/api/orders")
    listing, _ = table.match("GET", "/api/orders")
    assert place.retries_for("POST") == 0 and listing.retries_for("GET") == 3
    replay, params = table.match("POST", "/api/deadletters/42/replay")
    assert replay.target_path("/api/deadletters/42/replay", params) == "/deadletters/42/replay"
    assert replay.role == "admin" and place.auth == "authenticated"


def test_the_breaker_opens_at_half_failures_after_five_calls_and_half_opens() -> None:
    breaker = WindowBreaker(
        "unit-upstream", BreakerPolicy(window=10, failure_rate=50, minimum_calls=5, open_seconds=0.2, half_open_calls=3)
    )
    for outcome in (True, True, False, False):
        assert breaker.allow()
        breaker.record(outcome)
    assert breaker.state == "closed"  # 2 of 4 failed, but fewer than 5 calls seen
    assert breaker.allow()
    breaker.record(False)  # 3 of 5: 60 %
    assert breaker.state == "open" and not breaker.allow() and breaker.retry_after() >= 1
    time.sleep(0.25)
    assert breaker.state == "half_open"
    assert [breaker.allow() for _ in range(4)] == [True, True, True, False]  # three trial calls
    for _ in range(3):
        breaker.record(True)
    assert breaker.state == "closed"


def test_a_failed_trial_call_opens_the_breaker_again() -> None:
    breaker = WindowBreaker("unit-upstream-2", BreakerPolicy(minimum_calls=1, failure_rate=100, open_seconds=0.1))
    breaker.allow()
    breaker.record(False)
    time.sleep(0.15)
    assert breaker.allow()
    breaker.record(False)
    assert breaker.state == "open"


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter()
    policy = RatePolicy(per_second=10, burst=3)
    waits = [limiter.take("client", "route", policy) for _ in range(4)]
    assert waits[:3] == [0, 0, 0] and 0 < waits[3] <= 0.1
    assert limiter.take("someone-else", "route", policy) == 0
    time.sleep(0.11)
    assert limiter.take("client", "route", policy) == 0


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "fields"),
    [
        ("GET", "/api/inventory", {"skuCode": ["pixel_8"], "quantity": ["5"]}, None, []),
        ("GET", "/api/inventory", {"skuCode": ["pixel_8"], "quantity": ["0"]}, None, ["quantity"]),
        ("GET", "/api/products", {"size": ["500"]}, None, ["size"]),
        ("GET", "/api/products", {"sort": ["price"], "includeInactive": ["true"]}, None, []),
        ("GET", "/api/products", {"color": ["red"]}, None, ["color"]),
        ("POST", "/api/orders", {}, {"items": [{"skuCode": "pixel_8", "quantity": 1}]}, []),
        ("POST", "/api/orders", {}, {"items": []}, ["/items"]),
        ("POST", "/api/products", {}, {"name": "x", "category": "c", "price": 1}, ["/sku"]),
    ],
)
def test_edge_validation_follows_the_openapi_document(
    table: RouteTable, method: str, path: str, query: dict[str, list[str]], body: object, fields: list[str]
) -> None:
    from gateway import openapi

    route, params = table.match(method, path)
    if not fields:
        openapi.check(route, method, params, query, body)
        return
    with pytest.raises(Problem) as caught:
        openapi.check(route, method, params, query, body)
    assert [e.field for e in caught.value.errors] == fields
