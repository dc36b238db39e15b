"""order-place's clients of other services: catalog prices (product-get) and stock (inventory-reserve/-release)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol

from functions.orders.model import PricedProduct, RequestedLine
from functions.shared.errors import FieldError, Refused
from functions.shared.service_client import Reply, ServiceClient, UpstreamUnavailable


class Catalog(Protocol):
    def product(self, sku: str) -> PricedProduct | None:
        """The product, None if the catalog has no such SKU; raises UpstreamUnavailable."""


class Inventory(Protocol):
    def reserve(self, order_number: str, lines: tuple[RequestedLine, ...]) -> None:
        """Holds every line, or raises Refused (409 short, 422 unknown) or UpstreamUnavailable."""

    def release(self, order_number: str) -> None:
        """Gives the order's stock back (compensation); idempotent."""


class HttpCatalog:
    """product-get over HTTP; GET is idempotent, so it is retried within the timeout."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def product(self, sku: str) -> PricedProduct | None:
        reply = self.client.call("GET", f"/api/products/{sku}", idempotent=True)
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise UpstreamUnavailable(self.client.service, f"answered {reply.status}")
        body = reply.json()
        return PricedProduct(body["sku"], body["name"], Decimal(str(body["price"])), body["currency"], body["active"])


class HttpInventory:
    """inventory-reserve and inventory-release over HTTP, with the caller's identity forwarded."""

    def __init__(self, reserve: ServiceClient, release: ServiceClient, headers: Mapping[str, str]) -> None:
        self.reserve_client = reserve
        self.release_client = release
        self.headers = headers

    def reserve(self, order_number: str, lines: tuple[RequestedLine, ...]) -> None:
        body = {"orderNumber": order_number, "items": [{"skuCode": x.sku, "quantity": x.quantity} for x in lines]}
        # Reserve is idempotent per order number: retrying it is safe, and it is retried.
        reply = self.reserve_client.call("POST", "/reservations", body=body, headers=self.headers, idempotent=True)
        if reply.status in (200, 201):
            return
        raise _refusal(reply)

    def release(self, order_number: str) -> None:
        reply = self.release_client.call(
            "POST", f"/reservations/{order_number}/release", headers=self.headers, idempotent=True
        )
        if reply.status != 200:
            raise UpstreamUnavailable(self.release_client.service, f"release answered {reply.status}")


def _refusal(reply: Reply) -> Refused:
    """An upstream 4xx problem, passed on to our caller (its detail is about their request)."""
    try:
        body = reply.json() or {}
    except ValueError:
        body = {}
    extensions = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail", "instance", "errors")}
    errors = [FieldError(e["field"], e["message"]) for e in body.get("errors", []) if "field" in e]
    slug = str(body.get("type", "/problems/upstream")).rsplit("/", 1)[-1]
    return Refused(
        reply.status, body.get("title", "Inventory refused"), body.get("detail", ""), slug, errors=errors, **extensions
    )
