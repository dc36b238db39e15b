"""Inventory domain: stock levels, reservations and the commands that move stock."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from functions.shared.errors import Conflict, NotFound, Rejected

MAX_LINE_QUANTITY = 1000
MAX_STOCK = 1_000_000
DEFAULT_LOW_STOCK_THRESHOLD = 5


class ReservationStatus(StrEnum):
    HELD = "HELD"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int

    def as_json(self) -> dict[str, Any]:
        return {"skuCode": self.sku, "quantity": self.quantity}


@dataclass(frozen=True)
class ReserveStock:
    """Hold every line or none, for one order number (idempotent per order number)."""

    order_number: str
    lines: tuple[Line, ...]

    @property
    def digest(self) -> str:
        canonical = ";".join(f"{line.sku}={line.quantity}" for line in sorted(self.lines, key=lambda x: x.sku))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ReleaseStock:
    order_number: str
    reason: str


@dataclass(frozen=True)
class ConfirmReservation:
    order_number: str


@dataclass(frozen=True)
class Restock:
    sku: str
    quantity: int
    mode: str  # "set" or "add"
    low_stock_threshold: int | None = None


@dataclass(frozen=True)
class StockQuery:
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class LowStockQuery:
    page: int = 0
    size: int = 20


@dataclass(frozen=True)
class StockLevel:
    sku: str
    available: int
    low_stock_threshold: int

    def as_json(self) -> dict[str, Any]:
        return {"skuCode": self.sku, "available": self.available, "lowStockThreshold": self.low_stock_threshold}


@dataclass(frozen=True)
class Reservation:
    order_number: str
    status: ReservationStatus
    lines: tuple[Line, ...]
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "orderNumber": self.order_number,
            "status": self.status.value,
            "items": [line.as_json() for line in self.lines],
            "createdAt": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class ReserveOutcome:
    reservation: Reservation
    created: bool  # False: an identical earlier request, answered again
    levels_after: tuple[StockLevel, ...] = ()
    levels_before: tuple[StockLevel, ...] = ()


@dataclass(frozen=True)
class Shortage:
    sku: str
    requested: int
    available: int

    def as_json(self) -> dict[str, Any]:
        return {"skuCode": self.sku, "requested": self.requested, "available": self.available}


class InsufficientStock(Conflict):
    """Some lines ask for more than is available: nothing was held."""

    slug = "insufficient-stock"
    title = "Insufficient stock"

    def __init__(self, shortages: list[Shortage]) -> None:
        super().__init__(
            "not enough stock for " + ", ".join(s.sku for s in shortages),
            shortages=[s.as_json() for s in shortages],
        )
        self.shortages = shortages


class UnknownSkus(Exception):
    """The store keeps no stock for these SKUs (each use case says what that means for it)."""

    def __init__(self, skus: list[str]) -> None:
        super().__init__(", ".join(skus))
        self.skus = skus


class UnknownSku(NotFound):
    """A stock level was asked of a SKU the inventory does not keep."""

    slug = "unknown-sku"
    title = "Unknown SKU"


class NotInCatalog(NotFound):
    """A restock names a SKU the catalog does not have: stock is kept for catalog products only."""

    slug = "unknown-product"
    title = "Unknown product"


class UnstockedItems(Rejected):
    """An order's lines name SKUs the inventory does not keep: it cannot be reserved."""

    slug = "unknown-sku"
    title = "Unknown SKU"


class ReservationConflict(Conflict):
    """The order number was used for other lines, or its reservation was released."""
