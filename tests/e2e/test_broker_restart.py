"""The embedded broker keeps records in memory. Killed while it holds events it acknowledged but had not
delivered, it is restarted, and every one of those events still reaches its subscribers, once."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Callable

import pytest

from tests.conftest import EVENTS_DIR, eventually
from tests.e2e.conftest import Shop


@pytest.mark.slow
def test_events_the_killed_broker_had_not_delivered_still_reach_their_subscribers_once(
    shop: Shop, customer: Callable[..., dict[str, str]]
) -> None:
    stack = shop.stack
    sku = shop.product(units=50)
    # notification-send takes 3 s per delivery, so its Trigger lags behind while orders come in.
    stack.set_env("notification-send", SHOP_FAULTS="delay:3")
    try:
        first = shop.order(customer(), (sku, 1)).json()["orderNumber"]
        eventually(lambda: stack.revisions["notification-send"].in_flight > 0, timeout=30)
        # Acknowledged by the broker, not yet delivered to notification-send: the outbox's ...
        behind = [shop.order(customer(), (sku, 1)).json()["orderNumber"] for _ in range(5)]
        # ... and one that reached the Broker over its HTTP ingress, with no outbox behind it.
        ingress_number = f"ORD-20261206-{uuid.uuid4().hex[:10].upper()}"
        golden = json.loads((EVENTS_DIR / "com.shop.order.placed.json").read_text())
        golden.update(id=str(uuid.uuid4()), subject=ingress_number, partitionkey=ingress_number)
        golden["data"] = {**golden["data"], "orderNumber": ingress_number}
        stored = shop.ingress.session.post(
            f"{stack.url}/_broker/shop/shop",
            data=json.dumps(golden),
            headers={"Content-Type": "application/cloudevents+json"},
            timeout=30,
        )
        assert stored.status_code == 202, stored.text
        assert not shop.mails_about(behind[0]), "the Trigger was expected to lag behind"
        replays_before = len(stack.eventing.replay.reports)
        pid = stack.kafka.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        replay = eventually(
            lambda: len(stack.eventing.replay.reports) > replays_before and stack.eventing.replay.reports[-1],
            timeout=60,
        )
    finally:
        stack.set_env("notification-send", SHOP_FAULTS="")
    assert replay["outboxEvents"]["orders"] >= len(behind), replay
    assert replay["journalEvents"] >= 1, replay
    assert stack.kafka.status()["lastExit"]["signal"] == "SIGKILL"
    numbers = [first, *behind, ingress_number]
    eventually(lambda: all(shop.mails_about(n) for n in numbers), timeout=120, interval=1)
    shop.quiet()  # what was sent again has all been delivered: a duplicate mail would be here by now
    # Sent again, delivered again, mailed once: notification-send is idempotent on (source, id).
    assert {n: len(shop.mails_about(n)) for n in numbers} == dict.fromkeys(numbers, 1)
