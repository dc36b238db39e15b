"""Wires the event-infrastructure functions' use cases to their collaborators once per process, on first use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from cloudevents.http import CloudEvent

from functions.eventing import service
from functions.eventing.deadletters import DeadLetter, PostgresDeadLetterStore
from functions.shared import health
from functions.shared import outbox as outboxes
from functions.shared.config import Config, ConfigError, config
from functions.shared.outbox import Relay
from functions.shared.postgres_outbox import PostgresOutbox
from functions.shared.service_client import Reply, send


@cache
def outbox() -> Relay:
    return outbox_for(config())


def outbox_for(settings: Config) -> Relay:
    """The outbox a relay deployment drains: OUTBOX_STORE=postgres (DATABASE_URL) or mongodb (MONGODB_URI).

    The local runtime uses it too, with each relay service's settings, to re-publish after its
    in-memory broker restarted."""
    kind = settings.optional("OUTBOX_STORE", "postgres")
    name = settings.required("OUTBOX_NAME")
    if kind == "postgres":
        return PostgresOutbox(settings.required("DATABASE_URL"), name)
    if kind == "mongodb":
        from functions.shared import mongo
        from functions.shared.mongo_outbox import MongoOutbox

        database = mongo.client(settings.required("MONGODB_URI"))[settings.optional("OUTBOX_DATABASE", name)]
        return MongoOutbox(database, name)
    raise ConfigError(f"setting OUTBOX_STORE must be postgres or mongodb, got {kind!r}")


@cache
def dead_letters() -> PostgresDeadLetterStore:
    return PostgresDeadLetterStore(config().required("DATABASE_URL"))


def transport(url: str, headers: dict[str, str], body: bytes) -> Reply:
    return send("POST", url, body, headers, timeout=config().seconds("REPLAY_TIMEOUT_SECONDS", 10))


@dataclass(frozen=True)
class Eventing:
    """outbox-relay's and dead-letter's use cases, ready to call."""

    relay: Callable[[], service.RelayReport]
    keep: Callable[[CloudEvent], DeadLetter]
    list: Callable[[int, int, str | None], dict[str, Any]]
    get: Callable[[int], DeadLetter]
    replay: Callable[[int], DeadLetter]


@cache
def use_cases() -> Eventing:
    # Each target uses only its own: the relay its outbox (opened on its first sweep), dead-letter its store.
    return Eventing(
        relay=lambda: service.relay_outbox(outbox(), publisher=outboxes.publisher()),
        keep=lambda event: service.keep_dead_letter(event, store=dead_letters()),
        list=lambda page, size, kind: service.list_dead_letters(page, size, kind, store=dead_letters()),
        get=lambda number: service.get_dead_letter(number, store=dead_letters()),
        replay=lambda number: service.replay_dead_letter(number, store=dead_letters(), transport=transport),
    )


def dependencies() -> list[health.Dependency]:
    """An outbox relay needs its outbox's store (Kafka being down is what its outbox is for);
    dead-letter needs its database."""
    settings = config()
    if settings.optional("FUNCTION_TARGET", "") == "outbox_relay":
        if settings.optional("OUTBOX_STORE", "postgres") == "mongodb":
            return [health.mongodb(settings.required("MONGODB_URI"))]
        return [health.postgres(settings.required("DATABASE_URL"))]
    return [health.postgres(settings.required("DATABASE_URL"))]
