"""Idempotent consumers: each (source, id) takes effect once per consumer."""

from __future__ import annotations

from cloudevents.http import CloudEvent

from functions.shared import db, metrics


def first_delivery(conn: db.Connection, consumer: str, event: CloudEvent) -> bool:
    """Records the event inside the caller's transaction; False when it was already recorded.

    Call it in the same transaction as the effect: a rollback forgets both.
    """
    row = conn.execute(
        "INSERT INTO processed_events (consumer, source, event_id) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        (consumer, event["source"], event["id"]),
    ).fetchone()
    if row is None:
        metrics.note_duplicate_delivery()
    return row is not None
