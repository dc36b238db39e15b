"""Product storage: the Protocols the service needs and their MongoDB adapter (reads are served by view.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from bson.decimal128 import Decimal128
from bson.objectid import ObjectId
from cloudevents.http import CloudEvent
from pymongo import ASCENDING, MongoClient
from pymongo.errors import DuplicateKeyError

from functions.catalog.model import DuplicateSku, Product, ProductPage, ProductQuery, VersionConflict
from functions.shared import mongo_outbox

PRODUCTS = "products"


class ProductReader(Protocol):
    """What product-get and product-list read from: the catalog view (view.py)."""

    def get(self, sku: str) -> Product | None: ...

    def search(self, query: ProductQuery) -> ProductPage: ...

    def all_active(self) -> list[Product]: ...


class ProductStore(Protocol):
    """Where products are written (and read back for an update): MongoDB."""

    def get(self, sku: str) -> Product | None: ...

    def insert(self, product: Product, event: CloudEvent) -> Product:
        """Stores a new product and its event atomically; DuplicateSku if the SKU exists."""

    def replace(self, product: Product, expected_version: int, event: CloudEvent) -> None:
        """Stores a new version and its event atomically; VersionConflict if it moved on."""


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
