"""Wires the catalog's real collaborators once per process, on first use (never at import)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

from functions.catalog.store import MongoProductStore
from functions.shared import db
from functions.shared.config import config
from functions.shared.kafka import KafkaPublisher
from functions.shared.outbox import FastPathRelay, MongoOutbox


def now() -> datetime:
    """UTC, to the millisecond: what MongoDB stores, so a written product reads back equal."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@cache
def products() -> MongoProductStore:
    settings = config()
    client = db.mongo(settings.required("MONGODB_URI"))
    return MongoProductStore(client, settings.optional("CATALOG_DATABASE", "catalog"))


@cache
def outbox() -> MongoOutbox:
    return MongoOutbox(products().database, "catalog")


@cache
def publisher() -> KafkaPublisher:
    return KafkaPublisher(config().required("KAFKA_BOOTSTRAP_SERVERS"))


@cache
def fast_relay() -> FastPathRelay:
    return FastPathRelay(lambda: outbox().relay(publisher()))


def after_commit() -> None:
    fast_relay().poke()
