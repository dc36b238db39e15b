"""Orders domain: the order, the commands that place, read and cancel it, and its errors."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from functions.shared.errors import Conflict, NotFound, Rejected

MAX_LINES = 50
MAX_LINE_QUANTITY = 1000


class OrderStatus(StrEnum):
    PLACED = "PLACED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class Customer:
    id: str
    email: str
    first_name: str
    last_name: str


@dataclass(frozen=True)
class Contact:
    """Who to tell about an order, as given at checkout."""

    email: str
    name: str = ""
    phone: str = ""

    def as_json(self) -> dict[str, str]:
        return {k: v for k, v in {"name": self.name, "email": self.email, "phone": self.phone}.items() if v}

    @classmethod
    def of(cls, body: dict[str, Any]) -> Contact:
        return cls(body["email"], body.get("name", ""), body.get("phone", ""))


@dataclass(frozen=True)
class Address:
    """Where an order is shipped."""

    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str = ""

    def as_json(self) -> dict[str, str]:
        body = {"name": self.name, "line1": self.line1, "line2": self.line2, "city": self.city}
        body |= {"postalCode": self.postal_code, "country": self.country}
        return {k: v for k, v in body.items() if v}

    @classmethod
    def of(cls, body: dict[str, Any]) -> Address:
        return cls(
            body["name"], body["line1"], body["city"], body["postalCode"], body["country"], body.get("line2", "")
        )


@dataclass(frozen=True)
class RequestedLine:
    sku: str
    quantity: int


@dataclass(frozen=True)
class PlaceOrder:
    customer: Customer
    lines: tuple[RequestedLine, ...]
    idempotency_key: str | None = None
    legacy: bool = False
    contact: Contact | None = None
    shipping_address: Address | None = None

    @property
    def request_hash(self) -> str:
        """What "the same request" means for Idempotency-Key: same lines, same shape, same details."""
        request: dict[str, Any] = {"lines": [[line.sku, line.quantity] for line in self.lines], "legacy": self.legacy}
        if self.contact:
            request["contact"] = self.contact.as_json()
        if self.shipping_address:
            request["shippingAddress"] = self.shipping_address.as_json()
        canonical = json.dumps(request, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PricedProduct:
    sku: str
    name: str
    price: Decimal
    currency: str
    active: bool


@dataclass(frozen=True)
class OrderLine:
    sku: str
    name: str
    quantity: int
    unit_price: Decimal

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity

    def as_json(self) -> dict[str, Any]:
        return {
            "skuCode": self.sku,
            "name": self.name,
            "quantity": self.quantity,
            "unitPrice": self.unit_price,
            "lineTotal": self.line_total,
        }

    def as_event_data(self) -> dict[str, Any]:
        return {
            "skuCode": self.sku,
            "name": self.name,
            "quantity": self.quantity,
            "unitPrice": f"{self.unit_price:.2f}",
            "lineTotal": f"{self.line_total:.2f}",
        }


@dataclass(frozen=True)
class Order:
    order_number: str
    customer: Customer
    status: OrderStatus
    lines: tuple[OrderLine, ...]
    currency: str
    placed_at: datetime
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    contact: Contact | None = None
    shipping_address: Address | None = None

    @property
    def total(self) -> Decimal:
        return sum((line.line_total for line in self.lines), Decimal("0.00"))

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "orderNumber": self.order_number,
            "status": self.status.value,
            "items": [line.as_json() for line in self.lines],
            "total": self.total,
            "currency": self.currency,
            "placedAt": self.placed_at.isoformat(),
            "customer": {
                "id": self.customer.id,
                "email": self.customer.email,
                "firstName": self.customer.first_name,
                "lastName": self.customer.last_name,
            },
        }
        if self.cancelled_at:
            body["cancelledAt"] = self.cancelled_at.isoformat()
            body["cancelReason"] = self.cancel_reason
        return body | self._details()

    def _details(self) -> dict[str, Any]:
        """Contact and shipping address, when the order has them."""
        details: dict[str, Any] = {}
        if self.contact:
            details["contact"] = self.contact.as_json()
        if self.shipping_address:
            details["shippingAddress"] = self.shipping_address.as_json()
        return details

    def placed_event_data(self) -> dict[str, Any]:
        return {
            "orderNumber": self.order_number,
            "customerId": self.customer.id,
            "email": self.customer.email,
            "firstName": self.customer.first_name,
            "lastName": self.customer.last_name,
            "items": [line.as_event_data() for line in self.lines],
            "total": f"{self.total:.2f}",
            "currency": self.currency,
            "placedAt": self.placed_at.isoformat(),
        } | self._details()

    def cancelled_event_data(self) -> dict[str, Any]:
        assert self.cancelled_at is not None
        return {
            "orderNumber": self.order_number,
            "customerId": self.customer.id,
            "email": self.customer.email,
            "firstName": self.customer.first_name,
            "lastName": self.customer.last_name,
            "reason": self.cancel_reason or "",
            "total": f"{self.total:.2f}",
            "currency": self.currency,
            "cancelledAt": self.cancelled_at.isoformat(),
        }


@dataclass(frozen=True)
class CancelOrder:
    order_number: str
    reason: str


@dataclass(frozen=True)
class OrderQuery:
    customer_id: str | None  # None: every customer (admin)
    status: OrderStatus | None = None
    email: str | None = None
    page: int = 0
    size: int = 20
    placed_from: date | None = None  # placed on or after this day (UTC)
    placed_to: date | None = None  # placed on or before this day (UTC)


@dataclass(frozen=True)
class OrderPage:
    items: list[Order]
    page: int
    size: int
    total: int

    def as_json(self) -> dict[str, Any]:
        return {
            "items": [o.as_json() for o in self.items],
            "page": self.page,
            "size": self.size,
            "totalItems": self.total,
            "totalPages": (self.total + self.size - 1) // self.size,
        }


@dataclass(frozen=True)
class StoredResponse:
    """The answer given to the first request with an Idempotency-Key."""

    status: int
    body: dict[str, Any]
    order_number: str


class KeyInUse(Rejected):
    """The Idempotency-Key was sent with another request body."""

    slug = "idempotency-key-reused"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with a different request; use a new key for a new order")


class KeyInFlight(Conflict):
    """A request with this Idempotency-Key is still being processed."""

    slug = "idempotency-key-in-flight"
    title = "Request in progress"

    def __init__(self) -> None:
        super().__init__("a request with this Idempotency-Key is still being processed", retry_after=1)


class OrderNotCancellable(Conflict):
    def __init__(self, order_number: str, status: OrderStatus) -> None:
        super().__init__(
            f"order {order_number!r} is {status.value}; only PLACED orders can be cancelled", orderStatus=status.value
        )
        self.status = status


class OrderNotFound(NotFound):
    def __init__(self, order_number: str) -> None:
        super().__init__(f"no order {order_number!r}")


class UnknownProducts(Rejected):
    """Lines name products the catalog does not have, or does not sell."""

    slug = "unknown-product"
    title = "Unknown or unavailable products"


class MixedCurrencies(Rejected):
    def __init__(self, currencies: list[str]) -> None:
        super().__init__(f"items are priced in several currencies {currencies}; order them apart")
