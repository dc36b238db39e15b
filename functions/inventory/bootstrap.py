"""Wires inventory's use cases to their real collaborators once per process, on first use (never at import)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache, partial
from typing import Any

from cloudevents.http import CloudEvent

from functions.inventory import service
from functions.inventory.clients import HttpCatalog, HttpOrderStates
from functions.inventory.model import (
    ConfirmReservation,
    Line,
    LowStockQuery,
    ReleaseStock,
    Reservation,
    ReservationStatus,
    ReserveOutcome,
    ReserveStock,
    Restock,
    StockLevel,
    StockQuery,
)
from functions.inventory.store import Delivery, PostgresInventoryStore
from functions.shared import health
from functions.shared.config import config
from functions.shared.outbox import FastPathRelay
from functions.shared.postgres_outbox import PostgresOutbox
from functions.shared.service_client import ServiceClient


@cache
def inventory() -> PostgresInventoryStore:
    return PostgresInventoryStore(config().required("DATABASE_URL"))


@cache
def outbox() -> PostgresOutbox:
    return PostgresOutbox(config().required("DATABASE_URL"), "inventory")


@cache
def fast_relay() -> FastPathRelay:
    return FastPathRelay.of(outbox)


def after_commit() -> None:
    fast_relay().poke()


def reservation_ttl() -> timedelta:
    return timedelta(seconds=config().seconds("RESERVATION_TTL_SECONDS", 300))


@cache
def catalog() -> HttpCatalog:
    return HttpCatalog(ServiceClient("product-get", timeout=config().seconds("UPSTREAM_TIMEOUT_SECONDS", 3.0)))


@cache
def order_state() -> HttpOrderStates:
    return HttpOrderStates(ServiceClient("order-get"), config().required("IDENTITY_SECRET"))


def dependencies() -> list[health.Dependency]:
    """What the inventory functions need to be ready (their readiness answer)."""
    return [health.postgres(config().required("DATABASE_URL"))]


@dataclass(frozen=True)
class Inventory:
    """Inventory's use cases, ready to call. Those fed by events take the event, recorded with the effect
    (as its consumer's) so that a redelivery changes nothing."""

    check: Callable[[StockQuery], list[tuple[Line, StockLevel]]]
    level: Callable[[str], StockLevel]
    low_stock: Callable[[LowStockQuery], dict[str, Any]]
    reserve: Callable[[ReserveStock], ReserveOutcome]
    release: Callable[[ReleaseStock], Reservation | None]
    release_for: Callable[[ReleaseStock, CloudEvent], Reservation | None]
    confirm_for: Callable[[ConfirmReservation, CloudEvent], ReservationStatus | None]
    expire: Callable[[], service.ExpiryReport]
    restock: Callable[[Restock], tuple[StockLevel, bool]]
    track_for: Callable[[str, CloudEvent], bool]


@cache
def use_cases() -> Inventory:
    store = inventory()

    def consumed_by(consumer: str) -> Callable[[CloudEvent], Delivery]:
        return lambda event: Delivery(consumer, event)

    as_release, as_confirm, as_track = (
        consumed_by("inventory-release"),
        consumed_by("inventory-confirm"),
        consumed_by("inventory-track"),
    )
    return Inventory(
        check=partial(service.check_stock, inventory=store),
        level=partial(service.stock_level, inventory=store),
        low_stock=partial(service.low_stock, inventory=store),
        reserve=partial(service.reserve_stock, inventory=store, after_commit=after_commit),
        release=partial(service.release_stock, inventory=store),
        release_for=lambda cmd, event: service.release_stock(cmd, inventory=store, delivery=as_release(event)),
        confirm_for=lambda cmd, event: service.confirm_reservation(cmd, inventory=store, delivery=as_confirm(event)),
        expire=lambda: service.expire_reservations(reservation_ttl(), inventory=store, order_state=order_state()),
        # A SKU with no stock row yet gets one only if the catalog has that product.
        restock=lambda cmd: service.restock(cmd, inventory=store, catalog=catalog()),
        track_for=lambda sku, event: service.track_product(sku, inventory=store, delivery=as_track(event)),
    )
