"""inventory's clients of other services: order-get, asked what became of an order by the reservation sweeper;
product-get, asked by a restock whether a SKU it keeps no stock for yet is a catalog product."""

from __future__ import annotations

from functions.inventory.service import OrderState
from functions.shared import identity
from functions.shared.errors import Unavailable
from functions.shared.service_client import ServiceClient, UpstreamUnavailable


class HttpOrderStates:
    """order-get with a service identity: PLACED/CANCELLED from the order, MISSING on 404, None if unsure."""

    def __init__(self, client: ServiceClient, secret: str) -> None:
        self.client = client
        self.secret = secret

    def __call__(self, order_number: str) -> OrderState | None:
        token = identity.sign(identity.Identity("service:inventory-expire", roles=frozenset({"service"})), self.secret)
        try:
            reply = self.client.call(
                "GET", f"/api/orders/{order_number}", headers={identity.HEADER: token}, idempotent=True
            )
        except UpstreamUnavailable:
            return None
        if reply.status == 404:
            return OrderState.MISSING
        if reply.status == 200:
            return OrderState(reply.json()["status"])
        return None


class HttpCatalog:
    """product-get: True for a product (active or not), False on 404; Unavailable when the catalog cannot say."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def __call__(self, sku: str) -> bool:
        try:
            reply = self.client.call("GET", f"/api/products/{sku}", idempotent=True)
        except UpstreamUnavailable as error:
            raise Unavailable(
                f"the catalog cannot say whether {sku!r} exists ({error.reason}); nothing was changed",
                retry_after=error.retry_after,
            ) from None
        if reply.status == 404:
            return False
        if reply.status != 200:
            raise Unavailable(f"the catalog answered {reply.status} about {sku!r}; nothing was changed")
        return True
