"""Catalog domain: the product, the commands that change or query it, and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from functions.shared.errors import Conflict, NotFound, PreconditionFailed

DEFAULT_CURRENCY = "USD"
DEFAULT_CATEGORY = "uncategorized"
UPDATABLE = ("name", "description", "category", "price", "currency", "active", "image")


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    description: str
    category: str
    price: Decimal
    currency: str
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime
    id: str = ""
    image: str = ""  # a same-origin path of the product's picture; empty: none

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sku": self.sku,
            "name": self.name,
            "description": self.description,
            "category": self.category,
            "price": self.price,
            "currency": self.currency,
            "active": self.active,
            "version": self.version,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
            "image": self.image or None,
        }

    def as_legacy_json(self) -> dict[str, Any]:
        """The original system's ProductResponse."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "skuCode": self.sku,
            "price": self.price,
        }

    def as_event_data(self) -> dict[str, Any]:
        image = {"image": self.image} if self.image else {}
        return image | {
            "sku": self.sku,
            "name": self.name,
            "description": self.description,
            "category": self.category,
            "price": f"{self.price:.2f}",
            "currency": self.currency,
            "active": self.active,
            "version": self.version,
        }

    @property
    def etag(self) -> str:
        return f'"v{self.version}"'

    def changed(self, changes: dict[str, Any], now: datetime) -> Product:
        return replace(self, **changes, version=self.version + 1, updated_at=now)


@dataclass(frozen=True)
class CreateProduct:
    sku: str
    name: str
    category: str
    price: Decimal
    description: str = ""
    currency: str = DEFAULT_CURRENCY
    active: bool = True
    image: str = ""


@dataclass(frozen=True)
class UpdateProduct:
    sku: str
    changes: dict[str, Any]
    if_match: str | None = None


@dataclass(frozen=True)
class ProductQuery:
    text: str | None = None
    category: str | None = None
    page: int = 0
    size: int = 20
    sort: str = "name"
    include_inactive: bool = False


@dataclass(frozen=True)
class ProductPage:
    items: list[Product]
    page: int
    size: int
    total: int = field(default=0)

    def as_json(self) -> dict[str, Any]:
        return {
            "items": [p.as_json() for p in self.items],
            "page": self.page,
            "size": self.size,
            "totalItems": self.total,
            "totalPages": (self.total + self.size - 1) // self.size,
        }


class DuplicateSku(Conflict):
    """A product with this SKU exists."""

    def __init__(self, sku: str) -> None:
        super().__init__(f"a product with sku {sku!r} exists", sku=sku)


class VersionConflict(Conflict):
    """The product changed since the caller read it."""

    def __init__(self, sku: str) -> None:
        super().__init__(f"product {sku!r} changed while it was being updated; read it again and retry")


class ProductNotFound(NotFound):
    def __init__(self, sku: str) -> None:
        super().__init__(f"no product with sku {sku!r}")


class StaleVersion(PreconditionFailed):
    """If-Match names a version that is no longer the current one."""

    def __init__(self, if_match: str, current: str) -> None:
        super().__init__(f"If-Match {if_match} does not name the current version {current}")
