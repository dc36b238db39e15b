"""Transactional outbox in MongoDB: an outbox collection written in the change's transaction.

The relay claims documents with a lease (MongoDB has no SKIP LOCKED): two relays never
hold the same document, and a relay that dies mid-way lets its lease expire.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cloudevents.http import CloudEvent
from pymongo import ASCENDING
from pymongo.client_session import ClientSession
from pymongo.database import Database

from functions.shared import events
from functions.shared.outbox import BATCH, RETENTION, count_published, topic_of

if TYPE_CHECKING:
    from functions.shared.kafka import KafkaPublisher

OUTBOX_COLLECTION = "outbox"


def add_document(database: Database, session: ClientSession, event: CloudEvent) -> None:
    """Queues `event` inside the caller's MongoDB transaction."""
    database[OUTBOX_COLLECTION].insert_one(
        {
            "_id": event["id"],
            "type": event["type"],
            "topic": topic_of(event),
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
                except Exception:
                    self._release([d["_id"] for d in claimed])
                    raise
                self.collection.update_many(
                    {"_id": {"$in": [d["_id"] for d in claimed]}},
                    {"$set": {"sentAt": datetime.now(UTC), "leaseUntil": None}},
                )
                count_published(batch)
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

    def requeue_since(self, moment: datetime) -> int:
        result = self.collection.update_many(
            {"sentAt": {"$gte": moment}}, {"$set": {"sentAt": None, "leaseUntil": None}}
        )
        return int(result.modified_count)
