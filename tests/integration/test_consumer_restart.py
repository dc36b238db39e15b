"""A Trigger's consumer group across a restart of the embedded (in-memory) broker: nothing is skipped.

The restarted broker is empty, so offsets a consumer held from before point into the records
it takes afterwards; read from there, the first ones would never be delivered.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer

from functions.shared.kafka import ensure_topics
from local.eventing import ConsumerLoop
from local.servers import EmbeddedKafka
from tests.conftest import eventually

TOPIC = "restart.test"


def produce(bootstrap: str, values: list[str]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for value in values:
        producer.produce(TOPIC, value=value.encode(), partition=0)
    assert producer.flush(15) == 0


@pytest.mark.timeout(120)
def test_records_written_after_a_broker_restart_are_all_delivered(tmp_path: Path) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def settle(records: list[Message]) -> None:
        with lock:
            seen.extend((r.value() or b"").decode() for r in records)

    with EmbeddedKafka(log_dir=tmp_path) as kafka:
        ensure_topics(kafka.bootstrap_servers, [TOPIC], partitions=1)
        consumer = ConsumerLoop("restart-test", kafka.bootstrap_servers, "restart-test", [TOPIC], settle)
        kafka.on_restart.append(lambda: consumer.from_the_start.set())
        consumer.start()
        try:
            before = [f"before-{i}" for i in range(6)]
            produce(kafka.bootstrap_servers, before)
            eventually(lambda: len(seen) >= len(before), timeout=30)
            kafka.stop()
            kafka.start()
            ensure_topics(kafka.bootstrap_servers, [TOPIC], partitions=1)
            # Written before the consumer is back: offsets 0-9 of the new log, past its old position 6.
            after = [f"after-{i}" for i in range(10)]
            produce(kafka.bootstrap_servers, after)
            eventually(lambda: set(after) <= set(seen), timeout=60, interval=0.5)
        finally:
            consumer.stop()
            consumer.join(15)
    assert seen[: len(before)] == before
    assert set(seen[len(before) :]) == set(after)
