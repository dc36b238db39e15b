"""Order functions through functions_framework.create_app, against the real PostgreSQL server; order-place
prices and reserves through the stack's product-get and inventory-reserve, as it does in a cluster."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import functions_framework
import psycopg
import pytest
from flask.testing import FlaskClient

from functions.shared import events, identity
from tests.conftest import EVENTS_DIR, Ingress, People, eventually, problem_of

SOURCE = "functions/orders/main.py"
Clients = Callable[[str], FlaskClient]


@pytest.fixture
def orders(stack: Any, function_env: Callable[..., None]) -> Clients:
    """Test clients of the orders functions. Their calls to product-get and inventory-reserve go through
    the stack's ingress (SERVICE_INGRESS_URL), and their events to the stack's Kafka."""
    function_env(
        DATABASE_URL=stack.database_urls["orders"],
        KAFKA_BOOTSTRAP_SERVERS=stack.kafka_bootstrap,
        IDENTITY_SECRET=stack.identity_secret,
        SERVICE_INGRESS_URL=stack.url,
    )
    return lambda target: functions_framework.create_app(target, SOURCE).test_client()


@pytest.fixture
def product(ingress: Ingress, people: People) -> Callable[..., str]:
    """A new product of the stack's catalog with `units` in stock, once product-get answers for it."""

    def make(units: int, price: float = 12.5) -> str:
        sku = f"ord_{uuid.uuid4().hex[:12]}"
        body = {"sku": sku, "name": f"Product {sku}", "category": "tests", "price": price}
        created = ingress.call("product-create", "POST", "/api/products", json=body, headers=people.admin())
        assert created.status_code == 201, created.text
        stocked = ingress.call(
            "inventory-restock", "PUT", f"/api/inventory/{sku}", json={"quantity": units}, headers=people.admin()
        )
        assert stocked.status_code in (200, 201), stocked.text
        eventually(lambda: ingress.call("product-get", "GET", f"/api/products/{sku}").status_code == 200)
        return sku

    return make


@pytest.fixture
def customer(people: People) -> Callable[[], dict[str, str]]:
    def make() -> dict[str, str]:
        subject = f"orders-it-{uuid.uuid4().hex[:8]}"
        return people.customer(subject, email=f"{subject}@example.com", first="Ada", last="Lovelace")

    return make


def sql(stack: Any, database: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(stack.database_urls[database], autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def available(stack: Any, sku: str) -> int:
    return int(sql(stack, "inventory", "SELECT available FROM stock WHERE sku = %s", sku)[0][0])


def queued(stack: Any, number: str, event_type: str) -> list[dict[str, Any]]:
    """The events of `event_type` the order's transactions put in the outbox (sent or not)."""
    rows = sql(
        stack, "orders", "SELECT event FROM outbox WHERE partition_key = %s AND event_type = %s", number, event_type
    )
    return [row[0] for row in rows]


def shape(event: dict[str, Any]) -> tuple[Any, ...]:
    """What an event of a type must share with its golden example: attribute and data field names."""
    data = event["data"]
    items = sorted({name for item in data.get("items", []) for name in item})
    return sorted(set(event) - {"data", "traceparent"}), sorted(data), items


def golden(event_type: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS_DIR / f"{event_type}.json").read_text()))


def place(orders: Clients, who: dict[str, str], *lines: tuple[str, int], **headers: str) -> Any:
    body = {"items": [{"skuCode": sku, "quantity": quantity} for sku, quantity in lines]}
    return orders("order_place").post("/api/orders", json=body, headers={**who, **headers})


def test_an_order_priced_by_the_catalog_holds_stock_and_queues_order_placed_like_the_golden_event(
    stack: Any, orders: Clients, product: Callable[..., str], customer: Callable[[], dict[str, str]]
) -> None:
    sku = product(units=5, price=12.5)
    who = customer()
    placed = place(orders, who, (sku, 2))
    assert placed.status_code == 201, placed.data
    order = placed.get_json()
    number = order["orderNumber"]
    assert placed.headers["Location"] == f"/api/orders/{number}"
    assert order["status"] == "PLACED" and order["total"] == 25.0 and order["items"][0]["unitPrice"] == 12.5
    assert available(stack, sku) == 3
    [event] = queued(stack, number, events.ORDER_PLACED)
    assert shape(event) == shape(golden(events.ORDER_PLACED))
    assert event["subject"] == event["partitionkey"] == event["data"]["orderNumber"] == number
    assert event["data"]["items"][0]["skuCode"] == sku and event["data"]["total"] == "25.00"
    events.check_data(events.ORDER_PLACED, event["data"])

    fetched = orders("order_get").get(f"/api/orders/{number}", headers=who)
    assert fetched.status_code == 200 and fetched.get_json()["orderNumber"] == number
    someone_else = orders("order_get").get(f"/api/orders/{number}", headers=customer())
    assert someone_else.status_code == 404
    problem_of(someone_else)
    listed = orders("order_list").get("/api/orders", headers=who)
    assert listed.status_code == 200
    assert [o["orderNumber"] for o in listed.get_json()["items"]] == [number]


def test_cancelling_gives_the_stock_back_by_event_and_queues_order_cancelled_like_the_golden_event(
    stack: Any, orders: Clients, product: Callable[..., str], customer: Callable[[], dict[str, str]]
) -> None:
    sku = product(units=5)
    who = customer()
    number = place(orders, who, (sku, 2)).get_json()["orderNumber"]
    cancel = orders("order_cancel")
    cancelled = cancel.post(f"/api/orders/{number}/cancel", json={"reason": "changed my mind"}, headers=who)
    assert cancelled.status_code == 200, cancelled.data
    assert cancelled.get_json()["status"] == "CANCELLED"
    [event] = queued(stack, number, events.ORDER_CANCELLED)
    assert shape(event) == shape(golden(events.ORDER_CANCELLED))
    assert event["partitionkey"] == number and event["data"]["reason"] == "changed my mind"
    events.check_data(events.ORDER_CANCELLED, event["data"])
    # inventory-release gets the event through the stack's Kafka, Broker and Trigger.
    eventually(lambda: available(stack, sku) == 5, timeout=60)
    again = cancel.post(f"/api/orders/{number}/cancel", headers=who)
    assert again.status_code == 409
    problem_of(again)
    assert len(queued(stack, number, events.ORDER_CANCELLED)) == 1


def test_an_idempotency_key_answers_the_same_order_once_and_refuses_another_body(
    stack: Any, orders: Clients, product: Callable[..., str], customer: Callable[[], dict[str, str]]
) -> None:
    sku = product(units=5)
    who = customer()
    key = f"key-{uuid.uuid4().hex}"
    first = place(orders, who, (sku, 1), **{"Idempotency-Key": key})
    again = place(orders, who, (sku, 1), **{"Idempotency-Key": key})
    assert (first.status_code, again.status_code) == (201, 201)
    number = first.get_json()["orderNumber"]
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    other = place(orders, who, (sku, 2), **{"Idempotency-Key": key})
    assert other.status_code == 422
    problem_of(other)
    assert sql(stack, "orders", "SELECT count(*) FROM orders WHERE order_number = %s", number) == [(1,)]
    assert len(queued(stack, number, events.ORDER_PLACED)) == 1
    assert available(stack, sku) == 4


@pytest.mark.parametrize(
    ("case", "status"),
    [("anonymous", 401), ("no items", 400), ("unknown product", 422), ("more than the stock", 409)],
)
def test_a_refused_order_writes_nothing_and_holds_nothing(
    stack: Any,
    orders: Clients,
    product: Callable[..., str],
    customer: Callable[[], dict[str, str]],
    case: str,
    status: int,
) -> None:
    sku = product(units=2)
    who = customer()
    lines = {"no items": [], "unknown product": [("never_created_sku", 1)], "more than the stock": [(sku, 3)]}
    refused = place(orders, {} if case == "anonymous" else who, *lines.get(case, [(sku, 1)]))
    assert refused.status_code == status, refused.data
    problem_of(refused)
    subject = identity.verify(who[identity.HEADER], stack.identity_secret).subject
    assert sql(stack, "orders", "SELECT count(*) FROM orders WHERE customer_id = %s", subject) == [(0,)]
    assert available(stack, sku) == 2


def test_the_original_single_line_order_ignores_the_clients_price(
    stack: Any, orders: Clients, product: Callable[..., str], customer: Callable[[], dict[str, str]]
) -> None:
    sku = product(units=3, price=20.0)
    who = customer()
    body = {"skuCode": sku, "quantity": 1, "price": 0.01, "userDetails": {"email": "x@example.com"}}
    placed = orders("order_place").post("/api/order", json=body, headers=who)
    assert placed.status_code == 201, placed.data
    assert placed.content_type.startswith("text/plain") and placed.get_data(as_text=True) == "Order Placed Successfully"
    number = placed.headers["Location"].rsplit("/", 1)[-1]
    row = sql(stack, "orders", "SELECT email, total FROM orders WHERE order_number = %s", number)
    email = identity.verify(who[identity.HEADER], stack.identity_secret).email
    assert [(email, float(total)) for email, total in row] == [(email, 20.0)]
    assert available(stack, sku) == 2
