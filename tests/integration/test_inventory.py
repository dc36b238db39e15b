"""Inventory functions through functions_framework.create_app, against the real PostgreSQL server."""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import functions_framework
import psycopg
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from functions.shared import events, identity
from functions.shared.logs import JsonFormatter
from tests.conftest import EVENTS_DIR, People, problem_of

SOURCE = "functions/inventory/main.py"


@pytest.fixture
def inventory(
    stack: Any, function_env: Callable[..., None], people: People, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], FlaskClient]:
    """Test clients of inventory's functions; each request carries a forwarded identity, as
    order-place's calls do (reserve and release refuse callers without one). These tests stock SKUs
    that are in no catalog: restock's catalog check (tests/e2e/test_storefront_api.py) says yes to all."""
    from functions.inventory import bootstrap

    monkeypatch.setattr(bootstrap, "catalog", lambda: lambda sku: True)
    caller = people.customer("order-place-caller")[identity.HEADER]
    function_env(
        DATABASE_URL=stack.database_urls["inventory"],
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",
        IDENTITY_SECRET=stack.identity_secret,
    )
    apps: dict[str, Any] = {}

    def client(target: str) -> FlaskClient:
        if target not in apps:
            apps[target] = functions_framework.create_app(target, SOURCE)
        client = apps[target].test_client()
        client.environ_base["HTTP_X_SHOP_IDENTITY"] = caller
        return client

    return client


@pytest.fixture
def sql(stack: Any) -> Callable[..., list[tuple[Any, ...]]]:
    def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(stack.database_urls["inventory"], autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    return run


def consumed(outcome: str, event_type: str = events.PRODUCT_CREATED) -> float:
    """shop_events_consumed_total as this process's functions exposed it so far."""
    labels = {"type": event_type, "outcome": outcome}
    return REGISTRY.get_sample_value("shop_events_consumed_total", labels) or 0.0


def new_sku() -> str:
    return f"inv_{uuid.uuid4().hex[:12]}"


def order_number() -> str:
    return f"ORD-TEST-{uuid.uuid4().hex[:10].upper()}"


def stock(inventory: Callable[[str], FlaskClient], people: People, sku: str, quantity: int, **extra: Any) -> None:
    response = inventory("inventory_restock").put(
        f"/api/inventory/{sku}", json={"quantity": quantity, **extra}, headers=people.admin()
    )
    assert response.status_code in (200, 201), response.data


def reserve(inventory: Callable[[str], FlaskClient], number: str, *lines: tuple[str, int]) -> Any:
    body = {"orderNumber": number, "items": [{"skuCode": s, "quantity": q} for s, q in lines]}
    return inventory("inventory_reserve").post("/reservations", json=body)


def test_restock_sets_or_adds_and_check_answers_in_both_shapes(
    inventory: Callable[[str], FlaskClient], people: People
) -> None:
    a, b = new_sku(), new_sku()
    created = inventory("inventory_restock").put(f"/api/inventory/{a}", json={"quantity": 5}, headers=people.admin())
    assert created.status_code == 201 and created.get_json() == {"skuCode": a, "available": 5, "lowStockThreshold": 5}
    added = inventory("inventory_restock").put(
        f"/api/inventory/{a}", json={"quantity": 3, "mode": "add"}, headers=people.admin()
    )
    assert added.status_code == 200 and added.get_json()["available"] == 8
    stock(inventory, people, b, 1)
    check = inventory("inventory_check")
    assert check.get(f"/api/inventory?skuCode={a}&quantity=8").get_json() is True
    assert check.get(f"/api/inventory?skuCode={a}&quantity=9").get_json() is False
    both = check.get(f"/api/inventory?skuCode={a}&skuCode={b}&quantity=2").get_json()
    assert both == [
        {"skuCode": a, "quantity": 2, "available": 8, "isInStock": True},
        {"skuCode": b, "quantity": 2, "available": 1, "isInStock": False},
    ]
    per_line = check.get(f"/api/inventory?skuCode={a}&skuCode={b}&quantity=8&quantity=1").get_json()
    assert [x["isInStock"] for x in per_line] == [True, True]
    missing = check.get("/api/inventory?skuCode=never_stocked")
    assert missing.status_code == 404 and problem_of(missing)["errors"][0]["field"] == "skuCode"
    unknown_add = inventory("inventory_restock").put(
        f"/api/inventory/{new_sku()}", json={"quantity": 1, "mode": "add"}, headers=people.admin()
    )
    assert unknown_add.status_code == 404


def test_two_hundred_parallel_reservations_against_fifty_units(
    inventory: Callable[[str], FlaskClient], people: People, sql: Callable[..., list[tuple[Any, ...]]]
) -> None:
    sku = new_sku()
    stock(inventory, people, sku, 50, lowStockThreshold=0)
    numbers = [order_number() for _ in range(200)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(lambda n: reserve(inventory, n, (sku, 1)).status_code, numbers))
    assert Counter(statuses) == {201: 50, 409: 150}
    assert sql("SELECT available FROM stock WHERE sku = %s", sku) == [(0,)]
    assert sql("SELECT count(*) FROM reservation_lines WHERE sku = %s", sku) == [(50,)]


def test_a_reservation_holds_every_line_or_none(
    inventory: Callable[[str], FlaskClient], people: People, sql: Callable[..., list[tuple[Any, ...]]]
) -> None:
    plenty, scarce = new_sku(), new_sku()
    stock(inventory, people, plenty, 10)
    stock(inventory, people, scarce, 1)
    number = order_number()
    refused = reserve(inventory, number, (plenty, 3), (scarce, 2))
    assert refused.status_code == 409
    assert problem_of(refused)["shortages"] == [{"skuCode": scarce, "requested": 2, "available": 1}]
    assert sql("SELECT sku, available FROM stock WHERE sku IN (%s, %s) ORDER BY available", plenty, scarce) == [
        (scarce, 1),
        (plenty, 10),
    ]
    assert sql("SELECT count(*) FROM reservations WHERE order_number = %s", number) == [(0,)]
    unknown = reserve(inventory, order_number(), (plenty, 1), ("no_such_sku", 1))
    assert unknown.status_code == 422 and problem_of(unknown)["errors"][0]["field"] == "/items/1/skuCode"
    assert sql("SELECT available FROM stock WHERE sku = %s", plenty) == [(10,)]


def test_reserve_and_release_are_idempotent_per_order_number(
    inventory: Callable[[str], FlaskClient], people: People, sql: Callable[..., list[tuple[Any, ...]]]
) -> None:
    sku = new_sku()
    stock(inventory, people, sku, 10)
    number = order_number()
    first = reserve(inventory, number, (sku, 4))
    again = reserve(inventory, number, (sku, 4))
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.get_json() == again.get_json()
    other = reserve(inventory, number, (sku, 5))
    assert other.status_code == 409
    problem_of(other)
    assert sql("SELECT available FROM stock WHERE sku = %s", sku) == [(6,)]
    release = inventory("inventory_release")
    released = [release.post(f"/reservations/{number}/release") for _ in range(2)]
    assert [r.status_code for r in released] == [200, 200]
    assert released[0].get_json()["status"] == released[1].get_json()["status"] == "RELEASED"
    assert sql("SELECT available FROM stock WHERE sku = %s", sku) == [(10,)]
    # A release that overtook its reservation leaves a tombstone: the late reserve is refused.
    early = order_number()
    assert release.post(f"/reservations/{early}/release").status_code == 200
    anonymous = functions_framework.create_app("inventory_release", SOURCE).test_client()
    assert anonymous.post(f"/reservations/{early}/release").status_code == 401
    late = reserve(inventory, early, (sku, 1))
    assert late.status_code == 409 and "released" in problem_of(late)["detail"]
    assert sql("SELECT available FROM stock WHERE sku = %s", sku) == [(10,)]


def test_crossing_the_threshold_queues_one_low_stock_event_with_the_reservation(
    inventory: Callable[[str], FlaskClient], people: People, sql: Callable[..., list[tuple[Any, ...]]]
) -> None:
    sku = new_sku()
    stock(inventory, people, sku, 6, lowStockThreshold=5)
    first = order_number()
    lines = LogLines("shop.inventory")
    with lines:
        assert reserve(inventory, first, (sku, 2)).status_code == 201
        assert reserve(inventory, order_number(), (sku, 1)).status_code == 201
    rows = sql("SELECT event_type, partition_key, event FROM outbox WHERE partition_key = %s", sku)
    assert len(rows) == 1
    event_type, key, event = rows[0]
    assert (event_type, key) == ("com.shop.inventory.low", sku)
    assert event["data"] == {"sku": sku, "available": 4, "threshold": 5, "orderNumber": first}
    events.check_data(event_type, event["data"])
    # The JSON log lines carry the SKU and the order number, so an operator can follow both.
    low = [line for line in lines.json() if line["level"] == "WARNING"]
    assert [(line["sku"], line["order_number"]) for line in low] == [(sku, first)]
    reserved = [line["order_number"] for line in lines.json() if line["message"].startswith("reserved ")]
    assert reserved[0] == first and len(reserved) == 2


class LogLines(logging.Handler):
    """The JSON lines one logger writes while the block runs."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.logger = logging.getLogger(name)
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def __enter__(self) -> LogLines:
        self.level_before = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


def product_created(sku: str, event_id: str | None = None) -> CloudEvent:
    example = json.loads((EVENTS_DIR / "com.shop.product.created.json").read_text())
    return CloudEvent(
        {
            "type": events.PRODUCT_CREATED,
            "source": "/shop/catalog",
            "id": event_id or str(uuid.uuid4()),
            "subject": sku,
            "partitionkey": sku,
        },
        {**example["data"], "sku": sku},
    )


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_track_creates_a_stock_row_once_per_event(
    inventory: Callable[[str], FlaskClient], sql: Callable[..., list[tuple[Any, ...]]], mode: str
) -> None:
    sku = new_sku()
    event = product_created(sku)
    headers, body = (to_binary if mode == "binary" else to_structured)(event)
    track = inventory("inventory_track")
    before = consumed("processed"), consumed("duplicate")
    for _ in range(2):  # a redelivery
        response = track.post("/", headers=dict(headers), data=body)
        assert response.status_code == 200, response.data
    assert (consumed("processed"), consumed("duplicate")) == (before[0] + 1, before[1] + 1)
    assert sql("SELECT available FROM stock WHERE sku = %s", sku) == [(0,)]
    assert sql(
        "SELECT count(*) FROM processed_events WHERE consumer = 'inventory-track' AND event_id = %s", event["id"]
    ) == [(1,)]


@pytest.mark.parametrize(
    ("headers", "body", "field"),
    [
        ({"ce-specversion": "1.0", "ce-type": events.PRODUCT_CREATED, "ce-source": "/x"}, {"sku": "ab"}, None),
        ({"ce-specversion": "0.1", "ce-type": events.PRODUCT_CREATED, "ce-source": "/x", "ce-id": "1"}, {}, None),
        ({"ce-specversion": "1.0", "ce-type": events.ORDER_PLACED, "ce-source": "/x", "ce-id": "1"}, {}, "type"),
        (
            {"ce-specversion": "1.0", "ce-type": events.PRODUCT_CREATED, "ce-source": "/x", "ce-id": "2"},
            {"sku": "Not Valid"},
            "/data/sku",
        ),
    ],
)
def test_malformed_cloudevents_are_refused_and_write_nothing(
    inventory: Callable[[str], FlaskClient],
    sql: Callable[..., list[tuple[Any, ...]]],
    headers: dict[str, str],
    body: dict[str, Any],
    field: str | None,
) -> None:
    before = sql("SELECT count(*) FROM stock")
    rejected = consumed("rejected", headers["ce-type"])
    response = inventory("inventory_track").post(
        "/", headers={**headers, "Content-Type": "application/json"}, data=json.dumps(body)
    )
    assert response.status_code == 400
    assert consumed("rejected", headers["ce-type"]) == rejected + 1  # dead-lettered, not retried
    problem = problem_of(response)
    if field:
        assert field in [e["field"] for e in problem["errors"]]
    assert sql("SELECT count(*) FROM stock") == before


def test_cancelled_order_event_releases_and_placed_event_confirms(
    inventory: Callable[[str], FlaskClient], people: People, sql: Callable[..., list[tuple[Any, ...]]]
) -> None:
    sku = new_sku()
    stock(inventory, people, sku, 5)
    kept, cancelled = order_number(), order_number()
    assert reserve(inventory, kept, (sku, 1)).status_code == 201
    assert reserve(inventory, cancelled, (sku, 2)).status_code == 201
    placed = json.loads((EVENTS_DIR / "com.shop.order.placed.json").read_text())["data"]
    confirm = CloudEvent(
        {"type": events.ORDER_PLACED, "source": "/shop/orders", "id": str(uuid.uuid4())},
        {**placed, "orderNumber": kept},
    )
    headers, body = to_binary(confirm)
    assert inventory("inventory_confirm").post("/", headers=dict(headers), data=body).status_code == 200
    gone = json.loads((EVENTS_DIR / "com.shop.order.cancelled.json").read_text())["data"]
    cancel = CloudEvent(
        {"type": events.ORDER_CANCELLED, "source": "/shop/orders", "id": str(uuid.uuid4())},
        {**gone, "orderNumber": cancelled},
    )
    headers, body = to_structured(cancel)
    release = inventory("inventory_release")
    assert [release.post("/", headers=dict(headers), data=body).status_code for _ in range(2)] == [204, 204]
    assert sql(
        "SELECT order_number, status FROM reservations WHERE order_number IN (%s, %s) ORDER BY status", kept, cancelled
    ) == [(kept, "COMMITTED"), (cancelled, "RELEASED")]
    assert sql("SELECT available FROM stock WHERE sku = %s", sku) == [(4,)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [{"skuCode": "ab_cd", "quantity": 1}]}, "/orderNumber"),
        ({"orderNumber": "ORD-123456", "items": []}, "/items"),
        ({"orderNumber": "ORD-123456", "items": [{"skuCode": "ab_cd", "quantity": 0}]}, "/items/0/quantity"),
        ({"orderNumber": "ORD-123456", "items": [{"skuCode": "ab_cd", "quantity": -2}]}, "/items/0/quantity"),
        ({"orderNumber": "ORD-123456", "items": [{"skuCode": "ab_cd", "quantity": 10**9}]}, "/items/0/quantity"),
        ({"orderNumber": "ORD-123456", "items": [{"skuCode": "ab_cd", "quantity": 1.5}]}, "/items/0/quantity"),
        ({"orderNumber": "ORD-123456", "items": [{"skuCode": "ab_cd", "quantity": "1"}]}, "/items/0/quantity"),
        ({"orderNumber": "ORD-123456", "items": [{"skuCode": "ab_cd", "quantity": 1}] * 2}, "/items/1/skuCode"),
        ({"orderNumber": "no spaces!", "items": [{"skuCode": "ab_cd", "quantity": 1}]}, "/orderNumber"),
        ({"orderNumber": "ORD-123456", "items": [{"skuCode": {"$gt": ""}, "quantity": 1}]}, "/items/0/skuCode"),
    ],
)
def test_bad_reservations_name_the_field_and_hold_nothing(
    inventory: Callable[[str], FlaskClient], sql: Callable[..., list[tuple[Any, ...]]], body: Any, field: str
) -> None:
    before = sql("SELECT count(*) FROM reservations")
    response = inventory("inventory_reserve").post("/reservations", json=body)
    assert response.status_code == 400, response.data
    assert field in [e["field"] for e in problem_of(response)["errors"]]
    assert sql("SELECT count(*) FROM reservations") == before


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/inventory/ok_sku", {"quantity": -1}, 400),
        ("/api/inventory/ok_sku", {"quantity": 1, "mode": "multiply"}, 400),
        ("/api/inventory/ok_sku", {"quantity": 10**7}, 400),
        ("/api/inventory/ok_sku", {}, 400),
        ("/api/inventory/BAD SKU", {"quantity": 1}, 400),
        ("/elsewhere", {"quantity": 1}, 404),
    ],
)
def test_bad_restocks_are_refused(
    inventory: Callable[[str], FlaskClient], people: People, path: str, body: Any, status: int
) -> None:
    response = inventory("inventory_restock").put(path, json=body, headers=people.admin())
    assert response.status_code == status
    problem_of(response)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "skuCode=",
        "skuCode=a_b&quantity=0",
        "skuCode=a_b&quantity=x",
        "skuCode=a_b&skuCode=c_d&quantity=1&quantity=2&quantity=3",
        "skuCode=a_b&sku[$ne]=1",
    ],
)
def test_bad_checks_are_refused(inventory: Callable[[str], FlaskClient], query: str) -> None:
    response = inventory("inventory_check").get(f"/api/inventory?{query}")
    assert response.status_code == 400
    assert problem_of(response)["errors"]


@pytest.mark.parametrize("target", ["inventory_release", "inventory_track"])
def test_a_structured_cloudevent_nested_too_deep_is_a_400(inventory: Callable[[str], FlaskClient], target: str) -> None:
    """Deeper than the JSON parser's recursion: refused like any malformed event, never a 500."""
    body = b'{"specversion": "1.0", "id": "x", "source": "/t", "type": "t", "data": ' + b"[" * 200_000 + b"}"
    response = inventory(target).post("/", data=body, content_type="application/cloudevents+json")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.content_type == "application/problem+json"
