"""inventory's client of other services: order-get, asked what became of an order by the reservation sweeper."""

from __future__ import annotations

from functions.inventory.service import OrderState
from functions.shared import identity
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
