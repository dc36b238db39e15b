"""The outbox relay against real PostgreSQL and the Kafka-protocol broker: no loss, no double send."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer

from functions import migrate
from functions.shared import db, events, postgres_outbox
from functions.shared.kafka import KafkaPublisher, PublishError, ensure_topics
from local.servers import EmbeddedKafka
from tests.conftest import scratch_database


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A broker of this module's own: these tests stop it, and nobody else should notice."""
    with EmbeddedKafka(log_dir=tmp_path_factory.mktemp("kafka")) as broker:
        ensure_topics(broker.bootstrap_servers, events.TOPICS)
        yield broker


@pytest.fixture
def outbox_url(stack: Any) -> Iterator[str]:
    """A database of this test's own, with the outbox table every domain database has.

    Not the stack's `orders`: its relay sweeps every minute and would send these rows too, and
    these tests must not mark the shop's own rows sent."""
    with scratch_database(stack, "outbox_test", migrate.SHARED_SCHEMA) as url:
        yield url


def queue(url: str, count: int) -> list[str]:
    numbers = []
    with db.transaction(url) as conn:
        for _ in range(count):
            number = f"ORD-OUTBOX-{uuid.uuid4().hex[:10].upper()}"
            data = {
                "orderNumber": number,
                "email": "a@example.com",
                "firstName": "A",
                "lastName": "B",
                "reason": "",
                "total": "1.00",
                "currency": "USD",
                "cancelledAt": "2026-11-24T10:00:00+00:00",
            }
            postgres_outbox.add(
                conn, events.new_event(events.ORDER_CANCELLED, service="orders", subject=number, data=data)
            )
            numbers.append(number)
    return numbers


def published(bootstrap: str, numbers: list[str]) -> Counter[str]:
    """How many times each order number arrived on shop.orders."""
    wanted = set(numbers)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4()}",
            "session.timeout.ms": 6000,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(["shop.orders"])
    seen: Counter[str] = Counter()
    quiet = 0
    try:
        while quiet < (3 if sum(seen.values()) >= len(wanted) else 30):
            message = consumer.poll(1.0)
            if message is None or message.error():
                quiet += 1
                continue
            quiet = 0
            if message.key() and message.key().decode() in wanted:
                seen[message.key().decode()] += 1
    finally:
        consumer.close()
    return seen


def unsent(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
    return int(row[0]) if row else -1


def test_two_relays_at_once_send_every_row_exactly_once(kafka: Any, outbox_url: str) -> None:
    numbers = queue(outbox_url, 600)
    store = postgres_outbox.PostgresOutbox(outbox_url, "orders")
    publishers = [KafkaPublisher(kafka.bootstrap_servers), KafkaPublisher(kafka.bootstrap_servers)]
    sent: list[int] = []
    threads = [threading.Thread(target=lambda p=p: sent.append(store.relay(p))) for p in publishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(sent) == 600 and unsent(outbox_url) == 0
    assert published(kafka.bootstrap_servers, numbers) == Counter({n: 1 for n in numbers})


@pytest.mark.slow
def test_kafka_down_keeps_rows_queued_and_a_restart_sends_them(kafka: Any, outbox_url: str) -> None:
    publisher = KafkaPublisher(kafka.bootstrap_servers, timeout_seconds=2)
    store = postgres_outbox.PostgresOutbox(outbox_url, "orders")
    store.relay(publisher)  # the producer has talked to this broker before it goes away
    numbers = queue(outbox_url, 5)
    kafka.stop()
    try:
        with pytest.raises(PublishError):
            store.relay(publisher)
        assert unsent(outbox_url) == 5
    finally:
        kafka.start()
        ensure_topics(kafka.bootstrap_servers, events.TOPICS)
    # The restarted broker has forgotten this producer: the publisher replaces it and carries on.
    for _ in range(3):
        try:
            store.relay(publisher)
            break
        except PublishError:
            continue
    assert unsent(outbox_url) == 0
    assert published(kafka.bootstrap_servers, numbers) == Counter({n: 1 for n in numbers})
