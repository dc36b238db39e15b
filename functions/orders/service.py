"""Order use cases: place (a saga: price, reserve, commit, compensate), read, list and cancel orders."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from functions.orders.clients import Catalog, Inventory
from functions.orders.model import (
    CancelOrder,
    KeyInFlight,
    MixedCurrencies,
    Order,
    OrderLine,
    OrderNotFound,
    OrderPage,
    OrderQuery,
    OrderStatus,
    PlaceOrder,
    PricedProduct,
    UnknownProducts,
)
from functions.orders.store import OrderStore
from functions.shared import events, faults, metrics
from functions.shared.errors import DomainError, FieldError, Unavailable
from functions.shared.identity import Identity
from functions.shared.service_client import UpstreamUnavailable

SOURCE = "orders"
log = logging.getLogger("shop.orders")
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Placed:
    body: dict[str, Any]
    order_number: str
    replayed: bool


def place_order(
    cmd: PlaceOrder,
    *,
    orders: OrderStore,
    catalog: Catalog,
    inventory: Inventory,
    clock: Clock,
    new_order_number: Callable[[], str],
    after_commit: Callable[[], None],
) -> Placed:
    """Validates, prices from the catalog, reserves stock, then commits order + outbox in one transaction.

    Nothing is written and no stock stays held unless the whole order commits: a failure
    after the reservation releases it (and a crash before that is caught by the
    reservation TTL, which asks this service whether the order exists).
    """
    key = cmd.idempotency_key
    if key is not None:
        # KeyInUse (another body) and KeyInFlight (still running) reach the caller as they are.
        stored = orders.claim_key(cmd.customer.id, key, cmd.request_hash)
        if stored is not None:
            return Placed(stored.body, stored.order_number, replayed=True)
    try:
        order = _priced_order(cmd, catalog, new_order_number(), clock())
        placed = _reserve_and_commit(cmd, order, orders=orders, inventory=inventory)
    except KeyInFlight:
        # This request outlived its claim and another took the key over: nothing of this one was
        # committed and its stock is released; a retry gets the other's answer. The claim is not
        # ours to release any more.
        raise
    except BaseException:
        if key is not None:
            orders.release_key(cmd.customer.id, key)
        raise
    after_commit()
    metrics.ORDERS_PLACED.inc()
    metrics.ORDER_VALUE.labels(order.currency).observe(float(order.total))
    log.info(
        "order %s placed, total %s %s",
        order.order_number,
        order.total,
        order.currency,
        extra={"order_number": order.order_number},
    )
    return placed


def _priced_order(cmd: PlaceOrder, catalog: Catalog, order_number: str, now: datetime) -> Order:
    products = _price(cmd, catalog)
    lines = tuple(
        OrderLine(line.sku, products[line.sku].name, line.quantity, products[line.sku].price) for line in cmd.lines
    )
    return Order(
        order_number,
        cmd.customer,
        OrderStatus.PLACED,
        lines,
        products[cmd.lines[0].sku].currency,
        now,
        contact=cmd.contact,
        shipping_address=cmd.shipping_address,
    )


def _reserve_and_commit(cmd: PlaceOrder, order: Order, *, orders: OrderStore, inventory: Inventory) -> Placed:
    """Holds the stock, then commits order + outbox (+ the key's answer); releases the hold if the commit fails."""
    try:
        inventory.reserve(order.order_number, cmd.lines)
    except UpstreamUnavailable as error:
        # The reservation may have happened before the failure: undo it, best effort.
        _compensate(inventory, order.order_number)
        raise Unavailable(
            f"inventory is unavailable ({error.reason}); nothing was ordered", retry_after=error.retry_after
        ) from None
    faults.point("after-reserve")
    event = events.new_event(
        events.ORDER_PLACED, service=SOURCE, subject=order.order_number, data=order.placed_event_data()
    )
    body = order.as_json()
    try:
        orders.insert(order, event, cmd.idempotency_key, body)
    except BaseException:
        _compensate(inventory, order.order_number)
        raise
    return Placed(body, order.order_number, replayed=False)


def _price(cmd: PlaceOrder, catalog: Catalog) -> dict[str, PricedProduct]:
    products: dict[str, PricedProduct] = {}
    errors: list[FieldError] = []
    try:
        for i, line in enumerate(cmd.lines):
            product = catalog.product(line.sku)
            if product is None:
                errors.append(FieldError(f"/items/{i}/skuCode", f"no product {line.sku!r} in the catalog"))
            elif not product.active:
                errors.append(FieldError(f"/items/{i}/skuCode", f"{line.sku!r} is not for sale"))
            else:
                products[line.sku] = product
    except UpstreamUnavailable as error:
        raise Unavailable(
            f"the catalog is unavailable ({error.reason}); nothing was ordered", retry_after=error.retry_after
        ) from None
    if errors:
        raise UnknownProducts("; ".join(e.message for e in errors), errors=errors)
    currencies = {p.currency for p in products.values()}
    if len(currencies) > 1:
        raise MixedCurrencies(sorted(currencies))
    return products


def _compensate(inventory: Inventory, order_number: str) -> None:
    try:
        inventory.release(order_number)
        log.info("reservation of %s released (compensation)", order_number, extra={"order_number": order_number})
    except (UpstreamUnavailable, DomainError) as error:
        log.warning(
            "compensation for %s failed (%s); the reservation TTL will release it",
            order_number,
            error,
            extra={"order_number": order_number},
        )


def visible_to(caller: Identity) -> Callable[[Order], bool]:
    """Customers see their own orders; admins and internal services see all."""
    return lambda order: caller.is_admin or caller.has_role("service") or order.customer.id == caller.subject


def get_order(order_number: str, caller: Identity, *, orders: OrderStore) -> Order:
    order = orders.get(order_number)
    # Someone else's order is "not found", not "forbidden": its existence is not disclosed.
    if order is None or not visible_to(caller)(order):
        raise OrderNotFound(order_number)
    return order


def list_orders(query: OrderQuery, *, orders: OrderStore) -> OrderPage:
    return orders.search(query)


def cancel_order(
    cmd: CancelOrder, caller: Identity, *, orders: OrderStore, clock: Clock, after_commit: Callable[[], None]
) -> Order:
    def event_for(order: Order) -> Any:
        return events.new_event(
            events.ORDER_CANCELLED, service=SOURCE, subject=order.order_number, data=order.cancelled_event_data()
        )

    cancelled = orders.cancel(cmd, visible_to(caller), clock(), event_for)  # OrderNotCancellable
    if cancelled is None:
        raise OrderNotFound(cmd.order_number)
    after_commit()
    metrics.ORDERS_CANCELLED.inc()
    log.info("order %s cancelled", cmd.order_number, extra={"order_number": cmd.order_number})
    return cancelled
