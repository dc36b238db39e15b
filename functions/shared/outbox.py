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
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cloudevents.http import CloudEvent
from psycopg.types.json import Jsonb
from pymongo import ASCENDING
from pymongo.client_session import ClientSession
from pymongo.database import Database

from functions.shared import db, events, metrics
from functions.shared.kafka import KafkaPublisher, PublishError

log = logging.getLogger("shop.outbox")
BATCH = 200
RETENTION = timedelta(days=7)

# The PostgreSQL outbox table every domain schema.sql includes (see functions/shared/outbox.sql).


class Relay(Protocol):
    def relay(self, publisher: KafkaPublisher) -> int: ...


def _topic(event: CloudEvent) -> str:
    return events.TOPIC_BY_TYPE[event["type"]]


# --- PostgreSQL -------------------------------------------------------------------------


def add(conn: db.Connection, event: CloudEvent) -> None:
    """Queues `event` inside the caller's open transaction."""
    conn.execute(
        "INSERT INTO outbox (event_id, event_type, topic, partition_key, event) VALUES (%s, %s, %s, %s, %s)",
        (event["id"], event["type"], _topic(event), event["partitionkey"], Jsonb(events.to_structured(event))),
    )


class PostgresOutbox:
    """The outbox table of one domain database."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name

    def relay(self, publisher: KafkaPublisher) -> int:
        """Publishes every unsent row in id order; returns how many went out."""
        sent = 0
        while True:
            with db.transaction(self.url) as conn:
                rows = conn.execute(
                    "SELECT id, topic, event FROM outbox WHERE sent_at IS NULL"
                    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (BATCH,),
                ).fetchall()
                if rows:
                    batch = [(r["topic"], events.from_structured(r["event"])) for r in rows]
                    publisher.publish(batch)
                    conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY(%s)", ([r["id"] for r in rows],))
                    _count_published(batch)
            sent += len(rows)
            if len(rows) < BATCH:
                return sent

    def oldest_unsent_age(self) -> float:
        with db.transaction(self.url) as conn:
            row = conn.execute(
                "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
                " FROM outbox WHERE sent_at IS NULL"
            ).fetchone()
        return float(row["age"]) if row else 0.0

    def purge_sent(self) -> int:
        with db.transaction(self.url) as conn:
            cursor = conn.execute("DELETE FROM outbox WHERE sent_at < now() - %s", (RETENTION,))
            return cursor.rowcount


# --- MongoDB ----------------------------------------------------------------------------

OUTBOX_COLLECTION = "outbox"


def add_document(database: Database, session: ClientSession, event: CloudEvent) -> None:
    """Queues `event` inside the caller's MongoDB transaction."""
    database[OUTBOX_COLLECTION].insert_one(
        {
            "_id": event["id"],
            "type": event["type"],
            "topic": _topic(event),
            "event": events.to_structured(event),
            "createdAt": datetime.now(UTC),
            "sentAt": None,
            "leaseUntil": None,
        },
        session=session,
    )


def ensure_document_indexes(database: Database) -> None:
    database[OUTBOX_COLLECTION].create_index([("sentAt", ASCENDING), ("createdAt", ASCENDING)])


class MongoOutbox:
    """The outbox collection of a MongoDB database; documents are claimed with a lease."""

    def __init__(self, database: Database, name: str, lease: timedelta = timedelta(seconds=30)) -> None:
        self.collection = database[OUTBOX_COLLECTION]
        self.name = name
        self.lease = lease

    def relay(self, publisher: KafkaPublisher) -> int:
        sent = 0
        while True:
            claimed = self._claim()
            if claimed:
                batch = [(d["topic"], events.from_structured(d["event"])) for d in claimed]
                try:
                    publisher.publish(batch)
                except PublishError:
                    self._release([d["_id"] for d in claimed])
                    raise
                self.collection.update_many(
                    {"_id": {"$in": [d["_id"] for d in claimed]}},
                    {"$set": {"sentAt": datetime.now(UTC), "leaseUntil": None}},
                )
                _count_published(batch)
            sent += len(claimed)
            if len(claimed) < BATCH:
                return sent

    def _claim(self) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        free = {"sentAt": None, "$or": [{"leaseUntil": None}, {"leaseUntil": {"$lt": now}}]}
        ids = [d["_id"] for d in self.collection.find(free, {"_id": 1}).sort("createdAt", ASCENDING).limit(BATCH)]
        if not ids:
            return []
        owner = uuid.uuid4().hex
        self.collection.update_many(
            {"_id": {"$in": ids}, **free}, {"$set": {"leaseUntil": now + self.lease, "leaseOwner": owner}}
        )
        return list(self.collection.find({"leaseOwner": owner, "sentAt": None}).sort("createdAt", ASCENDING))

    def _release(self, ids: list[Any]) -> None:
        self.collection.update_many({"_id": {"$in": ids}}, {"$set": {"leaseUntil": None}})

    def oldest_unsent_age(self) -> float:
        oldest = self.collection.find_one({"sentAt": None}, sort=[("createdAt", ASCENDING)])
        if not oldest:
            return 0.0
        created = oldest["createdAt"]
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return (datetime.now(UTC) - created).total_seconds()

    def purge_sent(self) -> int:
        result = self.collection.delete_many({"sentAt": {"$lt": datetime.now(UTC) - RETENTION}})
        return int(result.deleted_count)


# --- shared ------------------------------------------------------------------------------


def _count_published(batch: list[tuple[str, CloudEvent]]) -> None:
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
