"""Wires the event-infrastructure functions' collaborators once per process, on first use."""

from __future__ import annotations

from functools import cache

from functions.eventing.deadletters import PostgresDeadLetterStore
from functions.shared import db
from functions.shared.config import ConfigError, config
from functions.shared.kafka import KafkaPublisher
from functions.shared.outbox import MongoOutbox, PostgresOutbox
from functions.shared.services import Reply, send


@cache
def outbox() -> PostgresOutbox | MongoOutbox:
    """The outbox this deployment relays: OUTBOX_STORE=postgres (DATABASE_URL) or mongodb (MONGODB_URI)."""
    settings = config()
    kind = settings.optional("OUTBOX_STORE", "postgres")
    name = settings.required("OUTBOX_NAME")
    if kind == "postgres":
        return PostgresOutbox(settings.required("DATABASE_URL"), name)
    if kind == "mongodb":
        database = db.mongo(settings.required("MONGODB_URI"))[settings.optional("OUTBOX_DATABASE", name)]
        return MongoOutbox(database, name)
    raise ConfigError(f"setting OUTBOX_STORE must be postgres or mongodb, got {kind!r}")


@cache
def publisher() -> KafkaPublisher:
    return KafkaPublisher(config().required("KAFKA_BOOTSTRAP_SERVERS"))


@cache
def dead_letters() -> PostgresDeadLetterStore:
    return PostgresDeadLetterStore(config().required("DATABASE_URL"))


def transport(url: str, headers: dict[str, str], body: bytes) -> Reply:
    return send("POST", url, body, headers, timeout=config().seconds("REPLAY_TIMEOUT_SECONDS", 10))
