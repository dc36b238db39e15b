"""Transactional outbox in PostgreSQL: the `outbox` table of functions/shared/schema.sql.

Rows are added in the caller's transaction; relays claim them with FOR UPDATE SKIP LOCKED,
so two relays at once never send the same row.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from cloudevents.http import CloudEvent
from psycopg.types.json import Jsonb

from functions.shared import db, events
from functions.shared.outbox import BATCH, RETENTION, count_published, topic_of

if TYPE_CHECKING:
    from functions.shared.kafka import KafkaPublisher


def add(conn: db.Connection, event: CloudEvent) -> None:
    """Queues `event` inside the caller's open transaction."""
    conn.execute(
        "INSERT INTO outbox (event_id, event_type, topic, partition_key, event) VALUES (%s, %s, %s, %s, %s)",
        (event["id"], event["type"], topic_of(event), event["partitionkey"], Jsonb(events.to_structured(event))),
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
                    count_published(batch)
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

    def requeue_since(self, moment: datetime) -> int:
        with db.transaction(self.url) as conn:
            cursor = conn.execute("UPDATE outbox SET sent_at = NULL WHERE sent_at >= %s", (moment,))
            return cursor.rowcount
