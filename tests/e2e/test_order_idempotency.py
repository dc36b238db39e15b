"""Idempotency-Key on the real order-place, PostgreSQL and inventory: one key, one order, one hold on
stock, whether the key comes eight times at once, after the process that claimed it was killed, or
from another customer."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from functions.shared import identity
from tests.conftest import eventually, problem_of
from tests.e2e.conftest import Shop

CLAIM_TIMEOUT_SECONDS = 2  # instead of 30, so the takeover comes quickly


def subject_of(shop: Shop, who: dict[str, str]) -> str:
    return identity.verify(who[identity.HEADER], shop.stack.identity_secret).subject


def holds_on(shop: Shop, sku: str) -> dict[str, str]:
    """Reservation status by order number, for the reservations holding this SKU."""
    rows = shop.sql(
        "inventory",
        "SELECT r.order_number, r.status FROM reservations r JOIN reservation_lines l USING (order_number)"
        " WHERE l.sku = %s",
        sku,
    )
    return {number: status for number, status in rows}


def assert_in_flight(answer: Any) -> None:
    assert answer.status_code == 409, answer.text
    assert problem_of(answer)["type"] == "/problems/idempotency-key-in-flight"
    assert int(answer.headers["Retry-After"]) >= 1


def test_one_key_sent_eight_times_at_once_makes_one_order_and_one_hold(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=10)
    who = customer()
    key = str(uuid.uuid4())
    start = threading.Barrier(8)

    def place(_: int) -> Any:
        start.wait()
        return shop.order(who, (sku, 2), key=key)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(place, range(8)))

    statuses = Counter(answer.status_code for answer in answers)
    assert set(statuses) <= {201, 409}, [(a.status_code, a.text) for a in answers]  # never a 500
    created = [answer for answer in answers if answer.status_code == 201]
    assert len({answer.json()["orderNumber"] for answer in created}) == 1
    originals = [answer for answer in created if answer.headers.get("Idempotent-Replayed") != "true"]
    assert len(originals) == 1  # the others replay its answer ...
    for answer in answers:
        if answer.status_code == 409:  # ... or say it is still being processed
            assert_in_flight(answer)
    number = originals[0].json()["orderNumber"]

    customer_id = subject_of(shop, who)
    assert shop.sql("orders", "SELECT order_number FROM orders WHERE customer_id = %s", customer_id) == [(number,)]
    assert shop.sql("orders", "SELECT count(*) FROM order_lines WHERE sku = %s", sku) == [(1,)]
    assert shop.sql(
        "orders", "SELECT order_number FROM idempotency_keys WHERE customer_id = %s AND key = %s", customer_id, key
    ) == [(number,)]
    assert list(holds_on(shop, sku)) == [number]
    assert shop.available(sku) == 8

    again = shop.order(who, (sku, 2), key=key)  # a late retry: the same answer, nothing more
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == originals[0].json()
    assert shop.available(sku) == 8


@pytest.mark.slow
def test_a_claim_left_by_a_killed_process_is_taken_over_after_its_timeout(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=10)
    who = customer()
    customer_id = subject_of(shop, who)
    key = str(uuid.uuid4())
    timeout = str(CLAIM_TIMEOUT_SECONDS)
    shop.stack.set_env("order-place", SHOP_FAULTS="after-reserve", IDEMPOTENCY_CLAIM_TIMEOUT_SECONDS=timeout)
    try:
        died = shop.order(who, (sku, 3), key=key)  # SIGKILLed between its reservation and its commit
        assert died.status_code in (502, 503), died.text
        shop.stack.set_env("order-place", SHOP_FAULTS="")
        # The claim outlived its process, unanswered, and the stock it reserved is still held.
        ((claimed_at, response),) = shop.sql(
            "orders",
            "SELECT claimed_at, response FROM idempotency_keys WHERE customer_id = %s AND key = %s",
            customer_id,
            key,
        )
        assert response is None
        (dead,) = holds_on(shop, sku)
        assert shop.available(sku) == 7

        # The client retries as told: 409 while the claim may still belong to a live request, then
        # the retry takes the claim over and places the order.
        answers: list[Any] = []

        def retried() -> bool:
            answers.append(shop.order(who, (sku, 3), key=key))
            return answers[-1].status_code != 409

        eventually(retried, timeout=60, interval=0.5)
    finally:
        shop.stack.set_env("order-place", SHOP_FAULTS="", IDEMPOTENCY_CLAIM_TIMEOUT_SECONDS="")
    for answer in answers[:-1]:
        assert_in_flight(answer)
    placed = answers[-1]
    assert placed.status_code == 201, placed.text
    assert "Idempotent-Replayed" not in placed.headers  # a new order: the dead request never made one
    number = placed.json()["orderNumber"]
    assert number != dead
    ((placed_at,),) = shop.sql("orders", "SELECT placed_at FROM orders WHERE customer_id = %s", customer_id)
    assert (placed_at - claimed_at).total_seconds() >= CLAIM_TIMEOUT_SECONDS  # not taken over any earlier
    replay = shop.order(who, (sku, 3), key=key)
    assert replay.status_code == 201 and replay.json()["orderNumber"] == number

    # The dead request's hold is settled by the sweeper (the order it was for never existed); the
    # order's own hold stays. Then exactly one hold is left on the stock.
    shop.stack.set_env("inventory-expire", RESERVATION_TTL_SECONDS="1")
    try:

        def swept() -> bool:
            shop.fire("inventory-expire")
            return holds_on(shop, sku).get(dead) == "RELEASED"

        eventually(swept, timeout=30, interval=0.5)
    finally:
        shop.stack.set_env("inventory-expire", RESERVATION_TTL_SECONDS="300")
    assert holds_on(shop, sku)[number] in ("HELD", "COMMITTED")
    assert shop.available(sku) == 7


def test_another_customer_reusing_a_key_gets_an_order_of_their_own(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    sku = shop.product(units=10)
    ada, bob = customer(), customer()
    key = str(uuid.uuid4())
    first = shop.order(ada, (sku, 1), key=key)
    assert first.status_code == 201, first.text
    # Bob's client happens to send the same key, with another body: the key is Ada's, not his.
    second = shop.order(bob, (sku, 2), key=key)
    assert second.status_code == 201, second.text
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["orderNumber"] != first.json()["orderNumber"]
    assert second.json()["customer"]["id"] == subject_of(shop, bob)
    assert [item["quantity"] for item in second.json()["items"]] == [2]

    # Each one's retry replays their own order, never the other's.
    for who, original in ((ada, first), (bob, second)):
        quantity = original.json()["items"][0]["quantity"]
        replay = shop.order(who, (sku, quantity), key=key)
        assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json() == original.json()
    bobs = shop.ingress.call("order-list", "GET", "/api/orders", headers=bob).json()
    assert [order["orderNumber"] for order in bobs["items"]] == [second.json()["orderNumber"]]
    peek = shop.ingress.call("order-get", "GET", f"/api/orders/{first.json()['orderNumber']}", headers=bob)
    assert peek.status_code == 404
    assert shop.available(sku) == 7
