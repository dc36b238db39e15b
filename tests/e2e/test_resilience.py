"""Failures on purpose: inventory down, Kafka down, a process killed mid-saga, a subscriber that keeps failing."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import eventually, problem_of
from tests.e2e.conftest import Shop


@pytest.mark.slow
def test_inventory_down_answers_503_writes_nothing_and_the_circuit_closes_after_recovery(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=5)
    who = customer()
    orders_before = shop.sql("orders", "SELECT count(*) FROM orders")
    outbox_before = shop.sql("orders", "SELECT count(*) FROM outbox")
    shop.stack.suspend("inventory-reserve")
    try:
        details = []
        for _ in range(8):
            refused = shop.order(who, (sku, 1))
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["Retry-After"]) >= 1
            details.append(problem_of(refused)["detail"])
        # After five failures the breaker opens: later calls fail fast without trying.
        assert "circuit open" in details[-1]
        assert shop.sql("orders", "SELECT count(*) FROM orders") == orders_before
        assert shop.sql("orders", "SELECT count(*) FROM outbox") == outbox_before
    finally:
        shop.stack.suspend("inventory-reserve", False)
    assert shop.available(sku) == 5
    # The breaker half-opens after its 5 s; the first successful trial call is placed, three close it.
    placed = eventually(lambda: (r := shop.order(who, (sku, 1))).status_code == 201 and r, timeout=30, interval=1)
    assert placed.json()["status"] == "PLACED"
    assert shop.available(sku) == 4


@pytest.mark.slow
def test_orders_placed_while_kafka_is_down_are_all_delivered_once_it_is_back(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=40)
    shop.stack.kafka.stop()
    try:
        numbers = []
        for _ in range(20):
            placed = shop.order(customer(), (sku, 1))
            assert placed.status_code == 201, placed.text
            numbers.append(placed.json()["orderNumber"])
        assert shop.available(sku) == 20
        unsent = shop.sql(
            "orders", "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND partition_key = ANY(%s)", numbers
        )
        assert unsent == [(20,)]
    finally:
        shop.stack.kafka.start()

    def all_mailed() -> bool:
        # The scheduled sweep would do this within a minute; fire the PingSource now.
        shop.fire("outbox-relay-orders")
        return all(shop.mails_about(n) for n in numbers)

    try:
        eventually(all_mailed, timeout=120, interval=2)
    except AssertionError as error:
        missing = [n for n in numbers if not shop.mails_about(n)]
        unsent = shop.sql(
            "orders", "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND partition_key = ANY(%s)", numbers
        )
        assert shop.stack.eventing is not None
        raise AssertionError(
            f"{error}: no mail for {missing}; unsent outbox rows {unsent}; eventing {shop.stack.eventing.stats}"
        ) from None
    shop.quiet()  # a duplicate would have been delivered by now
    assert {n: len(shop.mails_about(n)) for n in numbers} == dict.fromkeys(numbers, 1)
    assert shop.sql(
        "orders", "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND partition_key = ANY(%s)", numbers
    ) == [(0,)]


@pytest.mark.slow
def test_a_process_killed_between_reserve_and_commit_leaks_no_stock(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=5)
    who = customer()
    shop.stack.set_env("order-place", SHOP_FAULTS="after-reserve")
    try:
        died = shop.order(who, (sku, 2))
        assert died.status_code in (502, 503), died.text
    finally:
        shop.stack.set_env("order-place", SHOP_FAULTS="")
    # The hold outlived its process: the stock is still taken, and no order exists.
    assert shop.available(sku) == 3
    assert shop.ingress.call("order-list", "GET", "/api/orders", headers=who).json()["totalItems"] == 0
    shop.stack.set_env("inventory-expire", RESERVATION_TTL_SECONDS="1")
    try:
        # The sweeper releases the hold once it is older than the TTL (the PingSource, fired now).
        def swept() -> bool:
            shop.fire("inventory-expire")
            return shop.available(sku) == 5

        eventually(swept, timeout=30, interval=0.5)
    finally:
        shop.stack.set_env("inventory-expire", RESERVATION_TTL_SECONDS="300")
    released = shop.sql(
        "inventory",
        "SELECT r.status FROM reservations r JOIN reservation_lines l USING (order_number) WHERE l.sku = %s",
        sku,
    )
    assert released == [("RELEASED",)]


@pytest.mark.slow
def test_a_failing_subscriber_is_retried_then_dead_lettered_then_replayed(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=5)
    admin = shop.people.admin()
    # inventory-confirm's Trigger has the Broker's delivery: 1 attempt + 5 retries, then dead-letter.
    shop.stack.suspend("inventory-confirm")
    try:
        number = shop.order(customer(), (sku, 1)).json()["orderNumber"]
        dead = eventually(lambda: dead_letters_of(shop, admin, number, "inventory-confirm"), timeout=60)[0]
    finally:
        shop.stack.suspend("inventory-confirm", False)
    assert dead["errorCode"] == 503
    assert attempts_of(shop, number, "inventory-confirm") == (6, "dead-lettered")
    assert reservation_status(shop, number) == "HELD"
    replayed = shop.ingress.call("dead-letter", "POST", f"/deadletters/{dead['id']}/replay", headers=admin)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["replayStatus"] in (200, 204)
    assert reservation_status(shop, number) == "COMMITTED"
    customer_listing = shop.ingress.call("dead-letter", "GET", "/deadletters", headers=shop.people.customer())
    assert customer_listing.status_code == 403
    missing = shop.ingress.call("dead-letter", "POST", f"/deadletters/{10**12}/replay", headers=admin)
    assert missing.status_code == 404


def test_a_mail_the_server_refuses_for_good_is_dead_lettered_at_once_then_replayed(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    """An SMTP 5xx is permanent: retrying for a minute would not help, so it goes to dead-letter at once."""
    sku = shop.product(units=5)
    admin = shop.people.admin()
    shop.stack.smtp.fail_next(1, code=554)
    number = shop.order(customer(), (sku, 1)).json()["orderNumber"]
    dead = eventually(lambda: dead_letters_of(shop, admin, number, "notification-send"), timeout=60)[0]
    assert dead["errorCode"] == 422 and "refused this mail for good" in str(dead["errorData"])
    assert attempts_of(shop, number, "notification-send") == (1, "dead-lettered")
    assert shop.mails_about(number) == []
    assert shop.stack.smtp.fail_next_remaining() == 0
    replayed = shop.ingress.call("dead-letter", "POST", f"/deadletters/{dead['id']}/replay", headers=admin)
    assert replayed.status_code == 200, replayed.text
    assert len(shop.wait_for_mail(number)) == 1


def dead_letters_of(shop: Shop, admin: dict[str, str], number: str, service: str) -> list[dict[str, object]]:
    listing = shop.ingress.call("dead-letter", "GET", "/deadletters?type=com.shop.order.placed", headers=admin)
    assert listing.status_code == 200, listing.text
    destination = f"http://{service}.shop.svc.cluster.local"
    return [d for d in listing.json()["items"] if d["subject"] == number and d["destination"] == destination]


def attempts_of(shop: Shop, subject: str, service: str) -> tuple[int, str]:
    """How many times the Broker delivered the order.placed event about `subject` to `service`, and how that
    ended (once settled), from the runtime's live event flow: this event's own count, whatever other events
    retry meanwhile."""
    subscriber = f"http://{service}.shop.svc.cluster.local"

    def settled() -> list[tuple[int, str]]:
        flow = shop.ingress.session.get(f"{shop.stack.url}/_local/events?limit=200", timeout=30).json()["events"]
        found = [
            (d["attempts"], d["outcome"])
            for event in flow
            if event["subject"] == subject and event["type"] == "com.shop.order.placed"
            for d in event["deliveries"]
            if d.get("subscriber") == subscriber
        ]
        assert len(found) <= 1, f"{len(found)} deliveries of {subject}'s order.placed to {service}"
        return found if found and found[0][1] not in ("delivering", "retrying") else []

    return eventually(settled, timeout=30)[0]


def reservation_status(shop: Shop, number: str) -> str:
    return str(shop.sql("inventory", "SELECT status FROM reservations WHERE order_number = %s", number)[0][0])


def test_an_event_without_a_consumer_type_is_dead_lettered_not_retried(shop: Shop) -> None:
    """A 400 from a subscriber is final: Knative does not retry it, it dead-letters it at once."""
    number = f"ORD-BAD-{uuid.uuid4().hex[:8].upper()}"
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "com.shop.order.placed",
        "ce-source": "/tests",
        "ce-id": str(uuid.uuid4()),
        "ce-subject": number,
        "Content-Type": "application/json",
    }
    subscribers = ("inventory-confirm", "notification-send")
    accepted = shop.ingress.session.post(
        f"{shop.stack.url}/_broker/shop/shop", headers=headers, data=b'{"orderNumber": "' + number.encode() + b'"}'
    )
    assert accepted.status_code == 202
    admin = shop.people.admin()

    def dead() -> list[dict[str, object]]:
        items = shop.ingress.call("dead-letter", "GET", "/deadletters", headers=admin).json()["items"]
        return [d for d in items if d["subject"] == number]

    found = eventually(lambda: len(dead()) >= 2 and dead(), timeout=30)
    assert {d["destination"] for d in found} == {f"http://{service}.shop.svc.cluster.local" for service in subscribers}
    assert {d["errorCode"] for d in found} == {400}
    # Dead-lettered after the first attempt: neither Trigger tried again.
    assert {service: attempts_of(shop, number, service) for service in subscribers} == {
        service: (1, "dead-lettered") for service in subscribers
    }


def test_a_function_killed_mid_request_answers_retryably_and_the_next_request_starts_it_anew(shop: Shop) -> None:
    stack = shop.stack
    stack.set_env("product-get", SHOP_FAULTS="delay:5")  # every request waits 5 s: time to kill it mid-way
    try:
        revision = stack.revisions["product-get"]
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(shop.ingress.call, "product-get", "GET", "/api/products/iphone_15")
            eventually(lambda: revision.in_flight > 0 and revision.status()["state"] == "Running", timeout=30)
            process = revision.process
            assert process is not None
            os.killpg(process.pid, signal.SIGKILL)  # the function's processes, as when its container dies
            killed = answer.result(timeout=30)
        assert killed.status_code == 503, killed.text
        assert int(killed.headers["Retry-After"]) >= 1
        assert "closed the connection" in problem_of(killed)["detail"]
        status = eventually(lambda: (s := revision.status())["lastExit"] and s, timeout=10)
        assert status["lastExit"]["signal"] == "SIGKILL"
        assert status["state"] == "Restarting" and not status["running"]
    finally:
        stack.set_env("product-get", SHOP_FAULTS="")
    cold_starts = revision.cold_starts
    again = shop.ingress.call("product-get", "GET", "/api/products/iphone_15")
    assert again.status_code in (200, 404), again.text
    assert revision.cold_starts == cold_starts + 1
