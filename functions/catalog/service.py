"""Catalog use cases: create, update, get and search products; each change emits its event."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from functions.catalog.model import (
    CreateProduct,
    Product,
    ProductNotFound,
    ProductPage,
    ProductQuery,
    StaleVersion,
    UpdateProduct,
)
from functions.catalog.store import ProductReader, ProductStore
from functions.shared import events

Clock = Callable[[], datetime]
SOURCE = "catalog"
log = logging.getLogger("shop.catalog")


def create_product(
    cmd: CreateProduct, *, products: ProductStore, clock: Clock, after_commit: Callable[[], None]
) -> Product:
    now = clock()
    product = Product(
        sku=cmd.sku,
        name=cmd.name,
        description=cmd.description,
        category=cmd.category,
        price=cmd.price,
        currency=cmd.currency,
        active=cmd.active,
        image=cmd.image,
        version=1,
        created_at=now,
        updated_at=now,
    )
    event = events.new_event(events.PRODUCT_CREATED, service=SOURCE, subject=product.sku, data=product.as_event_data())
    stored = products.insert(product, event)  # DuplicateSku if the SKU exists
    log.info("product %s created", cmd.sku, extra={"sku": cmd.sku})
    after_commit()
    return stored


def update_product(
    cmd: UpdateProduct, *, products: ProductStore, clock: Clock, after_commit: Callable[[], None]
) -> Product:
    current = get_product(cmd.sku, products=products)
    if cmd.if_match is not None and cmd.if_match not in ("*", current.etag):
        raise StaleVersion(cmd.if_match, current.etag)
    changes = {k: v for k, v in cmd.changes.items() if getattr(current, k) != v}
    if not changes:
        return current
    updated = current.changed(changes, clock())
    data = {**updated.as_event_data(), "changed": sorted(changes)}
    event = events.new_event(events.PRODUCT_UPDATED, service=SOURCE, subject=updated.sku, data=data)
    products.replace(updated, current.version, event)  # VersionConflict if it moved on meanwhile
    log.info("product %s updated (%s)", cmd.sku, ", ".join(sorted(changes)), extra={"sku": cmd.sku})
    after_commit()
    return updated


def get_product(sku: str, *, products: ProductReader | ProductStore) -> Product:
    product = products.get(sku)
    if product is None:
        raise ProductNotFound(sku)
    return product


def search_products(query: ProductQuery, *, products: ProductReader) -> ProductPage:
    return products.search(query)


def all_active_products(*, products: ProductReader) -> list[Product]:
    return products.all_active()
