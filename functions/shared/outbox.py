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
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Protocol

from cloudevents.http import CloudEvent

from functions.shared import events, health, metrics
from functions.shared.config import config

if TYPE_CHECKING:
    from functions.shared.kafka import KafkaPublisher

log = logging.getLogger("shop.outbox")
BATCH = 200
# While Kafka is down, the fast path tries again after 1, 2, 4 ... up to this many seconds, so
# events go out within seconds of its return rather than at the next sweep.
RETRY_CAP_SECONDS = 15.0
RETENTION = timedelta(days=7)


class Relay(Protocol):
    """An outbox a relay drains: postgres_outbox.PostgresOutbox or mongo_outbox.MongoOutbox."""

    name: str

    def relay(self, publisher: KafkaPublisher) -> int: ...

    def oldest_unsent_age(self) -> float: ...

    def purge_sent(self) -> int: ...

    def requeue_since(self, moment: datetime) -> int:
        """Marks the events sent at or after `moment` unsent again, so the relay publishes them once more.

        For a broker that lost what it had acknowledged (the local in-memory one, restarted): the
        consumers are idempotent on (source, id), so an event they already had is harmless.
        """
        ...


def publisher() -> KafkaPublisher:
    """The process's Kafka producer, made on first use (functions that only read never load the client)."""
    return _publisher_for(config().required("KAFKA_BOOTSTRAP_SERVERS"))


@cache
def _publisher_for(bootstrap_servers: str) -> KafkaPublisher:
    from functions.shared.kafka import KafkaPublisher

    return KafkaPublisher(bootstrap_servers)


def topic_of(event: CloudEvent) -> str:
    return events.TOPIC_BY_TYPE[event["type"]]


def count_published(batch: list[tuple[str, CloudEvent]]) -> None:
    for _, event in batch:
        metrics.EVENTS_PUBLISHED.labels(event["type"]).inc()


class FastPathRelay:
    """Relays right after commits, off the request thread, coalescing bursts of commits.

    `poke()` after a commit wakes one background thread per process, which drains the
    outbox. If that fails (Kafka down), rows stay unsent; the thread tries again with backoff,
    and the scheduled sweep is the safety net (a process that scaled to zero meanwhile).
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
        retry_in: float | None = None  # after a failure, try again this soon even without a commit
        while True:
            self._wake.wait(retry_in)
            self._wake.clear()
            try:
                self._relay()
                retry_in = None
            except Exception as error:  # noqa: BLE001 - rows stay unsent; this thread or the sweep retries
                if health.outage(error) is None:  # not an outage (a setting missing, say): only the sweep retries
                    retry_in = None
                    log.warning("fast-path relay failed, the sweep will retry: %s", error)
                    continue
                retry_in = min(2 * retry_in if retry_in else 1.0, RETRY_CAP_SECONDS)
                log.warning("fast-path relay failed, trying again in %.0f s: %s", retry_in, error)
