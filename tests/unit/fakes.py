"""In-memory fakes of the areas' stores, for unit tests: the same contracts, no servers."""

from __future__ import annotations

import threading

from cloudevents.http import CloudEvent

from functions.catalog.model import DuplicateSku, Product, ProductPage, ProductQuery, VersionConflict
from functions.catalog.view import search


class InMemoryProductStore:
    """A fake for unit tests: same contract, events kept in a list."""

    def __init__(self) -> None:
        self.products: dict[str, Product] = {}
        self.events: list[CloudEvent] = []
        self._lock = threading.Lock()

    def insert(self, product: Product, event: CloudEvent) -> Product:
        with self._lock:
            if product.sku in self.products:
                raise DuplicateSku(product.sku)
            stored = Product(**{**product.__dict__, "id": f"mem-{len(self.products) + 1}"})
            self.products[product.sku] = stored
            self.events.append(event)
            return stored

    def replace(self, product: Product, expected_version: int, event: CloudEvent) -> None:
        with self._lock:
            current = self.products.get(product.sku)
            if current is None or current.version != expected_version:
                raise VersionConflict(product.sku)
            self.products[product.sku] = product
            self.events.append(event)

    def get(self, sku: str) -> Product | None:
        return self.products.get(sku)

    def search(self, query: ProductQuery) -> ProductPage:
        return search(self.products.values(), query)

    def all_active(self) -> list[Product]:
        return sorted((p for p in self.products.values() if p.active), key=lambda p: p.sku)
