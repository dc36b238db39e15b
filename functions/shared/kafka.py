"""Kafka producer for CloudEvents in the binary binding, and topic creation."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from opentelemetry.trace import SpanKind

from functions.shared import events, flags, tracing

log = logging.getLogger("shop.kafka")


@contextmanager
def sending(topic: str, event: CloudEvent) -> Iterator[KafkaMessage]:
    """The Kafka record of `event`, inside its PRODUCER span (OpenTelemetry messaging conventions).

    The span continues the trace the event carries, even when a relay sends it minutes after
    the request that wrote it (the outbox kept its traceparent); the record carries the span on.
    """
    attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": topic,
        "messaging.message.id": str(event.get("id", "")),
        "messaging.kafka.message.key": str(event.get("partitionkey", "")),
        "cloudevents.event_type": str(event.get("type", "")),
    }
    parent = tracing.parent_of(event.get("traceparent"))
    with tracing.span(f"send {topic}", SpanKind.PRODUCER, parent=parent, attributes=attributes) as current:
        yield events.to_kafka(event, tracing.traceparent_of(current))


class Throttle(logging.Filter):
    """Lets each distinct librdkafka complaint through once a minute: a broker that is down
    makes the client retry (and log) every few milliseconds."""

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())[:200]
        now = time.monotonic()
        if now - self.last.get(key, -self.interval) < self.interval:
            return False
        self.last[key] = now
        return True


def client_logger(name: str) -> logging.Logger:
    """The logger librdkafka clients should use (their `logger` setting)."""
    logger = logging.getLogger(f"shop.kafka.{name}")
    if not any(isinstance(f, Throttle) for f in logger.filters):
        logger.addFilter(Throttle())
    return logger


class PublishError(RuntimeError):
    """Kafka did not acknowledge every message; none of them may be marked sent."""


class KafkaPublisher:
    """Publishes CloudEvents and waits until Kafka acknowledged each one."""

    def __init__(self, bootstrap_servers: str, *, timeout_seconds: float = 5.0) -> None:
        self.timeout_seconds = timeout_seconds
        self._settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            # Per-partition order through retries. Not the idempotent producer: its producer
            # id does not survive a broker that forgets it (an in-memory broker restarting),
            # and the duplicates it would prevent are absorbed by idempotent consumers anyway.
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 1,
            "linger.ms": 1,
            "message.timeout.ms": int(timeout_seconds * 1000),
            "socket.connection.setup.timeout.ms": 3000,
            # A restarted broker is found again within a second, not librdkafka's default 10 s.
            "reconnect.backoff.max.ms": 1000,
            "logger": client_logger("producer"),
            "error_cb": self._on_error,
        }
        self._fatal = False
        self._producer = Producer(self._settings)
        self._lock = threading.Lock()

    def _on_error(self, error: KafkaError) -> None:
        if _is_fatal(error):
            self._fatal = True

    def publish(self, batch: Sequence[tuple[str, CloudEvent]]) -> None:
        """Sends (topic, event) pairs in order; raises PublishError unless all were acknowledged."""
        if flags.check(flags.KAFKA_PRODUCE_FAILURE):
            raise PublishError("fault flag kafkaProduceFailure: Kafka refused the produce")
        failures: list[str] = []

        def delivered(error: KafkaError | None, message: Any) -> None:
            if error is not None:
                failures.append(f"{message.topic()}: {error}")
                self._fatal = self._fatal or _is_fatal(error)

        with self._lock:  # one batch at a time keeps each batch's delivery reports its own
            try:
                self._send(batch, delivered, failures)
            except KafkaException as error:
                failures.append(str(error))
                self._fatal = self._fatal or _is_fatal(error.args[0])
            if self._fatal:
                # A producer in a fatal state refuses everything from then on: the next batch
                # gets a fresh one.
                log.warning("Kafka producer hit a fatal error; replacing it")
                self._fatal = False
                self._producer = Producer(self._settings)
        if failures:
            raise PublishError("; ".join(failures[:3]))

    def _send(self, batch: Sequence[tuple[str, CloudEvent]], delivered: Any, failures: list[str]) -> None:
        for topic, event in batch:
            with sending(topic, event) as message:
                try:
                    self._producer.produce(
                        topic,
                        key=message.key,
                        value=message.value,
                        headers=list(message.headers.items()),
                        on_delivery=delivered,
                    )
                except BufferError as error:
                    failures.append(f"{topic}: {error}")
                    break
            self._producer.poll(0)
        remaining = self._producer.flush(self.timeout_seconds)
        if remaining:
            failures.append(f"{remaining} message(s) not acknowledged within {self.timeout_seconds}s")
            # Drop what is still queued: the rows stay unsent and the next relay run sends
            # them again, rather than this producer sending them behind our back.
            self._producer.purge(in_queue=True, in_flight=False)
            self._producer.poll(0)

    def close(self) -> None:
        self._producer.flush(self.timeout_seconds)


def _is_fatal(error: KafkaError) -> bool:
    """The producer is unusable: the fatal error itself, or a later call refused because of it."""
    return bool(error.fatal()) or error.code() == KafkaError._FATAL


def ensure_topics(bootstrap_servers: str, topics: Iterable[str], partitions: int = 3) -> None:
    """Creates missing topics (the broker does not auto-create them)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "logger": client_logger("admin")})  # type: ignore[dict-item]
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing]
    if not wanted:
        return
    for topic, future in admin.create_topics(wanted, operation_timeout=10).items():
        try:
            future.result()
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        log.info("created topic %s", topic)
