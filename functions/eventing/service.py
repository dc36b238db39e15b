"""Event infrastructure use cases: relay outboxes, keep dead letters and replay them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloudevents.http import CloudEvent

from functions.eventing.deadletters import DeadLetter, DeadLetterStore, Incoming, binary_request
from functions.shared import metrics
from functions.shared.errors import NotFound, Unavailable, UpstreamFailed
from functions.shared.kafka import KafkaPublisher, PublishError
from functions.shared.outbox import Relay
from functions.shared.service_client import Reply

log = logging.getLogger("shop.eventing")
Transport = Callable[[str, dict[str, str], bytes], Reply]


class ReplayFailed(UpstreamFailed):
    """The destination refused the replayed event again, or did not answer."""

    slug = "replay-failed"
    title = "Replay failed"


@dataclass(frozen=True)
class RelayReport:
    published: int
    purged: int
    oldest_unsent_seconds: float


def relay_outbox(outbox: Relay, *, publisher: KafkaPublisher) -> RelayReport:
    """The sweep: publishes every unsent row, drops sent ones past retention, reports the lag."""
    try:
        published = outbox.relay(publisher)
    except PublishError as error:
        age = outbox.oldest_unsent_age()
        metrics.OUTBOX_OLDEST_AGE.labels(outbox.name).set(age)
        raise Unavailable(f"Kafka did not take the events ({error}); they stay queued", retry_after=30) from None
    purged = outbox.purge_sent()
    age = outbox.oldest_unsent_age()
    metrics.OUTBOX_OLDEST_AGE.labels(outbox.name).set(age)
    if published:
        log.info("relayed %d event(s) from the %s outbox", published, outbox.name)
    return RelayReport(published, purged, age)


def keep_dead_letter(event: CloudEvent, *, store: DeadLetterStore) -> DeadLetter:
    dead, created = store.keep(Incoming.of(event))
    if created:
        metrics.EVENTS_DEAD_LETTERED.labels(dead.event.get("type", "unknown")).inc()
        log.warning(
            "dead letter %s: %s for %s failed with %s",
            dead.id,
            dead.event.get("type"),
            dead.destination,
            dead.code,
            extra={"event_id": dead.event.get("id"), "event_type": dead.event.get("type")},
        )
    return dead


def list_dead_letters(page: int, size: int, event_type: str | None, *, store: DeadLetterStore) -> dict[str, Any]:
    items, total = store.list(page, size, event_type)
    return {"items": [d.as_json() for d in items], "page": page, "size": size, "totalItems": total}


def get_dead_letter(dead_letter_id: int, *, store: DeadLetterStore) -> DeadLetter:
    dead = store.get(dead_letter_id)
    if dead is None:
        raise NotFound(f"no dead letter {dead_letter_id}")
    return dead


def replay_dead_letter(dead_letter_id: int, *, store: DeadLetterStore, transport: Transport) -> DeadLetter:
    """Sends the original event to the destination that failed; 502 if it fails again."""
    dead = get_dead_letter(dead_letter_id, store=store)
    headers, body = binary_request(dead.event)
    try:
        reply = transport(dead.destination, headers, body)
    except Exception as error:  # noqa: BLE001 - any transport failure is the destination's
        raise ReplayFailed(f"{dead.destination} did not answer: {error}") from None
    store.replayed(dead.id, reply.status)
    if not 200 <= reply.status < 300:
        raise ReplayFailed(f"{dead.destination} answered {reply.status}", destinationStatus=reply.status)
    log.info("dead letter %s replayed to %s", dead.id, dead.destination)
    refreshed = store.get(dead.id)
    assert refreshed is not None
    return refreshed
