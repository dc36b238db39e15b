"""Wires the catalog's real collaborators once per process, on first use (never at import)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

from functions.catalog.store import MongoProductStore
from functions.catalog.view import CatalogView
from functions.shared import health, mongo
from functions.shared.config import config
from functions.shared.mongo_outbox import MongoOutbox
from functions.shared.outbox import FastPathRelay


def now() -> datetime:
    """UTC, to the millisecond: what MongoDB stores, so a written product reads back equal."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@cache
def products() -> MongoProductStore:
    settings = config()
    client = mongo.client(settings.required("MONGODB_URI"))
    return MongoProductStore(client, settings.optional("CATALOG_DATABASE", "catalog"))


@cache
def view() -> CatalogView:
    """What product-get and product-list read: the catalog in memory, followed by a change stream."""
    return CatalogView(products())


@cache
def outbox() -> MongoOutbox:
    return MongoOutbox(products().database, "catalog")


@cache
def fast_relay() -> FastPathRelay:
    return FastPathRelay.of(outbox)


def after_commit() -> None:
    fast_relay().poke()


def dependencies() -> list[health.Dependency]:
    """What the catalog functions need to be ready (their readiness answer)."""
    return [health.mongodb(config().required("MONGODB_URI"))]
