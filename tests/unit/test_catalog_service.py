"""Catalog use cases on the in-memory fake store: versions, preconditions and the events they queue."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from functions.catalog import service
from functions.catalog.model import CreateProduct, ProductQuery, UpdateProduct
from functions.shared import events
from functions.shared.errors import Conflict, PreconditionFailed
from tests.unit.fakes import InMemoryProductStore

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def create(store: InMemoryProductStore, sku: str = "pixel_8", price: str = "699.00", **kwargs: object) -> None:
    cmd = CreateProduct(sku=sku, name=f"Name {sku}", category="phones", price=Decimal(price), **kwargs)  # type: ignore[arg-type]
    service.create_product(cmd, products=store, clock=lambda: NOW, after_commit=lambda: None)


def test_create_queues_product_created_with_the_exact_price() -> None:
    store = InMemoryProductStore()
    commits: list[str] = []
    cmd = CreateProduct(sku="pixel_8", name="Pixel 8", category="phones", price=Decimal("699.10"))
    product = service.create_product(cmd, products=store, clock=lambda: NOW, after_commit=lambda: commits.append("x"))
    assert product.version == 1 and commits == ["x"]
    (event,) = store.events
    assert event["type"] == events.PRODUCT_CREATED and event.get_data()["price"] == "699.10"


def test_a_duplicate_sku_is_a_409_and_nothing_is_committed() -> None:
    store = InMemoryProductStore()
    create(store)
    commits: list[str] = []
    with pytest.raises(Conflict):
        service.create_product(
            CreateProduct("pixel_8", "Again", "phones", Decimal("1.00")),
            products=store,
            clock=lambda: NOW,
            after_commit=lambda: commits.append("x"),
        )
    assert commits == [] and len(store.events) == 1


def test_update_emits_only_real_changes_and_honours_if_match() -> None:
    store = InMemoryProductStore()
    create(store)
    update = UpdateProduct("pixel_8", {"price": Decimal("649.00"), "name": "Name pixel_8"})
    product = service.update_product(update, products=store, clock=lambda: NOW, after_commit=lambda: None)
    assert product.version == 2 and store.events[-1].get_data()["changed"] == ["price"]
    unchanged = service.update_product(update, products=store, clock=lambda: NOW, after_commit=lambda: None)
    assert unchanged.version == 2 and len(store.events) == 2
    with pytest.raises(PreconditionFailed):
        service.update_product(
            UpdateProduct("pixel_8", {"active": False}, if_match='"v1"'),
            products=store,
            clock=lambda: NOW,
            after_commit=lambda: None,
        )


def test_search_hides_inactive_products_unless_asked() -> None:
    store = InMemoryProductStore()
    create(store, "a_1", "10.00")
    create(store, "b_2", "5.00", active=False)
    visible = service.search_products(ProductQuery(sort="price"), products=store)
    assert [p.sku for p in visible.items] == ["a_1"]
    everything = service.search_products(ProductQuery(sort="price", include_inactive=True), products=store)
    assert [p.sku for p in everything.items] == ["b_2", "a_1"] and everything.total == 2
