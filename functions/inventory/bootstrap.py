"""Wires inventory's real collaborators once per process, on first use (never at import)."""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from functions.inventory.clients import HttpOrderStates
from functions.inventory.store import PostgresInventoryStore
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
def order_state() -> HttpOrderStates:
    return HttpOrderStates(ServiceClient("order-get"), config().required("IDENTITY_SECRET"))


def dependencies() -> list[health.Dependency]:
    """What the inventory functions need to be ready (their readiness answer)."""
    return [health.postgres(config().required("DATABASE_URL"))]
