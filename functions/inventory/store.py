"""Inventory storage in PostgreSQL: every stock movement is one transaction, rows locked in SKU order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from cloudevents.http import CloudEvent

from functions.inventory.model import (
    DEFAULT_LOW_STOCK_THRESHOLD,
    ConfirmReservation,
    InsufficientStock,
    Line,
    ReleaseStock,
    Reservation,
    ReservationConflict,
    ReservationStatus,
    ReserveOutcome,
    ReserveStock,
    Restock,
    Shortage,
    StockLevel,
    UnknownSkus,
)
from functions.shared import db, idempotency, postgres_outbox


@dataclass(frozen=True)
class Delivery:
    """The event being consumed, recorded with the effect so a redelivery changes nothing."""

    consumer: str
    event: CloudEvent


EventsFor = Callable[[ReserveOutcome], list[CloudEvent]]


class InventoryStore(Protocol):
    def reserve(self, cmd: ReserveStock, events_for: EventsFor) -> ReserveOutcome: ...

    def release(self, cmd: ReleaseStock, delivery: Delivery | None = None) -> Reservation | None: ...

    def confirm(self, cmd: ConfirmReservation, delivery: Delivery | None = None) -> ReservationStatus | None: ...

    def held_longer_than(self, age: timedelta, limit: int) -> list[str]: ...

    def restock(self, cmd: Restock) -> tuple[StockLevel, bool]: ...

    def levels(self, skus: Iterable[str]) -> dict[str, StockLevel]: ...

    def track(self, sku: str, delivery: Delivery) -> bool: ...

    def low_stock(self, page: int, size: int) -> tuple[list[StockLevel], int]: ...


class Reservations:
    """`reservations`: an order number's hold is its own idempotency record, with the request's digest.
    It is made in the transaction that moves the stock, so it is complete once it is there."""

    def insert(self, conn: db.Connection, key: str, fingerprint: str | None) -> Any:
        return conn.execute(
            "INSERT INTO reservations (order_number, status, request_hash) VALUES (%s, 'HELD', %s)"
            " ON CONFLICT DO NOTHING RETURNING created_at",
            (key, fingerprint),
        ).fetchone()

    def load(self, conn: db.Connection, key: str, timeout: timedelta) -> idempotency.Record:
        existing = _reservation(conn, key, lock=False)
        assert existing is not None
        reservation, digest = existing
        if reservation.status is ReservationStatus.RELEASED:
            raise ReservationConflict(f"the reservation for {key!r} was released")
        return idempotency.Record(digest, completed=True, response=reservation)

    def reclaim(self, conn: db.Connection, key: str) -> None:
        raise AssertionError("a reservation is never a stale claim")

    def complete(self, conn: db.Connection, key: str, response: Any) -> bool:
        return True  # made complete, with its effect

    def release(self, conn: db.Connection, key: str) -> None:
        raise AssertionError("a reservation is undone by its transaction's rollback")


RESERVATIONS = Reservations()


class PostgresInventoryStore:
    def __init__(self, url: str) -> None:
        self.url = url

    def reserve(self, cmd: ReserveStock, events_for: EventsFor) -> ReserveOutcome:
        with db.transaction(self.url) as conn:
            try:
                decision = idempotency.claim(conn, RESERVATIONS, cmd.order_number, cmd.digest)
            except idempotency.Mismatch:
                raise ReservationConflict(
                    f"order number {cmd.order_number!r} already holds other items; use a new order number"
                ) from None
            if decision.claim is idempotency.Claim.REPLAY:
                return ReserveOutcome(decision.response, False)
            created = decision.inserted
            wanted = {line.sku: line.quantity for line in cmd.lines}
            before = _lock_stock(conn, wanted)
            unknown = sorted(set(wanted) - set(before))
            if unknown:
                raise UnknownSkus(unknown)
            shortages = [
                Shortage(sku, quantity, before[sku].available)
                for sku, quantity in sorted(wanted.items())
                if before[sku].available < quantity
            ]
            if shortages:
                raise InsufficientStock(shortages)
            _move_stock(conn, {sku: -quantity for sku, quantity in wanted.items()})
            conn.execute(
                "INSERT INTO reservation_lines (order_number, sku, quantity)"
                " SELECT %s, sku, quantity FROM unnest(%s::text[], %s::int[]) AS l(sku, quantity)",
                (cmd.order_number, list(wanted), list(wanted.values())),
            )
            after = tuple(
                StockLevel(sku, level.available - wanted[sku], level.low_stock_threshold)
                for sku, level in sorted(before.items())
            )
            reservation = Reservation(
                cmd.order_number, ReservationStatus.HELD, _sorted(cmd.lines), created["created_at"]
            )
            outcome = ReserveOutcome(reservation, True, after, tuple(before[s.sku] for s in after))
            for event in events_for(outcome):
                postgres_outbox.add(conn, event)
            return outcome

    def _replay(self, conn: db.Connection, cmd: ReserveStock) -> ReserveOutcome:
        existing = _reservation(conn, cmd.order_number, lock=False)
        assert existing is not None
        reservation, digest = existing
        if reservation.status is ReservationStatus.RELEASED:
            raise ReservationConflict(f"the reservation for {cmd.order_number!r} was released")
        if digest != cmd.digest:
            raise ReservationConflict(
                f"order number {cmd.order_number!r} already holds other items; use a new order number"
            )
        return ReserveOutcome(reservation, False)

    def release(self, cmd: ReleaseStock, delivery: Delivery | None = None) -> Reservation | None:
        with db.transaction(self.url) as conn:
            if delivery and not idempotency.first_delivery(conn, delivery.consumer, delivery.event):
                return None
            # A release that arrives before (or instead of) its reservation leaves a
            # tombstone, so a late reserve with that order number is refused, not leaked.
            conn.execute(
                "INSERT INTO reservations (order_number, status, request_hash) VALUES (%s, 'RELEASED', '')"
                " ON CONFLICT DO NOTHING",
                (cmd.order_number,),
            )
            found = _reservation(conn, cmd.order_number, lock=True)
            assert found is not None
            reservation, _ = found
            if reservation.status is ReservationStatus.RELEASED:
                return reservation
            _lock_stock(conn, {line.sku: line.quantity for line in reservation.lines})
            _move_stock(conn, {line.sku: line.quantity for line in reservation.lines})
            return _set_status(conn, reservation, ReservationStatus.RELEASED)

    def confirm(self, cmd: ConfirmReservation, delivery: Delivery | None = None) -> ReservationStatus | None:
        """A held reservation becomes committed. Returns its status after this (a released one stays
        released); None when there is none on record or this delivery was taken before."""
        with db.transaction(self.url) as conn:
            if delivery and not idempotency.first_delivery(conn, delivery.consumer, delivery.event):
                return None
            # The usual case, a held reservation: one UPDATE, nothing read first. A release holding
            # the row meanwhile is waited for; its RELEASED then no longer matches.
            row = conn.execute(
                "UPDATE reservations SET status = 'COMMITTED', updated_at = now()"
                " WHERE order_number = %s AND status = 'HELD' RETURNING status",
                (cmd.order_number,),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT status FROM reservations WHERE order_number = %s", (cmd.order_number,)
                ).fetchone()
            return None if row is None else ReservationStatus(row["status"])

    def held_longer_than(self, age: timedelta, limit: int) -> list[str]:
        with db.transaction(self.url) as conn:
            rows = conn.execute(
                "SELECT order_number FROM reservations WHERE status = 'HELD' AND created_at < now() - %s"
                " ORDER BY created_at LIMIT %s",
                (age, limit),
            ).fetchall()
        return [r["order_number"] for r in rows]

    def restock(self, cmd: Restock) -> tuple[StockLevel, bool]:
        with db.transaction(self.url) as conn:
            current = _lock_stock(conn, {cmd.sku: 0}).get(cmd.sku)
            if current is None:
                if cmd.mode == "add":
                    raise UnknownSkus([cmd.sku])
                threshold = cmd.low_stock_threshold
                row = conn.execute(
                    "INSERT INTO stock (sku, available, low_stock_threshold) VALUES (%s, %s, %s)"
                    " ON CONFLICT (sku) DO UPDATE SET available = excluded.available,"
                    " low_stock_threshold = coalesce(%s, stock.low_stock_threshold), updated_at = now()"
                    " RETURNING sku, available, low_stock_threshold, (xmax = 0) AS created",
                    (cmd.sku, cmd.quantity, DEFAULT_LOW_STOCK_THRESHOLD if threshold is None else threshold, threshold),
                ).fetchone()
                assert row is not None
                return _level(row), bool(row["created"])
            available = cmd.quantity if cmd.mode == "set" else current.available + cmd.quantity
            row = conn.execute(
                "UPDATE stock SET available = %s, low_stock_threshold = coalesce(%s, low_stock_threshold),"
                " updated_at = now() WHERE sku = %s RETURNING sku, available, low_stock_threshold",
                (available, cmd.low_stock_threshold, cmd.sku),
            ).fetchone()
            assert row is not None
            return _level(row), False

    def levels(self, skus: Iterable[str]) -> dict[str, StockLevel]:
        with db.transaction(self.url) as conn:
            rows = conn.execute(
                "SELECT sku, available, low_stock_threshold FROM stock WHERE sku = ANY(%s)", (list(skus),)
            ).fetchall()
        return {r["sku"]: _level(r) for r in rows}

    def low_stock(self, page: int, size: int) -> tuple[list[StockLevel], int]:
        with db.transaction(self.url) as conn:
            total = conn.execute("SELECT count(*) AS n FROM stock WHERE available < low_stock_threshold").fetchone()
            rows = conn.execute(
                "SELECT sku, available, low_stock_threshold FROM stock WHERE available < low_stock_threshold"
                " ORDER BY available, sku LIMIT %s OFFSET %s",
                (size, page * size),
            ).fetchall()
        return [_level(r) for r in rows], int(total["n"]) if total else 0

    def track(self, sku: str, delivery: Delivery) -> bool:
        with db.transaction(self.url) as conn:
            if not idempotency.first_delivery(conn, delivery.consumer, delivery.event):
                return False
            row = conn.execute(
                "INSERT INTO stock (sku, available) VALUES (%s, 0) ON CONFLICT DO NOTHING RETURNING sku", (sku,)
            ).fetchone()
            return row is not None


def _lock_stock(conn: db.Connection, skus: dict[str, int]) -> dict[str, StockLevel]:
    """Locks the SKUs' rows in SKU order (a fixed order means no deadlocks)."""
    rows = conn.execute(
        "SELECT sku, available, low_stock_threshold FROM stock WHERE sku = ANY(%s) ORDER BY sku FOR UPDATE",
        (sorted(skus),),
    ).fetchall()
    return {r["sku"]: _level(r) for r in rows}


def _move_stock(conn: db.Connection, deltas: dict[str, int]) -> None:
    conn.execute(
        "UPDATE stock s SET available = s.available + d.delta, updated_at = now()"
        " FROM unnest(%s::text[], %s::int[]) AS d(sku, delta) WHERE s.sku = d.sku",
        (list(deltas), list(deltas.values())),
    )


def _reservation(conn: db.Connection, order_number: str, *, lock: bool) -> tuple[Reservation, str] | None:
    row = conn.execute(
        "SELECT order_number, status, request_hash, created_at FROM reservations WHERE order_number = %s"
        + (" FOR UPDATE" if lock else ""),
        (order_number,),
    ).fetchone()
    if row is None:
        return None
    lines = conn.execute(
        "SELECT sku, quantity FROM reservation_lines WHERE order_number = %s ORDER BY sku", (order_number,)
    ).fetchall()
    reservation = Reservation(
        row["order_number"],
        ReservationStatus(row["status"]),
        tuple(Line(r["sku"], r["quantity"]) for r in lines),
        row["created_at"],
    )
    return reservation, row["request_hash"]


def _set_status(conn: db.Connection, reservation: Reservation, status: ReservationStatus) -> Reservation:
    conn.execute(
        "UPDATE reservations SET status = %s, updated_at = now() WHERE order_number = %s",
        (status.value, reservation.order_number),
    )
    return Reservation(reservation.order_number, status, reservation.lines, reservation.created_at)


def _level(row: dict[str, object]) -> StockLevel:
    return StockLevel(str(row["sku"]), int(row["available"]), int(row["low_stock_threshold"]))  # type: ignore[call-overload]


def _sorted(lines: tuple[Line, ...]) -> tuple[Line, ...]:
    return tuple(sorted(lines, key=lambda line: line.sku))
