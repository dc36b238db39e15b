"""Fault flags at run time: each one shows its effect on the running shop, and turning it off restores service."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from functions.shared import flags
from tests.conftest import eventually, problem_of
from tests.e2e.conftest import Shop

pytestmark = pytest.mark.slow


class Flags:
    """The local runtime's /_local/flags."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/_local/flags"

    def set(self, key: str, variant: str) -> dict[str, Any]:
        response = requests.put(f"{self.url}/{key}", json={"variant": variant}, timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def reset(self) -> None:
        assert requests.post(f"{self.url}/reset", timeout=10).status_code == 200


@pytest.fixture
def fault_flags(shop: Shop) -> Iterator[Flags]:
    switch = Flags(shop.stack.url)
    try:
        yield switch
    finally:
        switch.reset()


def settle() -> None:
    """Gives running functions time to read the changed file (the provider looks every POLL_MS; a busy
    machine may be late): a wait before acting, never an assertion about time."""
    time.sleep(flags.POLL_MS / 1000 * 4)


def injections(shop: Shop, service: str, key: str) -> float:
    """shop_fault_injections_total of one flag, as the service's /metrics reports it."""
    text = shop.ingress.call(service, "GET", "/metrics").text
    found = re.search(rf'^shop_fault_injections_total\{{flag="{key}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_the_flags_endpoint_lists_every_flag_and_refuses_bad_changes(shop: Shop, fault_flags: Flags) -> None:
    listing = requests.get(fault_flags.url, timeout=10).json()
    assert sorted(f["key"] for f in listing["flags"]) == sorted(flags.FLAGS)
    assert all(f["variant"] == "off" and f["description"] for f in listing["flags"])
    unknown = requests.put(f"{fault_flags.url}/noSuchFlag", json={"variant": "on"}, timeout=10)
    assert unknown.status_code == 404
    problem_of(unknown)
    wrong = requests.put(f"{fault_flags.url}/{flags.SMTP_REFUSING}", json={"variant": "sometimes"}, timeout=10)
    assert wrong.status_code == 400
    assert "sometimes" in problem_of(wrong)["detail"]
    after = requests.get(fault_flags.url, timeout=10).json()
    assert after == listing  # nothing changed


def test_product_get_latency(shop: Shop, fault_flags: Flags) -> None:
    sku = shop.product(units=5)
    shop.ingress.call("product-get", "GET", f"/api/products/{sku}")  # started, flags read
    before = injections(shop, "product-get", flags.PRODUCT_GET_LATENCY)
    fault_flags.set(flags.PRODUCT_GET_LATENCY, "1s")

    def slowed() -> bool:
        started = time.monotonic()
        answer = shop.ingress.call("product-get", "GET", f"/api/products/{sku}")
        return answer.status_code == 200 and time.monotonic() - started >= 1.0

    eventually(slowed, timeout=15)
    assert injections(shop, "product-get", flags.PRODUCT_GET_LATENCY) > before

    fault_flags.set(flags.PRODUCT_GET_LATENCY, "off")
    eventually(lambda: not slowed(), timeout=15)
    count = injections(shop, "product-get", flags.PRODUCT_GET_LATENCY)
    assert shop.ingress.call("product-get", "GET", f"/api/products/{sku}").status_code == 200
    assert injections(shop, "product-get", flags.PRODUCT_GET_LATENCY) == count  # no wait injected any more


def test_inventory_reserve_latency_and_errors(shop: Shop, fault_flags: Flags, customer: Callable[..., Any]) -> None:
    sku = shop.product(units=10)
    buyer = customer()
    assert shop.order(buyer, (sku, 1)).status_code == 201
    fault_flags.set(flags.INVENTORY_RESERVE_LATENCY, "300ms")

    def slow_order() -> bool:
        started = time.monotonic()
        placed = shop.order(buyer, (sku, 1))
        assert placed.status_code == 201, placed.text
        return time.monotonic() - started >= 0.3

    eventually(slow_order, timeout=15)
    assert injections(shop, "inventory-reserve", flags.INVENTORY_RESERVE_LATENCY) > 0
    fault_flags.set(flags.INVENTORY_RESERVE_LATENCY, "off")

    units = shop.available(sku)
    fault_flags.set(flags.INVENTORY_RESERVE_FAILURE, "100%")
    # (a list: a requests.Response is falsy when its status is an error)
    refused = eventually(lambda: (answer := shop.order(buyer, (sku, 1))).status_code == 503 and [answer], timeout=15)
    assert "inventory" in problem_of(refused[0])["detail"]
    assert shop.available(sku) == units  # a refused order holds nothing
    assert injections(shop, "inventory-reserve", flags.INVENTORY_RESERVE_FAILURE) > 0

    fault_flags.set(flags.INVENTORY_RESERVE_FAILURE, "off")
    # order-place's circuit to inventory-reserve may be open for a few seconds yet: then 503 again.
    eventually(lambda: shop.order(buyer, (sku, 1)).status_code == 201, timeout=30, interval=0.5)
    assert shop.available(sku) == units - 1


def test_smtp_refusing_delays_mail_until_it_is_off(
    shop: Shop, fault_flags: Flags, customer: Callable[..., Any]
) -> None:
    sku = shop.product(units=5)
    fault_flags.set(flags.SMTP_REFUSING, "on")
    settle()
    placed = shop.order(customer(), (sku, 1))
    assert placed.status_code == 201
    number = placed.json()["orderNumber"]
    eventually(lambda: injections(shop, "notification-send", flags.SMTP_REFUSING) > 0, timeout=30)
    assert shop.mails_about(number) == []  # refused while the flag is on: retried, not lost
    fault_flags.set(flags.SMTP_REFUSING, "off")
    assert len(shop.wait_for_mail(number, timeout=60)) == 1


def test_notification_send_failure_dead_letters_and_a_replay_delivers(
    shop: Shop, fault_flags: Flags, customer: Callable[..., Any]
) -> None:
    sku = shop.product(units=5)
    fault_flags.set(flags.NOTIFICATION_SEND_FAILURE, "on")
    settle()
    number = shop.order(customer(), (sku, 1)).json()["orderNumber"]
    admin = shop.people.admin()

    def dead_letter() -> dict[str, Any] | None:
        listing = shop.ingress.call("dead-letter", "GET", "/deadletters?size=100", headers=admin).json()
        return next((d for d in listing["items"] if d["subject"] == number), None)

    dead = eventually(dead_letter, timeout=30)
    assert dead["errorCode"] == 422
    assert "notification-send" in dead["destination"]
    assert "notificationSendFailure" in dead["errorData"]
    assert shop.mails_about(number) == []

    fault_flags.set(flags.NOTIFICATION_SEND_FAILURE, "off")
    settle()
    replayed = shop.ingress.call("dead-letter", "POST", f"/deadletters/{dead['id']}/replay", headers=admin)
    assert replayed.status_code == 200, replayed.text
    assert len(shop.wait_for_mail(number)) == 1


def test_kafka_produce_failure_queues_events_in_the_outbox(
    shop: Shop, fault_flags: Flags, customer: Callable[..., Any]
) -> None:
    sku = shop.product(units=5)
    fault_flags.set(flags.KAFKA_PRODUCE_FAILURE, "on")
    settle()
    placed = shop.order(customer(), (sku, 1))
    assert placed.status_code == 201  # the order commits with its outbox row; only the event waits
    number = placed.json()["orderNumber"]

    def unsent() -> int:
        query = "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND event->>'subject' = %s"
        rows = shop.sql("orders", query, number)
        return int(rows[0][0])

    eventually(lambda: injections(shop, "order-place", flags.KAFKA_PRODUCE_FAILURE) > 0, timeout=30)
    assert unsent() == 1
    shop.fire("outbox-relay-orders")  # the sweep fails too, and keeps the row
    assert unsent() == 1
    assert shop.mails_about(number) == []

    fault_flags.set(flags.KAFKA_PRODUCE_FAILURE, "off")
    settle()
    shop.fire("outbox-relay-orders")
    eventually(lambda: unsent() == 0, timeout=30)
    assert len(shop.wait_for_mail(number)) == 1
