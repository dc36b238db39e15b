"""The load generator (./taskw load) for 30 s against the local shop: every route answered, no 5xx, no failure."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Shop
from tests.load.__main__ import run

pytestmark = pytest.mark.slow


def test_thirty_seconds_of_shoppers_and_an_admin(shop: Shop) -> None:
    for _ in range(4):
        shop.product(units=100_000, price=19.99)  # whatever else the catalog holds, these never run out
    report = run(shop.stack.url, users=6, spawn_rate=3, seconds=30)
    print("\n" + report.table())
    assert report.routes, report.output[-3000:]
    assert report.failures == 0, report.output[-3000:]
    assert report.server_errors == 0, report.statuses
    answered = {figures.route for figures in report.routes if figures.requests > 0}
    for route in ("GET /api/products", "GET /api/products/{sku}", "GET /api/inventory/{sku}",
                  "POST /api/orders (place)", "GET /api/inventory?lowStock=true", "PUT /api/inventory/{sku} (restock)",
                  "POST sign-in", "POST token"):  # fmt: skip
        assert route in answered, (route, sorted(answered))
    placed = report.statuses["/api/orders (place)"]
    assert placed.get("201", 0) > 0, placed
