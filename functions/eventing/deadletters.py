"""Dead letters: events Knative gave up delivering, kept with the error it saw, listed and replayed."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from psycopg.types.json import Jsonb

from functions.shared import db, events

ERROR_EXTENSIONS = ("knativeerrordest", "knativeerrorcode", "knativeerrordata")


@dataclass(frozen=True)
class DeadLetter:
    id: int
    event: dict[str, Any]
    destination: str
    code: int | None
    data: str | None
    received_at: datetime
    replayed_at: datetime | None = None
    replay_status: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "eventId": self.event.get("id"),
            "source": self.event.get("source"),
            "type": self.event.get("type"),
            "subject": self.event.get("subject"),
            "destination": self.destination,
            "errorCode": self.code,
            "errorData": self.data,
            "receivedAt": self.received_at.isoformat(),
            "replayedAt": self.replayed_at.isoformat() if self.replayed_at else None,
            "replayStatus": self.replay_status,
            "event": self.event,
        }


@dataclass(frozen=True)
class Incoming:
    """A dead-lettered event split into the original event and Knative's error extensions."""

    event: CloudEvent
    destination: str
    code: int | None
    data: str | None

    @classmethod
    def of(cls, event: CloudEvent) -> Incoming:
        attributes = dict(event.get_attributes())
        destination = str(attributes.pop("knativeerrordest", "") or "unknown")
        code_text = attributes.pop("knativeerrorcode", None)
        raw = attributes.pop("knativeerrordata", None)
        return cls(
            CloudEvent(attributes, event.get_data()),
            destination,
            int(code_text) if code_text not in (None, "") and str(code_text).isdigit() else None,
            _decode(raw) if raw else None,
        )


def _decode(raw: Any) -> str:
    """knativeerrordata is base64 of the failing response body; keep it readable."""
    try:
        return base64.b64decode(str(raw), validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return str(raw)


class DeadLetterStore(Protocol):
    def keep(self, incoming: Incoming) -> tuple[DeadLetter, bool]: ...

    def list(self, page: int, size: int, event_type: str | None) -> tuple[list[DeadLetter], int]: ...

    def get(self, dead_letter_id: int) -> DeadLetter | None: ...

    def replayed(self, dead_letter_id: int, status: int) -> None: ...


class PostgresDeadLetterStore:
    def __init__(self, url: str) -> None:
        self.url = url

    def keep(self, incoming: Incoming) -> tuple[DeadLetter, bool]:
        event = incoming.event
        with db.transaction(self.url) as conn:
            row = conn.execute(
                "INSERT INTO dead_letters (event_id, event_source, event_type, subject, event, error_destination,"
                " error_code, error_data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (event_source, event_id, error_destination) DO NOTHING RETURNING *",
                (
                    event["id"],
                    event["source"],
                    event["type"],
                    event.get("subject"),
                    Jsonb(events.to_structured(event)),
                    incoming.destination,
                    incoming.code,
                    incoming.data,
                ),
            ).fetchone()
            if row is not None:
                return _dead_letter(row), True
            existing = conn.execute(
                "SELECT * FROM dead_letters WHERE event_source = %s AND event_id = %s AND error_destination = %s",
                (event["source"], event["id"], incoming.destination),
            ).fetchone()
            assert existing is not None
            return _dead_letter(existing), False

    def list(self, page: int, size: int, event_type: str | None) -> tuple[list[DeadLetter], int]:
        where, params = ("WHERE event_type = %s", [event_type]) if event_type else ("", [])
        with db.transaction(self.url) as conn:
            total = conn.execute(f"SELECT count(*) AS n FROM dead_letters {where}", params).fetchone()
            rows = conn.execute(
                f"SELECT * FROM dead_letters {where} ORDER BY received_at DESC, id DESC LIMIT %s OFFSET %s",
                [*params, size, page * size],
            ).fetchall()
        return [_dead_letter(r) for r in rows], int(total["n"]) if total else 0

    def get(self, dead_letter_id: int) -> DeadLetter | None:
        with db.transaction(self.url) as conn:
            row = conn.execute("SELECT * FROM dead_letters WHERE id = %s", (dead_letter_id,)).fetchone()
        return _dead_letter(row) if row else None

    def replayed(self, dead_letter_id: int, status: int) -> None:
        with db.transaction(self.url) as conn:
            conn.execute(
                "UPDATE dead_letters SET replayed_at = now(), replay_status = %s WHERE id = %s",
                (status, dead_letter_id),
            )


def _dead_letter(row: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
        id=row["id"],
        event=row["event"],
        destination=row["error_destination"],
        code=row["error_code"],
        data=row["error_data"],
        received_at=row["received_at"],
        replayed_at=row["replayed_at"],
        replay_status=row["replay_status"],
    )


def binary_request(event_document: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """The stored event as a binary-mode HTTP request, as Knative would deliver it."""
    headers, body = to_binary(events.from_structured(event_document))
    return dict(headers), body if isinstance(body, bytes) else str(body).encode()
