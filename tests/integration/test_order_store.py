"""The orders store's Idempotency-Key claims against the real PostgreSQL server: a claim taken over
after its request was presumed dead never lets that request commit a second order, and the saga
around it answers 409 and gives the stock back."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from functions.orders import service
from functions.orders.model import (
    Customer,
    KeyInFlight,
    Order,
    OrderLine,
    OrderStatus,
    PlaceOrder,
    PricedProduct,
    RequestedLine,
)
from functions.orders.store import PostgresOrderStore
from functions.shared import events
from functions.shared.problems import from_domain


def an_order(customer: Customer) -> Order:
    number = f"ORD-TEST-{uuid.uuid4().hex[:10].upper()}"
    line = OrderLine("pixel_8", "Pixel 8", 1, Decimal("699.00"))
    return Order(number, customer, OrderStatus.PLACED, (line,), "USD", datetime.now(UTC))


def commit(store: PostgresOrderStore, order: Order, key: str) -> None:
    event = events.new_event(
        events.ORDER_PLACED, service="orders", subject=order.order_number, data=order.placed_event_data()
    )
    store.insert(order, event, key, order.as_json())


def sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def test_a_request_that_outlived_its_claim_cannot_commit_a_second_order(stack: Any) -> None:
    url = stack.database_urls["orders"]
    store = PostgresOrderStore(url)
    customer = Customer(f"cust-{uuid.uuid4().hex[:8]}", "ada@example.com", "Ada", "Lovelace")
    key = uuid.uuid4().hex

    assert store.claim_key(customer.id, key, "same-body") is None  # request A claims the key ...
    # ... and is silent for an hour: presumed dead (say its answer was cut off at the request timeout).
    sql(url, "UPDATE idempotency_keys SET claimed_at = claimed_at - interval '1 hour' WHERE key = %s", key)
    assert store.claim_key(customer.id, key, "same-body") is None  # request B, the client's retry, takes over
    taken_over = an_order(customer)
    commit(store, taken_over, key)

    # A was only slow: it reaches its commit after all. It must not add a second order.
    late = an_order(customer)
    with pytest.raises(KeyInFlight):
        commit(store, late, key)

    assert sql(url, "SELECT order_number FROM orders WHERE customer_id = %s", customer.id) == [
        (taken_over.order_number,)
    ]
    assert sql(url, "SELECT count(*) FROM outbox WHERE partition_key = %s", late.order_number) == [(0,)]
    replay = store.claim_key(customer.id, key, "same-body")
    assert replay is not None and replay.order_number == taken_over.order_number
    assert replay.body["orderNumber"] == taken_over.order_number


class Catalog:
    def product(self, sku: str) -> PricedProduct | None:
        return PricedProduct(sku, "Pixel 8", Decimal("699.00"), "USD", True)


@dataclass
class StallingInventory:
    """Holds stock; while it holds this request's, `meanwhile` runs (the request stalls there)."""

    meanwhile: Any
    held: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def reserve(self, order_number: str, lines: tuple[RequestedLine, ...]) -> None:
        self.held.append(order_number)
        self.meanwhile()

    def release(self, order_number: str) -> None:
        self.released.append(order_number)


def test_the_overtaken_request_answers_409_and_gives_its_stock_back(stack: Any) -> None:
    url = stack.database_urls["orders"]
    store = PostgresOrderStore(url)
    customer = Customer(f"cust-{uuid.uuid4().hex[:8]}", "ada@example.com", "Ada", "Lovelace")
    key = uuid.uuid4().hex
    cmd = PlaceOrder(customer, (RequestedLine("pixel_8", 1),), idempotency_key=key)
    numbers = (f"ORD-TEST-{i}-{uuid.uuid4().hex[:8].upper()}" for i in itertools.count())
    taken_over = an_order(customer)

    def presumed_dead_and_overtaken() -> None:
        """While this request holds stock, its claim ages out and the client's retry places the order."""
        sql(url, "UPDATE idempotency_keys SET claimed_at = claimed_at - interval '1 hour' WHERE key = %s", key)
        assert store.claim_key(customer.id, key, cmd.request_hash) is None
        commit(store, taken_over, key)

    inventory = StallingInventory(presumed_dead_and_overtaken)
    with pytest.raises(KeyInFlight) as caught:
        service.place_order(
            cmd,
            orders=store,
            catalog=Catalog(),
            inventory=inventory,
            clock=lambda: datetime.now(UTC),
            new_order_number=lambda: next(numbers),
            after_commit=lambda: None,
        )
    answer = from_domain(caught.value)
    assert answer.status == 409 and answer.headers["Retry-After"] == "1"
    assert caught.value.slug == "idempotency-key-in-flight"
    assert inventory.released == inventory.held  # the late request's hold is given back at once
    assert sql(url, "SELECT order_number FROM orders WHERE customer_id = %s", customer.id) == [
        (taken_over.order_number,)
    ]
    # The client's next retry gets the order that stands.
    replayed = service.place_order(
        cmd,
        orders=store,
        catalog=Catalog(),
        inventory=StallingInventory(lambda: None),
        clock=lambda: datetime.now(UTC),
        new_order_number=lambda: next(numbers),
        after_commit=lambda: None,
    )
    assert replayed.replayed and replayed.order_number == taken_over.order_number
