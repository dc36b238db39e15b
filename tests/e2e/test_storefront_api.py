"""What the storefront and the admin console call, through the gateway: stock levels, low stock, restock of
catalog products only, checkout details, orders by day, one dead letter, product pictures."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.conftest import eventually, problem_of
from tests.e2e.conftest import Shop
from tests.e2e.test_gateway import login

pytestmark = pytest.mark.slow
ADDRESS = {"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London", "postalCode": "SW1Y 4JH",
           "country": "GB"}  # fmt: skip


def test_one_stock_level_is_public_and_an_unknown_sku_is_a_404(shop: Shop) -> None:
    sku = shop.product(units=7, threshold=3)
    level = requests.get(f"{shop.stack.url}/api/inventory/{sku}", timeout=30)
    assert level.status_code == 200, level.text
    assert level.json() == {"skuCode": sku, "available": 7, "lowStockThreshold": 3}
    missing = requests.get(f"{shop.stack.url}/api/inventory/no_such_sku_{uuid.uuid4().hex[:6]}", timeout=30)
    assert missing.status_code == 404
    problem_of(missing)


def test_the_low_stock_list_is_for_admins(shop: Shop) -> None:
    api = shop.stack.url
    low = shop.product(units=2, threshold=5)
    plenty = shop.product(units=50, threshold=5)
    refused = requests.get(f"{api}/api/inventory?lowStock=true", headers=login(shop.stack, "jane"), timeout=30)
    assert refused.status_code == 403
    problem_of(refused)
    admin = login(shop.stack, "admin")
    listing = requests.get(f"{api}/api/inventory?lowStock=true&size=100", headers=admin, timeout=30)
    assert listing.status_code == 200, listing.text
    skus = [level["skuCode"] for level in listing.json()["items"]]
    assert low in skus and plenty not in skus
    assert all(level["available"] < level["lowStockThreshold"] for level in listing.json()["items"])
    paged_check = requests.get(f"{api}/api/inventory?skuCode={low}&page=1", timeout=30)
    assert paged_check.status_code == 400
    problem_of(paged_check)


def test_restock_keeps_stock_for_catalog_products_only(shop: Shop) -> None:
    api = shop.stack.url
    admin = login(shop.stack, "admin")
    typo = f"iphone_15x_{uuid.uuid4().hex[:6]}"
    refused = requests.put(f"{api}/api/inventory/{typo}", json={"quantity": 5}, headers=admin, timeout=30)
    assert refused.status_code == 404
    assert "catalog" in problem_of(refused)["detail"]
    assert shop.sql("inventory", "SELECT count(*) FROM stock WHERE sku = %s", typo) == [(0,)]

    sku = f"fresh_{uuid.uuid4().hex[:8]}"
    created = requests.post(
        f"{api}/api/products",
        json={"sku": sku, "name": "Fresh", "category": "tests", "price": 3, "image": "/storefront/images/x.svg"},
        headers=admin,
        timeout=30,
    )
    assert created.status_code == 201 and created.json()["image"] == "/storefront/images/x.svg"
    # at once, perhaps before inventory-track made its row: the catalog vouches for it
    stocked = requests.put(f"{api}/api/inventory/{sku}", json={"quantity": 5}, headers=admin, timeout=30)
    assert stocked.status_code in (200, 201), stocked.text
    assert stocked.json()["available"] == 5


def test_a_picture_from_elsewhere_is_refused_at_the_edge(shop: Shop) -> None:
    sku = shop.product(units=1)
    admin = login(shop.stack, "admin")
    bad = requests.patch(
        f"{shop.stack.url}/api/products/{sku}", json={"image": "//evil.example/x.svg"}, headers=admin, timeout=30
    )
    assert bad.status_code == 400
    problem_of(bad)
    assert requests.get(f"{shop.stack.url}/api/products/{sku}", timeout=30).json()["image"] is None


def test_checkout_details_are_kept_shown_and_mailed(shop: Shop) -> None:
    api = shop.stack.url
    jane = login(shop.stack, "jane")
    sku = shop.product(units=5)
    contact = {"name": "Jane Doe", "email": f"jane.{uuid.uuid4().hex[:6]}@example.org", "phone": "+44 20 7946 0000"}
    body = {"items": [{"skuCode": sku, "quantity": 2}], "contact": contact, "shippingAddress": ADDRESS}
    bad = {**body, "shippingAddress": {**ADDRESS, "country": "Great Britain"}}
    refused = requests.post(f"{api}/api/orders", json=bad, headers=jane, timeout=30)
    assert refused.status_code == 400
    assert any(e["field"] == "/shippingAddress/country" for e in problem_of(refused)["errors"])
    assert shop.available(sku) == 5  # nothing held

    placed = requests.post(f"{api}/api/orders", json=body, headers=jane, timeout=30)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["shippingAddress"] == ADDRESS and order["contact"] == contact
    shown = requests.get(f"{api}/api/orders/{order['orderNumber']}", headers=jane, timeout=30).json()
    assert shown["shippingAddress"] == ADDRESS
    (mail,) = shop.wait_for_mail(order["orderNumber"])
    assert mail["To"] == contact["email"]
    text = mail.get_content()
    assert "12 St James's Square" in text and "SW1Y 4JH London" in text and "+44 20 7946 0000" in text


def test_an_admin_lists_orders_by_day(shop: Shop) -> None:
    api = shop.stack.url
    sku = shop.product(units=5)
    jane, admin = login(shop.stack, "jane"), login(shop.stack, "admin")
    placed = requests.post(
        f"{api}/api/orders", json={"items": [{"skuCode": sku, "quantity": 1}]}, headers=jane, timeout=30
    )
    number = placed.json()["orderNumber"]
    today = datetime.now(UTC).date()

    def numbers(query: str) -> list[str]:
        answer = requests.get(f"{api}/api/orders?size=100&{query}", headers=admin, timeout=30)
        assert answer.status_code == 200, answer.text
        return [o["orderNumber"] for o in answer.json()["items"]]

    assert number in numbers(f"from={today}&to={today}&email=jane@example.com")
    assert number not in numbers(f"to={today - timedelta(days=1)}")
    assert number not in numbers(f"from={today + timedelta(days=1)}")
    backwards = requests.get(f"{api}/api/orders?from={today}&to={today - timedelta(days=1)}", headers=admin, timeout=30)
    assert backwards.status_code == 400
    problem_of(backwards)
    not_a_day = requests.get(f"{api}/api/orders?from=2026-02-30", headers=admin, timeout=30)
    assert not_a_day.status_code == 400


def test_an_admin_inspects_one_dead_letter(shop: Shop) -> None:
    event_id = str(uuid.uuid4())
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "/shop/tests",
        "ce-type": "com.shop.order.placed",
        "ce-subject": "ORD-TEST-1",
        "ce-knativeerrordest": "http://notification-send.shop.svc.cluster.local",
        "ce-knativeerrorcode": "422",
        "Content-Type": "application/json",
    }
    kept = shop.ingress.call("dead-letter", "POST", "/", headers=headers, data=b'{"orderNumber": "ORD-TEST-1"}')
    assert kept.status_code == 202, kept.text
    admin = login(shop.stack, "admin")
    one = requests.get(f"{shop.stack.url}/api/deadletters/{kept.json()['id']}", headers=admin, timeout=30)
    assert one.status_code == 200, one.text
    assert one.json()["eventId"] == event_id and one.json()["errorCode"] == 422
    jane = requests.get(
        f"{shop.stack.url}/api/deadletters/{kept.json()['id']}", headers=login(shop.stack, "jane"), timeout=30
    )
    assert jane.status_code == 403
    missing = requests.get(f"{shop.stack.url}/api/deadletters/999999999", headers=admin, timeout=30)
    assert missing.status_code == 404
    problem_of(missing)


def test_pictures_are_served_with_caching(shop: Shop) -> None:
    api = shop.stack.url
    image = "/storefront/images/products/pixel_8.svg"  # as local/seed.py names it (the test stack seeds nothing)
    picture = requests.get(api + image, timeout=30)
    assert picture.status_code == 200 and picture.headers["Content-Type"].startswith("image/svg+xml")
    assert "max-age" in picture.headers["Cache-Control"] and picture.headers["ETag"]
    again = requests.get(api + image, headers={"If-None-Match": picture.headers["ETag"]}, timeout=30)
    assert again.status_code == 304 and again.content == b""


def test_the_live_event_flow_shows_each_event_and_how_its_deliveries_went(shop: Shop) -> None:
    sku = shop.product(units=5)
    number = shop.order(shop.people.customer(f"flow-{uuid.uuid4().hex[:6]}"), (sku, 1)).json()["orderNumber"]

    def placed() -> dict[str, object] | None:
        flow = requests.get(f"{shop.stack.url}/_local/events?limit=200", timeout=30).json()["events"]
        found = next((e for e in flow if e["subject"] == number and e["type"] == "com.shop.order.placed"), None)
        done = found and {d["outcome"] for d in found["deliveries"]} == {"delivered"} and len(found["deliveries"]) == 2
        return found if done else None

    event = eventually(placed)
    subscribers = sorted(d["subscriber"].split("/")[2].split(".")[0] for d in event["deliveries"])  # type: ignore[union-attr]
    assert subscribers == ["inventory-confirm", "notification-send"]
    bad = requests.get(f"{shop.stack.url}/_local/events?limit=0", timeout=30)
    assert bad.status_code == 400
    problem_of(bad)
