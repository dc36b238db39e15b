"""The notifications ledger in PostgreSQL: one row per event that asks for an email."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol

from cloudevents.http import CloudEvent

from functions.notifications.mail import Email
from functions.shared import db, idempotency

# A SENDING row older than this belongs to a process that died mid-send: it may be retried.
STALE_CLAIM = timedelta(seconds=60)


class Claim(StrEnum):
    CLAIMED = "CLAIMED"  # ours to send
    SENT = "SENT"  # sent before: do nothing
    IN_FLIGHT = "IN_FLIGHT"  # another delivery is sending it right now


class NotificationStore(Protocol):
    def claim(self, event: CloudEvent, email: Email) -> Claim: ...

    def sent(self, event: CloudEvent) -> None: ...

    def forget(self, event: CloudEvent) -> None: ...


@dataclass(frozen=True)
class Mail:
    """A notification's idempotency key: its event, and the mail it asks for (what the row records)."""

    event: CloudEvent
    email: Email | None = None

    def __str__(self) -> str:
        return f"the email for event {self.event['id']}"


class Notifications:
    """`notifications`: one row per event asking for an email, SENDING while claimed, SENT once done."""

    def insert(self, conn: db.Connection, key: Mail, fingerprint: str | None) -> bool:
        event, email = key.event, key.email
        assert email is not None
        row = conn.execute(
            "INSERT INTO notifications (event_source, event_id, event_type, recipient, subject, status, message_id)"
            " VALUES (%s, %s, %s, %s, %s, 'SENDING', %s) ON CONFLICT DO NOTHING RETURNING 1",
            (event["source"], event["id"], event["type"], email.recipient, email.subject, email.message_id),
        ).fetchone()
        return row is not None

    def load(self, conn: db.Connection, key: Mail, timeout: timedelta) -> idempotency.Record:
        row = conn.execute(
            "SELECT status, claimed_at < now() - %s AS stale FROM notifications"
            " WHERE event_source = %s AND event_id = %s FOR UPDATE",
            (timeout, key.event["source"], key.event["id"]),
        ).fetchone()
        assert row is not None
        return idempotency.Record(None, row["status"] == "SENT", bool(row["stale"]))

    def reclaim(self, conn: db.Connection, key: Mail) -> None:
        conn.execute(
            "UPDATE notifications SET claimed_at = now() WHERE event_source = %s AND event_id = %s",
            (key.event["source"], key.event["id"]),
        )

    def complete(self, conn: db.Connection, key: Mail, response: Any) -> bool:
        done = conn.execute(
            "UPDATE notifications SET status = 'SENT', sent_at = now()"
            " WHERE event_source = %s AND event_id = %s AND status = 'SENDING'",
            (key.event["source"], key.event["id"]),
        )
        return done.rowcount == 1

    def release(self, conn: db.Connection, key: Mail) -> None:
        conn.execute(
            "DELETE FROM notifications WHERE event_source = %s AND event_id = %s AND status = 'SENDING'",
            (key.event["source"], key.event["id"]),
        )


LEDGER = Notifications()
CLAIMS = {
    idempotency.Claim.NEW: Claim.CLAIMED,
    idempotency.Claim.REPLAY: Claim.SENT,
    idempotency.Claim.IN_FLIGHT: Claim.IN_FLIGHT,
}


class PostgresNotificationStore:
    def __init__(self, url: str) -> None:
        self.url = url

    def claim(self, event: CloudEvent, email: Email) -> Claim:
        mail = Mail(event, email)
        # A first delivery, the usual case: one INSERT, committed as it runs.
        with db.autocommit(self.url) as conn:
            if LEDGER.insert(conn, mail, None):
                return Claim.CLAIMED
        # A mail claimed before: whether it went out, is going out, or was left behind, decided
        # under the claim's lock (a claim released meanwhile is taken by the INSERT again).
        with db.transaction(self.url) as conn:
            return CLAIMS[idempotency.claim(conn, LEDGER, mail, timeout=STALE_CLAIM).claim]

    def sent(self, event: CloudEvent) -> None:
        """Records that the mail went out. Retried while the database restarts: if this record were
        lost, the claim would go stale and a redelivery would send the mail a second time."""

        def mark() -> None:
            # Overtaken: an earlier try recorded it and only its answer was lost (the database restarted).
            # One UPDATE: committed as it runs, no transaction around it.
            with db.autocommit(self.url) as conn, contextlib.suppress(idempotency.Overtaken):
                idempotency.complete(conn, LEDGER, Mail(event))

        db.retrying(mark, what=f"recording the email for {event['id']} as sent")

    def forget(self, event: CloudEvent) -> None:
        """Drops the claim of a mail that did not go out, so a redelivery sends it without waiting."""
        idempotency.release(self.url, LEDGER, Mail(event))
