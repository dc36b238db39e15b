"""The order saga with fakes: catalog prices win, failures compensate, idempotency keys replay."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from functions.orders import service
from functions.orders.model import (
    CancelOrder,
    Customer,
    KeyInFlight,
    KeyInUse,
    Order,
    OrderPage,
    OrderQuery,
    PlaceOrder,
    PricedProduct,
    RequestedLine,
    StoredResponse,
    UnknownProducts,
)
from functions.shared.errors import Refused, Unavailable
from functions.shared.problems import from_domain
from functions.shared.service_client import UpstreamUnavailable

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ADA = Customer("u-ada", "ada@example.com", "Ada", "Lovelace")


@dataclass
class FakeOrders:
    orders: dict[str, Order] = field(default_factory=dict)
    keys: dict[tuple[str, str], tuple[str, StoredResponse | None]] = field(default_factory=dict)
    events: list[CloudEvent] = field(default_factory=list)
    fail_insert: bool = False

    def claim_key(self, customer_id: str, key: str, request_hash: str) -> StoredResponse | None:
        existing = self.keys.get((customer_id, key))
        if existing is None:
            self.keys[(customer_id, key)] = (request_hash, None)
            return None
        if existing[0] != request_hash:
            raise KeyInUse()
        if existing[1] is None:
            raise KeyInFlight()
        return existing[1]

    def release_key(self, customer_id: str, key: str) -> None:
        if self.keys.get((customer_id, key), ("", None))[1] is None:
            self.keys.pop((customer_id, key), None)

    def insert(self, order: Order, event: CloudEvent, key: str | None, response: dict[str, Any] | None) -> None:
        if self.fail_insert:
            raise RuntimeError("database went away")
        self.orders[order.order_number] = order
        self.events.append(event)
        if key is not None and response is not None:
            self.keys[(order.customer.id, key)] = (
                self.keys[(order.customer.id, key)][0],
                StoredResponse(201, response, order.order_number),
            )

    def get(self, order_number: str) -> Order | None:
        return self.orders.get(order_number)

    def search(self, query: OrderQuery) -> OrderPage:
        raise NotImplementedError

    def cancel(
        self,
        cmd: CancelOrder,
        allowed: Callable[[Order], bool],
        now: datetime,
        event_for: Callable[[Order], CloudEvent],
    ) -> Order | None:
        raise NotImplementedError


@dataclass
class FakeCatalog:
    products: dict[str, PricedProduct]
    down: bool = False

    def product(self, sku: str) -> PricedProduct | None:
        if self.down:
            raise UpstreamUnavailable("product-get", "connection refused")
        return self.products.get(sku)


@dataclass
class FakeInventory:
    held: dict[str, tuple[RequestedLine, ...]] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    reserve_error: Exception | None = None

    def reserve(self, order_number: str, lines: tuple[RequestedLine, ...]) -> None:
        if self.reserve_error:
            raise self.reserve_error
        self.held[order_number] = lines

    def release(self, order_number: str) -> None:
        self.released.append(order_number)
        self.held.pop(order_number, None)


CATALOG = {
    "pixel_8": PricedProduct("pixel_8", "Pixel 8", Decimal("699.00"), "USD", True),
    "old_phone": PricedProduct("old_phone", "Old", Decimal("10.00"), "USD", False),
}


def place(cmd: PlaceOrder, orders: FakeOrders, inventory: FakeInventory, catalog: FakeCatalog | None = None) -> Any:
    numbers = iter(f"ORD-UNIT-{i:04d}" for i in range(1, 100))
    return service.place_order(
        cmd,
        orders=orders,
        catalog=catalog or FakeCatalog(CATALOG),
        inventory=inventory,
        clock=lambda: NOW,
        new_order_number=lambda: next(numbers),
        after_commit=lambda: None,
    )


def test_an_order_is_priced_by_the_catalog_and_queues_order_placed() -> None:
    orders, inventory = FakeOrders(), FakeInventory()
    placed = place(PlaceOrder(ADA, (RequestedLine("pixel_8", 2),)), orders, inventory)
    order = orders.orders[placed.order_number]
    assert order.total == Decimal("1398.00") and inventory.held == {placed.order_number: (RequestedLine("pixel_8", 2),)}
    (event,) = orders.events
    assert event.get_data()["total"] == "1398.00" and event.get_data()["email"] == "ada@example.com"


def test_a_failed_commit_releases_the_reservation() -> None:
    orders, inventory = FakeOrders(fail_insert=True), FakeInventory()
    with pytest.raises(RuntimeError):
        place(PlaceOrder(ADA, (RequestedLine("pixel_8", 1),)), orders, inventory)
    assert inventory.held == {} and inventory.released == ["ORD-UNIT-0001"]


def test_an_unclear_reservation_failure_is_compensated_and_answered_503() -> None:
    orders = FakeOrders()
    inventory = FakeInventory(reserve_error=UpstreamUnavailable("inventory-reserve", "read timeout"))
    with pytest.raises(Unavailable) as caught:
        place(PlaceOrder(ADA, (RequestedLine("pixel_8", 1),)), orders, inventory)
    assert caught.value.retry_after
    assert inventory.released == ["ORD-UNIT-0001"] and orders.orders == {}


def test_unknown_or_inactive_products_are_422_naming_each_line() -> None:
    with pytest.raises(UnknownProducts) as caught:
        place(
            PlaceOrder(ADA, (RequestedLine("nope_x", 1), RequestedLine("old_phone", 1))), FakeOrders(), FakeInventory()
        )
    assert from_domain(caught.value).status == 422
    assert [e.field for e in caught.value.errors] == ["/items/0/skuCode", "/items/1/skuCode"]


def test_catalog_down_means_503_and_no_reservation() -> None:
    inventory = FakeInventory()
    with pytest.raises(Unavailable):
        place(PlaceOrder(ADA, (RequestedLine("pixel_8", 1),)), FakeOrders(), inventory, FakeCatalog(CATALOG, down=True))
    assert inventory.held == {}


def test_an_idempotency_key_replays_and_refuses_another_body() -> None:
    orders, inventory = FakeOrders(), FakeInventory()
    cmd = PlaceOrder(ADA, (RequestedLine("pixel_8", 1),), idempotency_key="key-00000001")
    first = place(cmd, orders, inventory)
    again = place(cmd, orders, inventory)
    assert again.replayed and again.body == first.body and len(orders.orders) == 1
    with pytest.raises(KeyInUse) as caught:
        place(PlaceOrder(ADA, (RequestedLine("pixel_8", 2),), idempotency_key="key-00000001"), orders, inventory)
    assert from_domain(caught.value).status == 422


def test_a_failed_attempt_frees_its_idempotency_key_for_a_retry() -> None:
    orders = FakeOrders()
    failing = FakeInventory(reserve_error=Refused(409, "Insufficient stock", "short", "insufficient-stock"))
    cmd = PlaceOrder(ADA, (RequestedLine("pixel_8", 1),), idempotency_key="key-00000002")
    with pytest.raises(Refused):
        place(cmd, orders, failing)
    assert orders.keys == {}
    assert not place(cmd, orders, FakeInventory()).replayed
