"""End-to-end helpers: products made through the API, mail read from the local SMTP server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.conftest import Ingress, People, eventually


def quiet(stack: Any, timeout: float = 60) -> None:
    """Waits until every Trigger has settled (delivered, retried to the end or dead-lettered) every
    event the broker took before this call: whatever those events cause has happened by then."""
    eventing = stack.eventing
    assert eventing is not None
    moment = time.time()
    try:
        eventually(lambda: (settled := eventing.replay.settled_through()) is not None and settled > moment, timeout)
    except AssertionError as error:
        consumers = [c.state() for c in (*eventing.replay.triggers, *eventing.replay.sources)]
        raise AssertionError(f"{error}; consumers: {consumers}") from None


@dataclass
class Shop:
    stack: Any
    ingress: Ingress
    people: People

    def product(self, units: int, price: float = 25.0, threshold: int = 0) -> str:
        """A new product, created and stocked through the API (product.created creates its stock row)."""
        sku = f"e2e_{uuid.uuid4().hex[:12]}"
        created = self.ingress.call(
            "product-create",
            "POST",
            "/api/products",
            json={"sku": sku, "name": f"Product {sku}", "category": "tests", "price": price},
            headers=self.people.admin(),
        )
        assert created.status_code == 201, created.text
        stocked = self.ingress.call(
            "inventory-restock",
            "PUT",
            f"/api/inventory/{sku}",
            json={"quantity": units, "lowStockThreshold": threshold},
            headers=self.people.admin(),
        )
        assert stocked.status_code in (200, 201), stocked.text
        return sku

    def available(self, sku: str) -> int:
        rows = self.sql("inventory", "SELECT available FROM stock WHERE sku = %s", sku)
        return int(rows[0][0])

    def order(self, customer: dict[str, str], *lines: tuple[str, int], key: str | None = None) -> Any:
        headers = {**customer, **({"Idempotency-Key": key} if key else {})}
        body = {"items": [{"skuCode": sku, "quantity": quantity} for sku, quantity in lines]}
        return self.ingress.call("order-place", "POST", "/api/orders", json=body, headers=headers)

    def sql(self, database: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.stack.database_urls[database], autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def mails_about(self, text: str) -> list[Any]:
        return [m for m in self.stack.smtp.messages() if text in str(m["Subject"])]

    def wait_for_mail(self, text: str, count: int = 1, timeout: float = 30) -> list[Any]:
        """The mails about `text`, once `count` have arrived and the pipeline is quiet: exactly `count`
        (a duplicate would have arrived by then, and fails here)."""
        eventually(lambda: len(self.mails_about(text)) >= count, timeout)
        self.quiet()
        found = self.mails_about(text)
        assert len(found) == count, [str(m["Subject"]) for m in found]
        return found

    def quiet(self, timeout: float = 60) -> None:
        quiet(self.stack, timeout)

    def fire(self, ping_source: str) -> dict[str, Any]:
        response = self.ingress.session.post(f"{self.stack.url}/_local/pingsources/shop/{ping_source}", timeout=60)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture(scope="session")
def shop(stack: Any, ingress: Ingress, people: People) -> Shop:
    return Shop(stack, ingress, people)


@pytest.fixture
def customer(people: People) -> Callable[..., dict[str, str]]:
    def make(**kwargs: Any) -> dict[str, str]:
        subject = f"cust-{uuid.uuid4().hex[:8]}"
        return people.customer(
            subject,
            email=kwargs.get("email", f"{subject}@example.com"),
            first=kwargs.get("first", "Ada"),
            last=kwargs.get("last", "Lovelace"),
        )

    return make
