"""Product storage: the Protocol the service needs, its MongoDB adapter and an in-memory fake."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from bson.decimal128 import Decimal128
from bson.objectid import ObjectId
from cloudevents.http import CloudEvent
from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.errors import DuplicateKeyError

from functions.catalog.model import DuplicateSku, Product, ProductPage, ProductQuery, VersionConflict
from functions.shared import mongo_outbox

PRODUCTS = "products"


class ProductReader(Protocol):
    def get(self, sku: str) -> Product | None: ...

    def search(self, query: ProductQuery) -> ProductPage: ...

    def all_active(self) -> list[Product]: ...


class ProductStore(ProductReader, Protocol):
    def insert(self, product: Product, event: CloudEvent) -> Product:
        """Stores a new product and its event atomically; DuplicateSku if the SKU exists."""

    def replace(self, product: Product, expected_version: int, event: CloudEvent) -> None:
        """Stores a new version and its event atomically; VersionConflict if it moved on."""


def text_filter(query: ProductQuery) -> dict[str, Any]:
    """A MongoDB filter built only from validated values; user text is regex-escaped."""
    conditions: dict[str, Any] = {}
    if not query.include_inactive:
        conditions["active"] = True
    if query.category:
        conditions["category"] = query.category
    if query.text:
        pattern = {"$regex": re.escape(query.text), "$options": "i"}
        conditions["$or"] = [{"name": pattern}, {"description": pattern}]
    return conditions


class MongoProductStore:
    """`catalog.products` (unique index on sku) with the outbox in the same transaction."""

    def __init__(self, client: MongoClient, database: str = "catalog") -> None:
        self.client = client
        self.database = client[database]
        self.products = self.database[PRODUCTS]

    def ensure_indexes(self) -> None:
        self.products.create_index("sku", unique=True)
        self.products.create_index([("category", ASCENDING), ("name", ASCENDING)])
        mongo_outbox.ensure_document_indexes(self.database)

    def insert(self, product: Product, event: CloudEvent) -> Product:
        document = _to_document(product)
        document["_id"] = ObjectId()
        try:
            with self.client.start_session() as session, session.start_transaction():
                self.products.insert_one(document, session=session)
                mongo_outbox.add_document(self.database, session, event)
        except DuplicateKeyError:
            raise DuplicateSku(product.sku) from None
        return from_document(document)

    def replace(self, product: Product, expected_version: int, event: CloudEvent) -> None:
        document = _to_document(product)
        with self.client.start_session() as session, session.start_transaction():
            result = self.products.update_one(
                {"sku": product.sku, "version": expected_version}, {"$set": document}, session=session
            )
            if result.matched_count != 1:
                raise VersionConflict(product.sku)
            mongo_outbox.add_document(self.database, session, event)

    def get(self, sku: str) -> Product | None:
        document = self.products.find_one({"sku": sku})
        return from_document(document) if document else None

    def search(self, query: ProductQuery) -> ProductPage:
        conditions = text_filter(query)
        field = query.sort.lstrip("-")
        direction = DESCENDING if query.sort.startswith("-") else ASCENDING
        total = self.products.count_documents(conditions)
        cursor = (
            self.products.find(conditions)
            .sort([(field, direction), ("sku", ASCENDING)])
            .skip(query.page * query.size)
            .limit(query.size)
        )
        return ProductPage([from_document(d) for d in cursor], query.page, query.size, total)

    def all_active(self) -> list[Product]:
        return [from_document(d) for d in self.products.find({"active": True}).sort("sku", ASCENDING)]


def _to_document(product: Product) -> dict[str, Any]:
    return {
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "category": product.category,
        "price": Decimal128(product.price),
        "currency": product.currency,
        "active": product.active,
        "version": product.version,
        "createdAt": product.created_at,
        "updatedAt": product.updated_at,
        "image": product.image,
    }


def from_document(document: dict[str, Any]) -> Product:
    return Product(
        id=str(document["_id"]),
        sku=document["sku"],
        name=document["name"],
        description=document.get("description", ""),
        category=document["category"],
        price=document["price"].to_decimal(),
        currency=document["currency"],
        active=bool(document["active"]),
        version=int(document["version"]),
        created_at=_utc(document["createdAt"]),
        updated_at=_utc(document["updatedAt"]),
        image=document.get("image") or "",
    )


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
        return search_in_memory(self.products.values(), query)

    def all_active(self) -> list[Product]:
        return active_in_memory(self.products.values())


def search_in_memory(products: Iterable[Product], query: ProductQuery) -> ProductPage:
    """The MongoDB query of MongoProductStore.search, over products held in memory."""
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


def active_in_memory(products: Iterable[Product]) -> list[Product]:
    return sorted((p for p in products if p.active), key=lambda p: p.sku)


def _sort_value(product: Product, field: str) -> Decimal | str:
    """Names sort as people read them: "iPhone" between "Galaxy" and "XPS", whatever the case."""
    return product.price if field == "price" else product.name.casefold()
