"""The gateway in front of the local stack: tokens from the local issuer, the role matrix, resilience."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from jose import jwt
from prometheus_client.parser import text_string_to_metric_families

from gateway import openapi
from gateway.routing import RouteTable
from tests.conftest import eventually, problem_of


@pytest.fixture(scope="module")
def api(stack: Any) -> str:
    """The gateway: the ingress's default route, as a browser or client reaches the shop."""
    return str(stack.url)


def login(stack: Any, username: str) -> dict[str, str]:
    password = {"jane": "jane-password", "john": "john-password", "admin": "admin-password"}[username]
    response = requests.post(
        f"{stack.url}/realms/shop/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "storefront",
            "username": username,
            "password": password,
            "scope": "openid",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def signed(stack: Any, **changes: Any) -> str:
    """A token from the realm's own key, with claims changed (the issuer would never sign these)."""
    token = stack.issuer.token_for("jane")["access_token"]
    claims = {**jwt.get_unverified_claims(token), **changes}
    key = stack.issuer.keys.current
    return str(jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid}))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def attacks(stack: Any) -> Iterator[tuple[str, str]]:
    good = stack.issuer.token_for("jane")["access_token"]
    header, payload, signature = good.split(".")
    now = int(time.time())
    yield "alg none", ".".join([b64(b'{"alg":"none","typ":"JWT"}'), payload, ""])
    public_key = json.dumps(stack.issuer.keys.current.public_jwk).encode()  # what anyone can fetch
    forged_header = b64(json.dumps({"alg": "HS256", "kid": stack.issuer.keys.current.kid}).encode())
    mac = hmac.new(public_key, f"{forged_header}.{payload}".encode(), hashlib.sha256).digest()
    yield "HS256 with the public key", f"{forged_header}.{payload}.{b64(mac)}"
    yield "expired", signed(stack, exp=now - 120, iat=now - 600)
    yield "not yet valid", signed(stack, nbf=now + 600)
    yield "wrong issuer", signed(stack, iss="http://evil.example/realms/shop")
    yield "another realm", signed(stack, iss=f"{stack.url}/realms/other")
    yield "wrong audience", signed(stack, aud=["account"], azp="someone-else")
    admin_payload = b64(json.dumps({**jwt.get_unverified_claims(good), "realm_access": {"roles": ["admin"]}}).encode())
    yield "tampered payload", f"{header}.{admin_payload}.{signature}"
    yield "tampered signature", f"{header}.{payload}.{signature[:-6]}AAAAAA"
    yield (
        "unknown kid",
        ".".join([b64(json.dumps({"alg": "RS256", "kid": "no-such-key"}).encode()), payload, signature]),
    )
    yield "not a JWT", "definitely.not.a-token"


def test_every_token_attack_is_a_401_with_a_challenge(stack: Any, api: str) -> None:
    for name, token in attacks(stack):
        response = requests.get(f"{api}/api/orders", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 401, (name, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
        problem_of(response)
    assert requests.get(f"{api}/api/orders", headers=login(stack, "jane"), timeout=10).status_code == 200


def test_keys_rotate_without_refusing_good_tokens(stack: Any, api: str) -> None:
    before = login(stack, "jane")
    stack.issuer.rotate()
    after = login(stack, "jane")  # signed with a key id the gateway has not seen: it fetches the keys again
    # ... at most once per JWKS_REFRESH_SECONDS (10 s), which an earlier test's made-up kid may have used.
    eventually(lambda: requests.get(f"{api}/api/orders", headers=after, timeout=10).status_code == 200, timeout=15)
    assert requests.get(f"{api}/api/orders", headers=before, timeout=10).status_code == 200


ROUTES: list[tuple[str, str, Any, str, set[int]]] = [
    # (method, path, body, who may call it, what a caller who may gets: a 2xx or a documented 4xx).
    # No product no_such_sku exists (the test stack is not seeded); the bodies are incomplete.
    ("GET", "/api/products", None, "public", {200}),
    ("POST", "/api/products", {}, "admin", {400}),
    ("GET", "/api/products/no_such_sku", None, "public", {404}),
    ("PATCH", "/api/products/no_such_sku", {}, "admin", {400}),
    ("GET", "/api/product", None, "public", {200}),
    ("POST", "/api/product", {}, "admin", {400}),
    ("GET", "/api/inventory?skuCode=no_such_sku", None, "public", {404}),
    ("PUT", "/api/inventory/no_such_sku", {}, "admin", {400}),
    ("POST", "/api/orders", {}, "customer", {400}),
    ("GET", "/api/orders", None, "customer", {200}),
    ("GET", "/api/orders/ORD-NOPE-000", None, "customer", {404}),
    ("POST", "/api/orders/ORD-NOPE-000/cancel", None, "customer", {404}),
    ("POST", "/api/order", {}, "customer", {400}),
    ("GET", "/api/deadletters", None, "admin", {200}),
    ("POST", "/api/deadletters/999999/replay", None, "admin", {404}),
]


def documented(method: str, path: str) -> set[int]:
    """The statuses the public OpenAPI document gives the route's operation."""
    route, _ = RouteTable.load().match(method, path.split("?")[0])
    return {int(status) for status in openapi.document()["paths"][route.path][method.lower()]["responses"]}


@pytest.mark.parametrize(
    ("method", "path", "body", "needs", "answers"), ROUTES, ids=[f"{m} {p}" for m, p, *_ in ROUTES]
)
def test_the_role_matrix(
    stack: Any, api: str, method: str, path: str, body: Any, needs: str, answers: set[int]
) -> None:
    assert all(200 <= a < 300 or (400 <= a < 500 and a in documented(method, path)) for a in answers), answers
    callers = {"anonymous": {}, "customer": login(stack, "john"), "admin": login(stack, "admin")}
    for who, headers in callers.items():
        response = requests.request(method, api + path, json=body, headers=headers, timeout=30)
        allowed = needs == "public" or (needs == "customer" and who != "anonymous") or who == "admin"
        if allowed:
            assert response.status_code in answers, (who, response.status_code, response.text)
        elif who == "anonymous":
            assert response.status_code == 401, (who, response.text)
        else:
            assert response.status_code == 403, (who, response.text)
        if response.status_code >= 400:
            problem_of(response)


def metric(api: str, name: str, **labels: str) -> float:
    """A sample of the gateway's /metrics (0 when the series does not exist yet)."""
    for family in text_string_to_metric_families(requests.get(f"{api}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_the_circuit_opens_fails_fast_half_opens_and_closes(stack: Any, api: str) -> None:
    stack.suspend("product-get")
    try:
        statuses = [requests.get(f"{api}/api/products/iphone_15", timeout=30).status_code for _ in range(3)]
        assert statuses == [503, 503, 503]
        assert metric(api, "shop_gateway_circuit_state", upstream="product-get") == 2  # open
        attempts = metric(api, "shop_gateway_upstream_requests_total", upstream="product-get", outcome="error")
        fast = requests.get(f"{api}/api/products/iphone_15", timeout=30)
        assert fast.status_code == 503 and "circuit open" in problem_of(fast)["detail"]
        assert int(fast.headers["Retry-After"]) >= 1
        # Failing fast: the open circuit answered without trying the upstream.
        assert metric(api, "shop_gateway_upstream_requests_total", upstream="product-get", outcome="error") == attempts
    finally:
        stack.suspend("product-get", False)
    # Half-open once openSeconds (5) have passed.
    eventually(lambda: metric(api, "shop_gateway_circuit_state", upstream="product-get") == 1, timeout=15)
    for _ in range(3):  # halfOpenCalls trial calls, all answered (a 404 is an answer, not a failure)
        assert requests.get(f"{api}/api/products/iphone_15", timeout=30).status_code < 500
    assert metric(api, "shop_gateway_circuit_state", upstream="product-get") == 0  # closed


def test_the_rate_limit_trips_and_recovers(stack: Any, api: str) -> None:
    headers = login(stack, "jane")
    rejected_before = metric(api, "shop_gateway_rate_limited_total", route="/api/orders")
    # POST /api/orders allows bursts of 10 at 5 a second; empty bodies are refused after the limit check.
    statuses = [requests.post(f"{api}/api/orders", json={}, headers=headers, timeout=30).status_code for _ in range(15)]
    assert 429 in statuses and set(statuses) <= {400, 429}
    limited = requests.post(f"{api}/api/orders", json={}, headers=headers, timeout=30)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert metric(api, "shop_gateway_rate_limited_total", route="/api/orders") > rejected_before
    # The bucket refills (5 a second): the next request gets through to validation again.
    eventually(
        lambda: requests.post(f"{api}/api/orders", json={}, headers=headers, timeout=30).status_code == 400,
        timeout=10,
        interval=0.3,
    )


def test_a_post_is_never_retried_but_a_get_is(stack: Any, api: str) -> None:
    headers = login(stack, "admin")

    def errors(upstream: str) -> float:
        return metric(api, "shop_gateway_upstream_requests_total", upstream=upstream, outcome="error")

    stack.suspend("order-cancel")
    stack.suspend("order-get")
    try:
        before = errors("order-cancel")
        assert requests.post(f"{api}/api/orders/ORD-X-0001/cancel", headers=headers, timeout=30).status_code == 503
        assert errors("order-cancel") == before + 1
        before = errors("order-get")
        assert requests.get(f"{api}/api/orders/ORD-X-0001", headers=headers, timeout=30).status_code == 503
        # Retried (up to 3 times, unless the breaker opens on the way: earlier tests' calls are in its window).
        assert errors("order-get") - before >= 2
    finally:
        stack.suspend("order-cancel", False)
        stack.suspend("order-get", False)


@pytest.mark.slow
def test_an_upstream_timeout_is_a_504_problem(stack: Any, api: str) -> None:
    stack.set_env("inventory-check", SHOP_FAULTS="delay:5")
    try:
        before = metric(api, "shop_gateway_upstream_requests_total", upstream="inventory-check", outcome="timeout")
        response = requests.get(f"{api}/api/inventory?skuCode=iphone_15", timeout=60)
        assert response.status_code == 504
        assert "did not answer within 3s" in problem_of(response)["detail"]
        # Each attempt timed out (a GET is retried: one try plus at most three retries).
        timeouts = metric(api, "shop_gateway_upstream_requests_total", upstream="inventory-check", outcome="timeout")
        assert 1 <= timeouts - before <= 4
    finally:
        stack.set_env("inventory-check", SHOP_FAULTS="")


def test_edge_headers_cors_and_the_openapi_document(stack: Any, api: str) -> None:
    response = requests.get(f"{api}/api/products?size=1", headers={"X-Request-Id": "trace-me-1"}, timeout=30)
    assert response.headers["X-Request-Id"] == "trace-me-1"
    assert response.headers["X-Content-Type-Options"] == "nosniff" and response.headers["X-Frame-Options"] == "DENY"
    generated = requests.get(f"{api}/api/products?size=1", headers={"X-Request-Id": "bad id!"}, timeout=30)
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-Id"])
    document = requests.get(f"{api}/openapi.json", timeout=30).json()
    assert document["openapi"] == "3.1.0" and "/api/orders" in document["paths"]
    assert "/reservations" not in document["paths"]  # internal operations stay internal
    preflight = requests.options(
        f"{api}/api/orders",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert preflight.status_code == 403
    too_big = requests.post(
        f"{api}/api/orders",
        data=b"{" + b" " * (1024 * 1024 + 1) + b"}",
        headers={**login(stack, "jane"), "Content-Type": "application/json"},
        timeout=30,
    )
    assert too_big.status_code == 413
    problem_of(too_big)
    schema = requests.get(f"{api}/eventing/schemas/com.shop.order.placed.json", timeout=30)
    assert schema.status_code == 200 and schema.json()["title"] == "com.shop.order.placed"


def test_a_chunked_body_is_checked_and_bounded_at_the_edge(stack: Any, api: str) -> None:
    """No Content-Length (Transfer-Encoding: chunked): validated and size-limited all the same,
    before any call to the function."""
    headers = {**login(stack, "admin"), "Content-Type": "application/json"}

    def calls() -> float:
        return sum(
            metric(api, "shop_gateway_upstream_requests_total", upstream="product-create", outcome=outcome)
            for outcome in ("ok", "error")
        )

    def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
        yield from (data[i : i + size] for i in range(0, len(data), size))

    before = calls()
    invalid = json.dumps({"sku": "Not A Sku", "name": "x", "category": "phones", "price": 1}).encode()
    refused = requests.post(f"{api}/api/products", data=chunks(invalid), headers=headers, timeout=30)
    assert refused.status_code == 400, refused.text
    assert "/sku" in [error["field"] for error in problem_of(refused)["errors"]]
    huge = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    too_big = requests.post(f"{api}/api/products", data=chunks(huge), headers=headers, timeout=30)
    assert too_big.status_code == 413, too_big.text[:300]
    problem_of(too_big)
    assert calls() == before  # product-create never saw either


def test_identity_cannot_be_smuggled_past_the_gateway(stack: Any, api: str, people: Any) -> None:
    forged = people.admin()  # a header only the gateway should be able to make, sent by a client
    response = requests.get(f"{api}/api/deadletters", headers=forged, timeout=30)
    assert response.status_code == 401
    # On a public route the gateway forwards the request: product-list would honour an admin's
    # includeInactive, so a 403 shows the forged header was dropped on the way.
    listing = requests.get(f"{api}/api/products?includeInactive=true", headers=forged, timeout=30)
    assert listing.status_code == 403, listing.text
    assert "admin" in problem_of(listing)["detail"]


def test_an_admin_stocks_a_product_and_a_customer_buys_it_through_the_gateway(stack: Any, api: str) -> None:
    jane, admin = login(stack, "jane"), login(stack, "admin")
    marker = uuid.uuid4().hex[:8]
    sku = f"gw_{marker}"
    created = requests.post(
        f"{api}/api/products",
        headers=admin,
        timeout=30,
        json={"sku": sku, "name": f"Gadget {marker}", "category": "tests", "price": 12.5},
    )
    assert created.status_code == 201, created.text
    stocked = requests.put(f"{api}/api/inventory/{sku}", json={"quantity": 5}, headers=admin, timeout=30)
    assert stocked.status_code in (200, 201), stocked.text
    eventually(lambda: requests.get(f"{api}/api/inventory?skuCode={sku}&quantity=5", timeout=30).json() is True)

    found = eventually(lambda: requests.get(f"{api}/api/products?q={marker}", timeout=30).json()["items"])
    assert [p["sku"] for p in found] == [sku]
    placed = requests.post(
        f"{api}/api/orders",
        json={"items": [{"skuCode": sku, "quantity": 2}]},
        headers={**jane, "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["total"] == 25.0 and order["customer"]["email"] == "jane@example.com"
    history = requests.get(f"{api}/api/orders", headers=jane, timeout=30).json()
    assert order["orderNumber"] in [o["orderNumber"] for o in history["items"]]
    cancelled = requests.post(
        f"{api}/api/orders/{order['orderNumber']}/cancel", json={"reason": "test"}, headers=jane, timeout=30
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    eventually(lambda: requests.get(f"{api}/api/inventory?skuCode={sku}&quantity=5", timeout=30).json() is True)
