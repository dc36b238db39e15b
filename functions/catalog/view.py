"""The catalog as product-get and product-list read it: in memory, kept current by a change stream.

Reads are most of the catalog's traffic and the store answers a few thousand finds per second
at best, so the reading functions hold the (small) catalog in memory: a snapshot on first use,
then every insert, update and delete from a MongoDB change stream, milliseconds after its
commit. A SKU not in memory yet (created a moment ago) is looked up in the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from pymongo.errors import PyMongoError

from functions.catalog.model import Product, ProductPage, ProductQuery
from functions.catalog.store import MongoProductStore, from_document

log = logging.getLogger("shop.catalog.view")


class CatalogView:
    def __init__(self, store: MongoProductStore, reconnect_seconds: float = 1.0) -> None:
        self.store = store
        self.reconnect_seconds = reconnect_seconds
        self._by_sku: dict[str, Product] = {}
        self._sku_by_id: dict[str, str] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Loads the snapshot and starts following changes (once per process)."""
        if self._ready.is_set():  # every read calls this: no lock once the view is loaded
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._follow, name="catalog-view", daemon=True)
                self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the catalog view could not load its snapshot within 30 s")

    # --- reads ------------------------------------------------------------------------------

    def get(self, sku: str) -> Product | None:
        self.start()
        product = self._by_sku.get(sku)
        if product is None:
            product = self.store.get(sku)
            if product is not None:
                self._put(product)
        return product

    def search(self, query: ProductQuery) -> ProductPage:
        self.start()
        return search(list(self._by_sku.values()), query)

    def all_active(self) -> list[Product]:
        self.start()
        return sorted((p for p in self._by_sku.values() if p.active), key=lambda p: p.sku)

    # --- following the store ---------------------------------------------------------------

    def _follow(self) -> None:
        while True:
            try:
                # Open the stream before reading the snapshot, so no change between them is missed.
                with self.store.products.watch(full_document="updateLookup") as stream:
                    self._load_snapshot()
                    self._ready.set()
                    for change in stream:
                        self._apply(change)
            except PyMongoError as error:
                log.warning("catalog change stream interrupted (%s); reloading", error)
                time.sleep(self.reconnect_seconds)

    def _load_snapshot(self) -> None:
        products = [from_document(d) for d in self.store.products.find({})]
        with self._lock:
            self._by_sku = {p.sku: p for p in products}
            self._sku_by_id = {p.id: p.sku for p in products}

    def _apply(self, change: dict[str, Any]) -> None:
        operation = change["operationType"]
        if operation == "delete":
            with self._lock:
                sku = self._sku_by_id.pop(str(change["documentKey"]["_id"]), None)
                if sku is not None:
                    self._by_sku.pop(sku, None)
        elif change.get("fullDocument"):
            self._put(from_document(change["fullDocument"]))

    def _put(self, product: Product) -> None:
        with self._lock:
            current = self._by_sku.get(product.sku)
            # Versions only grow: an older document arriving late never overwrites a newer one.
            if current is None or product.version >= current.version:
                self._by_sku[product.sku] = product
                self._sku_by_id[product.id] = product.sku


def search(products: Iterable[Product], query: ProductQuery) -> ProductPage:
    """The catalog's one search: a case-insensitive substring of name or description (the text is
    matched as text, never as a pattern), a category, active products unless asked, sorted and paged."""
    needle = (query.text or "").lower()
    matches = [
        p
        for p in products
        if (query.include_inactive or p.active)
        and (not query.category or p.category == query.category)
        and (not needle or needle in p.name.lower() or needle in p.description.lower())
    ]
    field = query.sort.lstrip("-")
    matches.sort(key=lambda p: p.sku)  # the tie-break, ascending as in MongoDB, kept by the stable sort below
    matches.sort(key=lambda p: _sort_value(p, field), reverse=query.sort.startswith("-"))
    start = query.page * query.size
    return ProductPage(matches[start : start + query.size], query.page, query.size, len(matches))


def _sort_value(product: Product, field: str) -> Decimal | str:
    """Names sort as people read them: "iPhone" between "Galaxy" and "XPS", whatever the case."""
    return product.price if field == "price" else product.name.casefold()
