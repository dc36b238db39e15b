"""The order saga end to end: ingress -> order-place -> inventory -> Kafka -> Broker -> Triggers -> email."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from functions.shared import events
from tests.conftest import EVENTS_DIR, eventually, problem_of
from tests.e2e.conftest import Shop


def test_placing_an_order_holds_stock_and_emails_the_customer(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=10, price=19.99)
    jane = customer(email="jane.doe@example.com", first="Jane", last="Doe")
    placed = shop.order(jane, (sku, 3))
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "PLACED" and order["total"] == 59.97 and order["items"][0]["unitPrice"] == 19.99
    assert placed.headers["Location"] == f"/api/orders/{order['orderNumber']}"
    assert shop.available(sku) == 7
    mail = shop.wait_for_mail(order["orderNumber"])[0]
    assert mail["Subject"] == f"Your Order with OrderNumber {order['orderNumber']} is placed successfully"
    assert mail["To"] == "jane.doe@example.com" and "Jane Doe" in mail.get_content()
    assert "59.97" in mail.get_content()
    # The runtime shows captured mail at a local URL, newest first.
    shown = shop.ingress.session.get(f"{shop.ingress.url}/_local/mail", timeout=30).json()["messages"]
    ours = [m for m in shown if m["subject"] == mail["Subject"]]
    assert len(ours) == 1 and ours[0]["to"] == "jane.doe@example.com", shown[:3]
    text = shop.ingress.session.get(shop.ingress.url + ours[0]["url"], timeout=30)
    assert text.headers["Content-Type"].startswith("text/plain") and "59.97" in text.text
    raw = shop.ingress.session.get(shop.ingress.url + ours[0]["url"] + "?raw=1", timeout=30)
    assert raw.headers["Content-Type"].startswith("message/rfc822") and order["orderNumber"].encode() in raw.content
    missing = shop.ingress.session.get(f"{shop.ingress.url}/_local/mail/..%2Fidentity-secret", timeout=30)
    assert missing.status_code == 404 and missing.headers["Content-Type"].startswith("application/problem+json")
    # inventory-confirm received com.shop.order.placed: the hold became a committed reservation.
    eventually(
        lambda: (
            shop.sql("inventory", "SELECT status FROM reservations WHERE order_number = %s", order["orderNumber"])
            == [("COMMITTED",)]
        )
    )
    fetched = shop.ingress.call("order-get", "GET", f"/api/orders/{order['orderNumber']}", headers=jane)
    assert fetched.status_code == 200 and fetched.json()["orderNumber"] == order["orderNumber"]
    listed = shop.ingress.call("order-list", "GET", "/api/orders", headers=jane).json()
    assert [o["orderNumber"] for o in listed["items"]] == [order["orderNumber"]]


def test_cancelling_gives_the_stock_back_and_emails_the_customer(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=5)
    ada = customer()
    number = shop.order(ada, (sku, 2)).json()["orderNumber"]
    someone_else = shop.ingress.call("order-cancel", "POST", f"/api/orders/{number}/cancel", headers=customer())
    assert someone_else.status_code == 404
    problem_of(someone_else)
    cancelled = shop.ingress.call(
        "order-cancel", "POST", f"/api/orders/{number}/cancel", json={"reason": "changed my mind"}, headers=ada
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    eventually(lambda: shop.available(sku) == 5)
    mail = shop.wait_for_mail(f"{number} has been cancelled")[0]
    assert "changed my mind" in mail.get_content()
    again = shop.ingress.call("order-cancel", "POST", f"/api/orders/{number}/cancel", headers=ada)
    assert again.status_code == 409 and problem_of(again)["status"] == 409
    assert shop.available(sku) == 5


def test_customers_page_through_their_own_orders_and_admins_filter_all(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=20)
    suffix = uuid.uuid4().hex[:8]
    ada = customer(email=f"ada-{suffix}@example.com")
    bob = customer(email=f"bob-{suffix}@example.com")
    ada_orders = [shop.order(ada, (sku, 1)).json()["orderNumber"] for _ in range(3)]
    bob_order = shop.order(bob, (sku, 1)).json()["orderNumber"]
    cancel = shop.ingress.call("order-cancel", "POST", f"/api/orders/{ada_orders[0]}/cancel", headers=ada)
    assert cancel.status_code == 200, cancel.text

    def listing(who: dict[str, str], **params: Any) -> dict[str, Any]:
        answer = shop.ingress.call("order-list", "GET", "/api/orders", params=params, headers=who)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def numbers(page: dict[str, Any]) -> list[str]:
        return [o["orderNumber"] for o in page["items"]]

    # A customer sees only their own orders, newest first, in pages.
    assert numbers(listing(ada)) == ada_orders[::-1]
    first, second = listing(ada, size=2, page=0), listing(ada, size=2, page=1)
    assert (first["totalItems"], first["totalPages"]) == (3, 2)
    assert numbers(first) + numbers(second) == ada_orders[::-1]
    assert numbers(listing(ada, status="CANCELLED")) == [ada_orders[0]]
    assert numbers(listing(bob)) == [bob_order]
    # Filtering by someone else is for admins only.
    bob_email = {"email": f"bob-{suffix}@example.com"}
    refused = shop.ingress.call("order-list", "GET", "/api/orders", params=bob_email, headers=ada)
    assert refused.status_code == 403 and problem_of(refused)["status"] == 403
    # An admin sees everyone's, filtered by customer, email (any case) and status.
    admin = shop.people.admin()
    assert numbers(listing(admin, email=f"BOB-{suffix}@example.com")) == [bob_order]
    ada_id = listing(ada)["items"][0]["customer"]["id"]
    assert set(numbers(listing(admin, customer=ada_id, size=100))) == set(ada_orders)
    assert numbers(listing(admin, customer=ada_id, status="PLACED")) == ada_orders[:0:-1]
    everyone = listing(admin, size=100)  # newest first: ours are the latest
    assert everyone["totalItems"] >= 4 and {bob_order, *ada_orders} <= set(numbers(everyone))
    for bad in ({"status": "SHIPPED"}, {"size": "0"}, {"page": "-1"}, {"size": "many"}):
        answer = shop.ingress.call("order-list", "GET", "/api/orders", params=bad, headers=admin)
        assert answer.status_code == 400, (bad, answer.text)
        assert problem_of(answer)["errors"][0]["field"] == next(iter(bad))


def test_the_same_event_delivered_twice_sends_one_email(shop: Shop) -> None:
    golden = json.loads((EVENTS_DIR / "com.shop.order.placed.json").read_text())
    number = f"ORD-TWICE-{uuid.uuid4().hex[:8].upper()}"
    attributes = {k: v for k, v in golden.items() if k != "data"}
    event = CloudEvent(
        {**attributes, "id": str(uuid.uuid4()), "subject": number, "partitionkey": number},
        {**golden["data"], "orderNumber": number},
    )
    headers, body = to_binary(event)

    def duplicates_seen() -> float:
        """order.placed deliveries notification-send recognised as already mailed."""
        text = shop.ingress.call("notification-send", "GET", "/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "shop_events_consumed_total"
            and sample.labels == {"type": events.ORDER_PLACED, "outcome": "duplicate"}
        )

    before = duplicates_seen()
    for _ in range(2):
        accepted = shop.ingress.session.post(f"{shop.stack.url}/_broker/shop/shop", headers=dict(headers), data=body)
        assert accepted.status_code == 202
    shop.wait_for_mail(number)
    # The second copy reached notification-send too (a copy that came while the first was being
    # sent is retried until it finds it sent) ...
    eventually(lambda: duplicates_seen() >= before + 1, timeout=60, interval=0.5)
    # ... and still only one email went out.
    assert len(shop.mails_about(number)) == 1


def test_an_idempotency_key_answers_the_same_order_and_refuses_another_body(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=10)
    bob = customer()
    key = str(uuid.uuid4())
    first, second = shop.order(bob, (sku, 1), key=key), shop.order(bob, (sku, 1), key=key)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json() == second.json() and second.headers.get("Idempotent-Replayed") == "true"
    other = shop.order(bob, (sku, 2), key=key)
    assert other.status_code == 422
    problem_of(other)
    assert shop.available(sku) == 9
    assert shop.sql("orders", "SELECT count(*) FROM orders WHERE customer_id = %s", first.json()["customer"]["id"]) == [
        (1,)
    ]


def test_a_hundred_concurrent_orders_for_the_last_thirty_units(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=30)
    buyers = [customer() for _ in range(100)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(lambda who: shop.order(who, (sku, 1)).status_code, buyers))
    assert Counter(statuses) == {201: 30, 409: 70}
    assert shop.available(sku) == 0
    assert shop.sql("orders", "SELECT count(*) FROM order_lines WHERE sku = %s", sku) == [(30,)]
    assert shop.sql("inventory", "SELECT count(*) FROM reservation_lines WHERE sku = %s", sku) == [(30,)]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"items": []}, 400, "/items"),
        ({}, 400, "/items"),
        ({"items": [{"skuCode": "Not A Sku", "quantity": 1}]}, 400, "/items/0/skuCode"),
        ({"items": [{"skuCode": "{sku}", "quantity": 0}]}, 400, "/items/0/quantity"),
        ({"items": [{"skuCode": "{sku}", "quantity": -1}]}, 400, "/items/0/quantity"),
        ({"items": [{"skuCode": "{sku}", "quantity": 1_000_000}]}, 400, "/items/0/quantity"),
        (
            {"items": [{"skuCode": "{sku}", "quantity": 1}, {"skuCode": "{sku}", "quantity": 2}]},
            400,
            "/items/1/skuCode",
        ),
        ({"items": [{"skuCode": "{sku}", "quantity": 1, "price": 0.01}]}, 400, "/items/0/price"),
        ({"items": [{"skuCode": "{sku}", "quantity": 1}], "total": 1}, 400, "/total"),
        ({"items": [{"skuCode": "never_made", "quantity": 1}]}, 422, "/items/0/skuCode"),
    ],
)
def test_bad_orders_are_refused_and_nothing_is_written(
    shop: Shop, customer: Callable[..., dict[str, str]], body: dict[str, Any], status: int, field: str
) -> None:
    sku = shop.product(units=3)
    body = json.loads(json.dumps(body).replace("{sku}", sku))
    outbox_before = shop.sql("orders", "SELECT count(*) FROM outbox")
    who = customer()
    response = shop.ingress.call("order-place", "POST", "/api/orders", json=body, headers=who)
    assert response.status_code == status, response.text
    assert field in [e["field"] for e in problem_of(response).get("errors", [])]
    assert shop.available(sku) == 3
    assert shop.sql("orders", "SELECT count(*) FROM outbox") == outbox_before
    subject = shop.ingress.call("order-list", "GET", "/api/orders", headers=who).json()["totalItems"]
    assert subject == 0


def test_a_malformed_idempotency_key_or_a_missing_identity_is_refused(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=3)
    bad_key = shop.order(customer(), (sku, 1), key="short")
    assert bad_key.status_code == 400 and problem_of(bad_key)["errors"][0]["field"] == "Idempotency-Key"
    anonymous = shop.ingress.call(
        "order-place", "POST", "/api/orders", json={"items": [{"skuCode": sku, "quantity": 1}]}
    )
    assert anonymous.status_code == 401
    problem_of(anonymous)
    assert shop.available(sku) == 3


def test_the_original_order_endpoint_still_works(shop: Shop, customer: Callable[..., dict[str, str]]) -> None:
    sku = shop.product(units=3, price=10)
    legacy = shop.ingress.call(
        "order-place",
        "POST",
        "/api/order",
        json={
            "skuCode": sku,
            "price": 0.01,
            "quantity": 2,
            "userDetails": {"email": "spoof@example.com", "firstName": "X", "lastName": "Y"},
        },
        headers=customer(email="real@example.com"),
    )
    assert legacy.status_code == 201 and legacy.text == "Order Placed Successfully"
    number = legacy.headers["Location"].rsplit("/", 1)[-1]
    row = shop.sql("orders", "SELECT email, total FROM orders WHERE order_number = %s", number)
    assert [(email, float(total)) for email, total in row] == [("real@example.com", 20.0)]


@pytest.mark.slow
def test_every_event_on_the_topics_matches_its_schema(shop: Shop, customer: Callable[..., dict[str, str]]) -> None:
    """Every type the shop emits (created, updated, placed, low, cancelled) read back from Kafka."""
    sku = shop.product(units=3, threshold=3)
    updated = shop.ingress.call(
        "product-update", "PATCH", f"/api/products/{sku}", json={"price": 21.5}, headers=shop.people.admin()
    )
    assert updated.status_code == 200, updated.text
    buyer = customer()
    placed = shop.order(buyer, (sku, 1)).json()
    shop.wait_for_mail(placed["orderNumber"])
    cancelled = shop.ingress.call("order-cancel", "POST", f"/api/orders/{placed['orderNumber']}/cancel", headers=buyer)
    assert cancelled.status_code == 200, cancelled.text
    shop.wait_for_mail(f"{placed['orderNumber']} has been cancelled")
    consumer = Consumer(
        {
            "bootstrap.servers": shop.stack.kafka_bootstrap,
            "group.id": f"audit-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(list(events.TOPICS))
    seen: Counter[str] = Counter()
    ours: set[str] = set()  # the types this test's own product and order emitted
    keys = {sku, placed["orderNumber"]}
    quiet_polls = 0
    try:
        # Read until the topics have been quiet for a few seconds (the group needs a moment to join).
        while quiet_polls < (5 if seen else 30):
            message = consumer.poll(1.0)
            if message is None or message.error():
                quiet_polls += 1
                continue
            quiet_polls = 0
            event = events.from_kafka(dict(message.headers() or []), message.key(), message.value())
            assert event["type"] in events.EVENT_TYPES
            assert events.TOPIC_BY_TYPE[event["type"]] == message.topic()
            assert event["partitionkey"] == message.key().decode()
            assert event["dataschema"] == events.schema_uri(event["type"])
            events.check_data(event["type"], event.get_data())
            seen[event["type"]] += 1
            if event["partitionkey"] in keys:
                ours.add(event["type"])
    finally:
        consumer.close()
    assert ours == events.EVENT_TYPES, (ours, seen)
