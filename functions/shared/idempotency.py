"""Idempotency, written once: a request or an event takes effect once, however often it arrives.

A record per key (an Idempotency-Key, an event's (source, id), an order number) is claimed by the
first attempt and completed with its effect. `claim()` decides what any attempt gets:

    NEW        no record yet, or the one there was abandoned: claimed for this attempt, go ahead
    REPLAY     completed before: answer as then (the record's response)
    IN_FLIGHT  claimed by an attempt that is still running: try again shortly

and raises `Mismatch` when the key came with another request (its fingerprint differs). An
attempt that claims and then fails releases its claim; one that dies leaves it to go stale after
the timeout, when the next attempt takes it over.

Each area keeps its records in its own table behind `Records`, a small persistence protocol
(as powertools' BasePersistenceLayer); every call runs in the caller's transaction, so a record
and its effect commit or roll back together. A consumer whose whole effect is one transaction
claims and completes at once: `first_time()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from cloudevents.http import CloudEvent

from functions.shared import db, metrics

K = TypeVar("K", contravariant=True)
K_ = TypeVar("K_")


class Claim(StrEnum):
    NEW = "NEW"
    REPLAY = "REPLAY"
    IN_FLIGHT = "IN_FLIGHT"


class Mismatch(Exception):
    """The key was used for another request: the caller must use a new key."""


@dataclass(frozen=True)
class Record:
    """What is kept of a key: the request it was claimed for, whether its effect is done, and how."""

    fingerprint: str | None
    completed: bool
    stale: bool = False  # claimed longer ago than the timeout, and not completed: its attempt died
    response: Any = None


class Records(Protocol[K]):
    """An area's idempotency records, one table; each method runs in the caller's open transaction."""

    def insert(self, conn: db.Connection, key: K, fingerprint: str | None) -> Any:
        """Claims a new record: something true (the new row, say), or None/False when the key has one already."""

    def load(self, conn: db.Connection, key: K, timeout: timedelta) -> Record:
        """The existing record, locked until the transaction ends."""

    def reclaim(self, conn: db.Connection, key: K) -> None:
        """Takes a stale claim over for this attempt (its clock starts again)."""

    def complete(self, conn: db.Connection, key: K, response: Any) -> bool:
        """Marks the claim done, keeping `response`; False if it was completed already (by another attempt)."""

    def release(self, conn: db.Connection, key: K) -> None:
        """Drops an unfinished claim, so that a retry need not wait for it to go stale."""


@dataclass(frozen=True)
class Decision(Generic[K_]):
    claim: Claim
    response: Any = None  # REPLAY: what the completed attempt kept
    inserted: Any = None  # NEW: what `insert` gave back


def claim(
    conn: db.Connection,
    records: Records[K],
    key: K,
    fingerprint: str | None = None,
    timeout: timedelta = timedelta(0),
) -> Decision[Any]:
    """What this attempt gets for `key`; see the module's docstring."""
    inserted = records.insert(conn, key, fingerprint)
    if inserted:
        return Decision(Claim.NEW, inserted=inserted)
    record = records.load(conn, key, timeout)
    if fingerprint is not None and record.fingerprint != fingerprint:
        raise Mismatch(str(key))
    if record.completed:
        return Decision(Claim.REPLAY, record.response)
    if not record.stale:
        return Decision(Claim.IN_FLIGHT)
    records.reclaim(conn, key)
    return Decision(Claim.NEW)


class Overtaken(Exception):
    """This attempt's claim went stale and another attempt took the key over and completed it."""


def complete(conn: db.Connection, records: Records[K], key: K, response: Any = None) -> None:
    """Completes the claim in the effect's transaction; raises Overtaken (so the effect rolls back too)
    when an attempt that took the stale claim over has completed it meanwhile."""
    if not records.complete(conn, key, response):
        raise Overtaken(str(key))


def release(url: str, records: Records[K], key: K) -> None:
    """Drops the claim of an attempt that failed, in a transaction of its own (retried while the
    database restarts: often the very reason the attempt failed)."""

    def drop() -> None:
        with db.transaction(url) as conn:
            records.release(conn, key)

    db.retrying(drop, what=f"releasing the claim on {key}")


def first_time(conn: db.Connection, records: Records[K], key: K) -> bool:
    """For an effect done in this very transaction: claimed and completed at once, True the first time.

    A concurrent duplicate waits on the new record's lock until this transaction ends, then
    finds it completed (or, after a rollback, claims it itself).
    """
    return claim(conn, records, key).claim is Claim.NEW


class ProcessedEvents:
    """`processed_events` (shared/schema.sql): which events each consumer has taken effect for."""

    def insert(self, conn: db.Connection, key: tuple[str, str, str], fingerprint: str | None) -> bool:
        row = conn.execute(
            "INSERT INTO processed_events (consumer, source, event_id) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            key,
        ).fetchone()
        return row is not None

    def load(self, conn: db.Connection, key: tuple[str, str, str], timeout: timedelta) -> Record:
        return Record(None, completed=True)

    def reclaim(self, conn: db.Connection, key: tuple[str, str, str]) -> None:
        raise AssertionError("a processed event is never a stale claim")

    def complete(self, conn: db.Connection, key: tuple[str, str, str], response: Any) -> bool:
        return True  # inserted completed

    def release(self, conn: db.Connection, key: tuple[str, str, str]) -> None:
        raise AssertionError("a processed event is released by its transaction's rollback")


PROCESSED_EVENTS = ProcessedEvents()


def first_delivery(conn: db.Connection, consumer: str, event: CloudEvent) -> bool:
    """Records the event for `consumer` inside the caller's transaction; False when it was already recorded.

    Call it in the same transaction as the effect: a rollback forgets both.
    """
    first = first_time(conn, PROCESSED_EVENTS, (consumer, event["source"], event["id"]))
    if not first:
        metrics.note_duplicate_delivery()
    return first
