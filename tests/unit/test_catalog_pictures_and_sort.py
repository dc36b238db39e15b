"""Product pictures travel through create, update and events; names sort as people read them, whatever the case."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from functions.catalog import parse, service
from functions.catalog.model import CreateProduct, ProductQuery
from functions.shared import events
from functions.shared.problems import Problem
from local import seed
from tests.unit.fakes import InMemoryProductStore

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def test_names_sort_case_insensitively() -> None:
    store = InMemoryProductStore()
    for sku, name in [("xps", "XPS 13"), ("iphone", "iPhone 15"), ("galaxy", "Galaxy S24"), ("apple", "apple cable")]:
        cmd = CreateProduct(sku=sku, name=name, category="phones", price=Decimal("10.00"))
        service.create_product(cmd, products=store, clock=lambda: NOW, after_commit=lambda: None)
    names = [p.name for p in service.search_products(ProductQuery(sort="name"), products=store).items]
    assert names == ["apple cable", "Galaxy S24", "iPhone 15", "XPS 13"]
    backwards = [p.name for p in service.search_products(ProductQuery(sort="-name"), products=store).items]
    assert backwards == names[::-1]


def test_a_picture_is_kept_shown_changed_and_removed() -> None:
    store = InMemoryProductStore()
    body = {"sku": "pic_1", "name": "Pic", "category": "phones", "price": 5, "image": "/storefront/images/p.svg"}
    product = service.create_product(
        parse.create_command(body, legacy=False), products=store, clock=lambda: NOW, after_commit=lambda: None
    )
    assert product.as_json()["image"] == "/storefront/images/p.svg"
    assert store.events[-1].get_data()["image"] == "/storefront/images/p.svg"
    events.check_data(events.PRODUCT_CREATED, store.events[-1].get_data())

    changed = parse.update_command("/api/products/pic_1", {"image": "/storefront/images/q.svg"}, None)
    updated = service.update_product(changed, products=store, clock=lambda: NOW, after_commit=lambda: None)
    assert updated.as_json()["image"] == "/storefront/images/q.svg"
    assert store.events[-1].get_data()["changed"] == ["image"]
    events.check_data(events.PRODUCT_UPDATED, store.events[-1].get_data())

    removed = parse.update_command("/api/products/pic_1", {"image": None}, None)
    bare = service.update_product(removed, products=store, clock=lambda: NOW, after_commit=lambda: None)
    assert bare.as_json()["image"] is None
    assert "image" not in store.events[-1].get_data()
    events.check_data(events.PRODUCT_UPDATED, store.events[-1].get_data())


@pytest.mark.parametrize(
    "image", ["https://cdn.example/p.png", "javascript:alert(1)", "/a b.svg", "//evil.example/p.svg", ""]
)
def test_a_picture_must_be_a_path_on_the_shops_own_site(image: str) -> None:
    body = {"sku": "pic_2", "name": "Pic", "category": "phones", "price": 5, "image": image}
    with pytest.raises(Problem) as refused:
        parse.create_command(body, legacy=False)
    assert refused.value.status == 400


def test_every_demo_product_has_its_own_picture() -> None:
    for sku, *_ in seed.PRODUCTS:
        picture = ROOT / "gateway" / "storefront" / "images" / "products" / f"{sku}.svg"
        assert picture.is_file(), sku
        assert picture.read_text().startswith("<svg xmlns=")
