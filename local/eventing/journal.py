"""What the local Broker acknowledged without an outbox behind it, kept until every Trigger has it.

The embedded Kafka broker keeps records in memory: if it dies, what it acknowledged and had not
yet delivered is gone. Events the shop's functions publish are safe in their outboxes, which
the runtime re-publishes after a restart. Events that reach the Broker another way, through its
HTTP ingress or as a subscriber's reply, are written here first, in the `eventing` database,
and re-sent after a restart. Rows are dropped once every consumer group has settled past them.
A real Kafka keeps what it acknowledged, so in a cluster none of this exists.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from cloudevents.http import CloudEvent
from psycopg.types.json import Jsonb

from functions.shared import db, events

SCHEMA = """
CREATE TABLE IF NOT EXISTS local_broker_journal (
    id          bigserial   PRIMARY KEY,
    topic       text        NOT NULL,
    event       jsonb       NOT NULL,   -- structured-mode CloudEvent
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS local_broker_journal_received ON local_broker_journal (received_at);
"""


class BrokerJournal:
    def __init__(self, url: str) -> None:
        self.url = url

    def create(self) -> None:
        with db.transaction(self.url) as conn:
            conn.execute(SCHEMA)

    def record(self, topic: str, event: CloudEvent) -> None:
        """Keeps `event`, before the broker is asked to store it (so an acknowledgement implies a row)."""
        with db.transaction(self.url) as conn:
            conn.execute(
                "INSERT INTO local_broker_journal (topic, event) VALUES (%s, %s)",
                (topic, Jsonb(_document(event))),
            )

    def since(self, moment: datetime) -> list[tuple[str, CloudEvent]]:
        """The events received at or after `moment`, oldest first."""
        with db.transaction(self.url) as conn:
            rows = conn.execute(
                "SELECT topic, event FROM local_broker_journal WHERE received_at >= %s ORDER BY id", (moment,)
            ).fetchall()
        return [(row["topic"], _event(row["event"])) for row in rows]

    def prune_before(self, moment: datetime) -> int:
        with db.transaction(self.url) as conn:
            return conn.execute("DELETE FROM local_broker_journal WHERE received_at < %s", (moment,)).rowcount


def _document(event: CloudEvent) -> dict[str, Any]:
    """The event in the CloudEvents JSON format: bytes travel as data_base64, as the format says."""
    data = event.get_data()
    if isinstance(data, bytes | bytearray):
        document = dict(event.get_attributes())
        document["data_base64"] = base64.b64encode(data).decode()
        return document
    return events.to_structured(event)


def _event(document: dict[str, Any]) -> CloudEvent:
    if "data_base64" in document:
        attributes = {k: v for k, v in document.items() if k != "data_base64"}
        return CloudEvent(attributes, base64.b64decode(document["data_base64"]))
    return events.from_structured(document)
