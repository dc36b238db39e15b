"""Wires the event-infrastructure functions' collaborators once per process, on first use."""

from __future__ import annotations

from functools import cache

from functions.eventing.deadletters import PostgresDeadLetterStore
from functions.shared import health
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


def dependencies() -> list[health.Dependency]:
    """An outbox relay needs its outbox's store (Kafka being down is what its outbox is for);
    dead-letter needs its database."""
    settings = config()
    if settings.optional("FUNCTION_TARGET", "") == "outbox_relay":
        if settings.optional("OUTBOX_STORE", "postgres") == "mongodb":
            return [health.mongodb(settings.required("MONGODB_URI"))]
        return [health.postgres(settings.required("DATABASE_URL"))]
    return [health.postgres(settings.required("DATABASE_URL"))]
