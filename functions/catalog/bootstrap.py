"""Wires the catalog's use cases to their real collaborators once per process, on first use (never at import)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, partial

from functions.catalog import service
from functions.catalog.model import CreateProduct, Product, ProductPage, ProductQuery, UpdateProduct
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


@dataclass(frozen=True)
class Catalog:
    """The catalog's use cases, ready to call: writes go to MongoDB, reads to the in-memory view."""

    create: Callable[[CreateProduct], Product]
    update: Callable[[UpdateProduct], Product]
    get: Callable[[str], Product]
    search: Callable[[ProductQuery], ProductPage]
    all_active: Callable[[], list[Product]]


@cache
def use_cases() -> Catalog:
    store = products()
    return Catalog(
        create=partial(service.create_product, products=store, clock=now, after_commit=after_commit),
        update=partial(service.update_product, products=store, clock=now, after_commit=after_commit),
        get=partial(service.get_product, products=view()),
        search=partial(service.search_products, products=view()),
        all_active=partial(service.all_active_products, products=view()),
    )


def dependencies() -> list[health.Dependency]:
    """What the catalog functions need to be ready (their readiness answer)."""
    return [health.mongodb(config().required("MONGODB_URI"))]
