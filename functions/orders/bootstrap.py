"""Wires the orders area's real collaborators once per process, on first use (never at import)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache

from functions.orders.clients import HttpCatalog, HttpInventory
from functions.orders.store import ABANDONED_CLAIM, PostgresOrderStore
from functions.shared import health
from functions.shared.config import config
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


def catalog() -> HttpCatalog:
    return HttpCatalog(_clients()[0])


def inventory(forward_headers: Mapping[str, str]) -> HttpInventory:
    _, reserve, release = _clients()
    return HttpInventory(reserve, release, forward_headers)


def dependencies() -> list[health.Dependency]:
    """What the orders functions need to be ready (their readiness answer)."""
    return [health.postgres(config().required("DATABASE_URL"))]
