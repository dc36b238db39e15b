"""The notifications ledger in PostgreSQL: one row per event that asks for an email."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Protocol

from cloudevents.http import CloudEvent

from functions.notifications.mail import Email
from functions.shared import db

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


class PostgresNotificationStore:
    def __init__(self, url: str) -> None:
        self.url = url

    def claim(self, event: CloudEvent, email: Email) -> Claim:
        with db.transaction(self.url) as conn:
            inserted = conn.execute(
                "INSERT INTO notifications (event_source, event_id, event_type, recipient, subject, status, message_id)"
                " VALUES (%s, %s, %s, %s, %s, 'SENDING', %s) ON CONFLICT DO NOTHING RETURNING 1",
                (event["source"], event["id"], event["type"], email.recipient, email.subject, email.message_id),
            ).fetchone()
            if inserted:
                return Claim.CLAIMED
            row = conn.execute(
                "SELECT status, claimed_at < now() - %s AS stale FROM notifications"
                " WHERE event_source = %s AND event_id = %s FOR UPDATE",
                (STALE_CLAIM, event["source"], event["id"]),
            ).fetchone()
            assert row is not None
            if row["status"] == "SENT":
                return Claim.SENT
            if not row["stale"]:
                return Claim.IN_FLIGHT
            conn.execute(
                "UPDATE notifications SET claimed_at = now() WHERE event_source = %s AND event_id = %s",
                (event["source"], event["id"]),
            )
            return Claim.CLAIMED

    def sent(self, event: CloudEvent) -> None:
        """Records that the mail went out. Retried while the database restarts: if this record were
        lost, the claim would go stale and a redelivery would send the mail a second time."""

        def mark() -> None:
            with db.transaction(self.url) as conn:
                conn.execute(
                    "UPDATE notifications SET status = 'SENT', sent_at = now()"
                    " WHERE event_source = %s AND event_id = %s",
                    (event["source"], event["id"]),
                )

        db.retrying(mark, what=f"recording the email for {event['id']} as sent")

    def forget(self, event: CloudEvent) -> None:
        """Drops the claim of a mail that did not go out, so a redelivery sends it without waiting."""

        def drop() -> None:
            with db.transaction(self.url) as conn:
                conn.execute(
                    "DELETE FROM notifications WHERE event_source = %s AND event_id = %s AND status = 'SENDING'",
                    (event["source"], event["id"]),
                )

        db.retrying(drop, what=f"releasing the claim on the email for {event['id']}")
