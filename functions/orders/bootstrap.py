"""Wires the orders area's use cases to their real collaborators once per process, on first use (never at import)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, partial

from functions.orders import service
from functions.orders.clients import HttpCatalog, HttpInventory
from functions.orders.model import CancelOrder, Order, OrderPage, OrderQuery, PlaceOrder
from functions.orders.store import ABANDONED_CLAIM, PostgresOrderStore
from functions.shared import health
from functions.shared.config import config
from functions.shared.identity import Identity
from functions.shared.outbox import FastPathRelay
from functions.shared.postgres_outbox import PostgresOutbox
from functions.shared.service_client import ServiceClient


def now() -> datetime:
    return datetime.now(UTC)


def new_order_number() -> str:
    """ORD-20261124-3F9A1C7B2D: the day, for humans, then 40 random bits."""
    return f"ORD-{now():%Y%m%d}-{secrets.token_hex(5).upper()}"


@cache
def orders() -> PostgresOrderStore:
    settings = config()
    claim_timeout = settings.seconds("IDEMPOTENCY_CLAIM_TIMEOUT_SECONDS", ABANDONED_CLAIM.total_seconds())
    return PostgresOrderStore(settings.required("DATABASE_URL"), abandoned_after=timedelta(seconds=claim_timeout))


@cache
def outbox() -> PostgresOutbox:
    return PostgresOutbox(config().required("DATABASE_URL"), "orders")


@cache
def fast_relay() -> FastPathRelay:
    return FastPathRelay.of(outbox)


def after_commit() -> None:
    fast_relay().poke()


@cache
def _clients() -> tuple[ServiceClient, ServiceClient, ServiceClient]:
    settings = config()
    timeout = settings.seconds("UPSTREAM_TIMEOUT_SECONDS", 3.0)
    return (
        ServiceClient("product-get", timeout=timeout),
        ServiceClient("inventory-reserve", timeout=timeout),
        ServiceClient("inventory-release", timeout=timeout),
    )


@dataclass(frozen=True)
class Orders:
    """The orders area's use cases, ready to call. Placing an order takes the caller's forwarded
    identity too: inventory-reserve and -release act on the customer's behalf."""

    place: Callable[[PlaceOrder, Mapping[str, str]], service.Placed]
    get: Callable[[str, Identity], Order]
    search: Callable[[OrderQuery], OrderPage]
    cancel: Callable[[CancelOrder, Identity], Order]


@cache
def use_cases() -> Orders:
    store = orders()
    product_get, reserve, release = _clients()
    catalog = HttpCatalog(product_get)

    def place(cmd: PlaceOrder, forwarded: Mapping[str, str]) -> service.Placed:
        return service.place_order(
            cmd,
            orders=store,
            catalog=catalog,
            inventory=HttpInventory(reserve, release, forwarded),
            clock=now,
            new_order_number=new_order_number,
            after_commit=after_commit,
        )

    return Orders(
        place=place,
        get=partial(service.get_order, orders=store),
        search=partial(service.list_orders, orders=store),
        cancel=partial(service.cancel_order, orders=store, clock=now, after_commit=after_commit),
    )


def dependencies() -> list[health.Dependency]:
    """What the orders functions need to be ready (their readiness answer)."""
    return [health.postgres(config().required("DATABASE_URL"))]
