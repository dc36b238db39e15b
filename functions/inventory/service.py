"""Inventory use cases: check, reserve, release, confirm, expire, restock and track stock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from cloudevents.http import CloudEvent

from functions.inventory.model import (
    ConfirmReservation,
    Line,
    LowStockQuery,
    NotInCatalog,
    ReleaseStock,
    Reservation,
    ReservationStatus,
    ReserveOutcome,
    ReserveStock,
    Restock,
    StockLevel,
    StockQuery,
    UnknownSku,
    UnknownSkus,
    UnstockedItems,
)
from functions.inventory.store import Delivery, InventoryStore
from functions.shared import events, metrics
from functions.shared.errors import FieldError

SOURCE = "inventory"
log = logging.getLogger("shop.inventory")


def check_stock(query: StockQuery, *, inventory: InventoryStore) -> list[tuple[Line, StockLevel]]:
    levels = inventory.levels(line.sku for line in query.lines)
    unknown = [i for i, line in enumerate(query.lines) if line.sku not in levels]
    if unknown:
        raise UnknownSku(
            "no stock is kept for " + ", ".join(repr(query.lines[i].sku) for i in unknown),
            errors=[FieldError("skuCode", f"unknown SKU {query.lines[i].sku!r}") for i in unknown],
        )
    return [(line, levels[line.sku]) for line in query.lines]


def crossings(outcome: ReserveOutcome) -> list[StockLevel]:
    """Levels this reservation took under their low-stock threshold (once, on the way down)."""
    return [
        after
        for before, after in zip(outcome.levels_before, outcome.levels_after, strict=True)
        if after.available < after.low_stock_threshold <= before.available
    ]


def _low_stock_events(outcome: ReserveOutcome) -> list[CloudEvent]:
    return [
        events.new_event(
            events.INVENTORY_LOW,
            service=SOURCE,
            subject=level.sku,
            data={
                "sku": level.sku,
                "available": level.available,
                "threshold": level.low_stock_threshold,
                "orderNumber": outcome.reservation.order_number,
            },
        )
        for level in crossings(outcome)
    ]


def reserve_stock(cmd: ReserveStock, *, inventory: InventoryStore, after_commit: Callable[[], None]) -> ReserveOutcome:
    try:
        # InsufficientStock and ReservationConflict reach the caller as they are.
        outcome = inventory.reserve(cmd, _low_stock_events)
    except UnknownSkus as error:
        raise UnstockedItems(
            "these items are not stocked: " + ", ".join(error.skus),
            errors=[
                FieldError(f"/items/{i}/skuCode", f"unknown SKU {line.sku!r}")
                for i, line in enumerate(cmd.lines)
                if line.sku in error.skus
            ],
        ) from None
    if outcome.created:
        metrics.UNITS_RESERVED.inc(sum(line.quantity for line in cmd.lines))
        log.info(
            "reserved %s for order %s",
            ", ".join(f"{line.quantity} x {line.sku}" for line in cmd.lines),
            cmd.order_number,
            extra={"order_number": cmd.order_number},
        )
    low = crossings(outcome)
    if low:
        metrics.LOW_STOCK_EVENTS.inc(len(low))
        for level in low:
            log.warning(
                "stock of %s is low: %d left (threshold %d)",
                level.sku,
                level.available,
                level.low_stock_threshold,
                extra={"sku": level.sku, "order_number": cmd.order_number},
            )
        after_commit()
    return outcome


def release_stock(
    cmd: ReleaseStock, *, inventory: InventoryStore, delivery: Delivery | None = None
) -> Reservation | None:
    """Gives a reservation's stock back; a second release (or redelivery) changes nothing."""
    reservation = inventory.release(cmd, delivery)
    if reservation is not None:
        log.info("reservation %s released (%s)", cmd.order_number, cmd.reason, extra={"order_number": cmd.order_number})
    return reservation


def confirm_reservation(
    cmd: ConfirmReservation, *, inventory: InventoryStore, delivery: Delivery
) -> ReservationStatus | None:
    status = inventory.confirm(cmd, delivery)
    if status is None:
        log.warning(
            "order %s placed without a reservation on record",
            cmd.order_number,
            extra={"order_number": cmd.order_number},
        )
    return status


class OrderState(StrEnum):
    PLACED = "PLACED"
    CANCELLED = "CANCELLED"
    MISSING = "MISSING"


@dataclass(frozen=True)
class ExpiryReport:
    released: int
    confirmed: int
    undecided: int


def expire_reservations(
    ttl: timedelta,
    *,
    inventory: InventoryStore,
    order_state: Callable[[str], OrderState | None],
    limit: int = 500,
) -> ExpiryReport:
    """Settles holds older than the TTL: the order's own state decides.

    A hold outlives its TTL when the process that made it died before committing
    the order (release it) or when the order's confirmation is still on its way,
    e.g. Kafka was down (confirm it). If the orders service cannot answer, the
    hold waits for the next sweep rather than risk overselling.
    """
    released = confirmed = undecided = 0
    for order_number in inventory.held_longer_than(ttl, limit):
        state = order_state(order_number)
        if state is OrderState.PLACED:
            inventory.confirm(ConfirmReservation(order_number))
            confirmed += 1
        elif state in (OrderState.MISSING, OrderState.CANCELLED):
            inventory.release(ReleaseStock(order_number, "expired"))
            released += 1
        else:
            undecided += 1
    return ExpiryReport(released, confirmed, undecided)


def stock_level(sku: str, *, inventory: InventoryStore) -> StockLevel:
    level = inventory.levels([sku]).get(sku)
    if level is None:
        raise UnknownSku(f"no stock is kept for {sku!r}")
    return level


def low_stock(query: LowStockQuery, *, inventory: InventoryStore) -> dict[str, Any]:
    """Levels under their low-stock threshold, emptiest first (a page)."""
    levels, total = inventory.low_stock(query.page, query.size)
    return {
        "items": [level.as_json() for level in levels],
        "page": query.page,
        "size": query.size,
        "totalItems": total,
        "totalPages": (total + query.size - 1) // query.size,
    }


def restock(
    cmd: Restock, *, inventory: InventoryStore, catalog: Callable[[str], bool] | None = None
) -> tuple[StockLevel, bool]:
    """Sets or adds stock. A SKU with no stock yet gets it only if the catalog has that product
    (`catalog(sku)`): a mistyped SKU is a 404, not stock for nothing. inventory-track makes the
    row of a new product a moment after it is created; this covers a restock that comes first."""
    if catalog is not None and not inventory.levels([cmd.sku]) and not catalog(cmd.sku):
        raise NotInCatalog(f"no product {cmd.sku!r} in the catalog: stock is kept for catalog products only")
    try:
        level, created = inventory.restock(cmd)
    except UnknownSkus:
        raise UnknownSku(f"no stock is kept for {cmd.sku!r}; PUT with mode 'set' creates it") from None
    log.info("stock of %s is now %d", cmd.sku, level.available, extra={"sku": cmd.sku})
    return level, created


def track_product(sku: str, *, inventory: InventoryStore, delivery: Delivery) -> bool:
    """Creates the (empty) stock row of a new catalog SKU."""
    return inventory.track(sku, delivery)
