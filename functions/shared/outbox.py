"""Transactional outbox: events are written with the change they describe, then relayed to Kafka.

A function adds its events in the same PostgreSQL transaction (or MongoDB
transaction) as its state change, so a crash after the commit loses nothing: the
relay publishes whatever is unsent, right after the commit (fast path) and on a
PingSource schedule (sweep). Relays never send a row twice at the same time:
PostgreSQL rows are claimed with FOR UPDATE SKIP LOCKED, MongoDB documents with a lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Protocol

from cloudevents.http import CloudEvent

from functions.shared import events, metrics
from functions.shared.config import config

if TYPE_CHECKING:
    from functions.shared.kafka import KafkaPublisher

log = logging.getLogger("shop.outbox")
BATCH = 200
RETENTION = timedelta(days=7)


class Relay(Protocol):
    """An outbox a relay drains: postgres_outbox.PostgresOutbox or mongo_outbox.MongoOutbox."""

    name: str

    def relay(self, publisher: KafkaPublisher) -> int: ...

    def oldest_unsent_age(self) -> float: ...

    def purge_sent(self) -> int: ...


@cache
def publisher() -> KafkaPublisher:
    """The process's Kafka producer, made on first use (functions that only read never load the client)."""
    from functions.shared.kafka import KafkaPublisher

    return KafkaPublisher(config().required("KAFKA_BOOTSTRAP_SERVERS"))


def topic_of(event: CloudEvent) -> str:
    return events.TOPIC_BY_TYPE[event["type"]]


def count_published(batch: list[tuple[str, CloudEvent]]) -> None:
    for _, event in batch:
        metrics.EVENTS_PUBLISHED.labels(event["type"]).inc()


class FastPathRelay:
    """Relays right after commits, off the request thread, coalescing bursts of commits.

    `poke()` after a commit wakes one background thread per process, which drains the
    outbox. If that fails (Kafka down), rows stay unsent and the scheduled sweep retries.
    """

    def __init__(self, relay: Callable[[], int]) -> None:
        self._relay = relay
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def of(cls, outbox: Callable[[], Relay]) -> FastPathRelay:
        """The fast path of a domain's outbox, published with the process's producer."""
        return cls(lambda: outbox().relay(publisher()))

    def poke(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="outbox-fast-path", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self._relay()
            except Exception as error:  # noqa: BLE001 - the sweep is the safety net
                log.warning("fast-path relay failed, the sweep will retry: %s", error)
