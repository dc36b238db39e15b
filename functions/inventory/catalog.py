"""Asks the catalog whether a product exists, before inventory-restock keeps stock for a SKU it has not seen."""

from __future__ import annotations

from functions.shared import problems
from functions.shared.services import ServiceClient, UpstreamUnavailable


class HttpCatalog:
    """product-get: True for a product (active or not), False on 404; a 503 problem when the catalog cannot say."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def __call__(self, sku: str) -> bool:
        try:
            reply = self.client.call("GET", f"/api/products/{sku}", idempotent=True)
        except UpstreamUnavailable as error:
            raise problems.unavailable(
                f"the catalog cannot say whether {sku!r} exists ({error.reason}); nothing was changed",
                error.retry_after,
            ) from None
        if reply.status == 404:
            return False
        if reply.status != 200:
            raise problems.unavailable(f"the catalog answered {reply.status} about {sku!r}; nothing was changed")
        return True
