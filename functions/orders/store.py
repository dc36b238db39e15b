"""Orders storage in PostgreSQL: order, lines, outbox row and idempotency answer commit together."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from cloudevents.http import CloudEvent
from psycopg.types.json import Jsonb

from functions.orders.model import (
    Address,
    CancelOrder,
    Contact,
    Customer,
    KeyInFlight,
    KeyInUse,
    Order,
    OrderLine,
    OrderNotCancellable,
    OrderPage,
    OrderQuery,
    OrderStatus,
    StoredResponse,
)
from functions.shared import db, idempotency, postgres_outbox, web

# A claim with no answer after this long belongs to a request that died: it may be taken over
# (IDEMPOTENCY_CLAIM_TIMEOUT_SECONDS). A request that was only slow cannot commit after that.
ABANDONED_CLAIM = timedelta(seconds=30)


class OrderStore(Protocol):
    def claim_key(self, customer_id: str, key: str, request_hash: str) -> StoredResponse | None: ...

    def release_key(self, customer_id: str, key: str) -> None: ...

    def insert(self, order: Order, event: CloudEvent, key: str | None, response: dict[str, Any] | None) -> None: ...

    def get(self, order_number: str) -> Order | None: ...

    def search(self, query: OrderQuery) -> OrderPage: ...

    def cancel(
        self,
        cmd: CancelOrder,
        allowed: Callable[[Order], bool],
        now: datetime,
        event_for: Callable[[Order], CloudEvent],
    ) -> Order | None: ...


class IdempotencyKeys:
    """`idempotency_keys`: one record per (customer, Idempotency-Key), its answer kept with the order."""

    def insert(self, conn: db.Connection, key: tuple[str, str], fingerprint: str | None) -> bool:
        row = conn.execute(
            "INSERT INTO idempotency_keys (customer_id, key, request_hash) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING key",
            (*key, fingerprint),
        ).fetchone()
        return row is not None

    def load(self, conn: db.Connection, key: tuple[str, str], timeout: timedelta) -> idempotency.Record:
        row = conn.execute(
            "SELECT request_hash, order_number, response, claimed_at < now() - %s AS stale"
            " FROM idempotency_keys WHERE customer_id = %s AND key = %s FOR UPDATE",
            (timeout, *key),
        ).fetchone()
        assert row is not None
        answered = row["response"] is not None
        response = StoredResponse(201, row["response"], row["order_number"]) if answered else None
        return idempotency.Record(row["request_hash"], answered, bool(row["stale"]), response)

    def reclaim(self, conn: db.Connection, key: tuple[str, str]) -> None:
        conn.execute("UPDATE idempotency_keys SET claimed_at = now() WHERE customer_id = %s AND key = %s", key)

    def complete(self, conn: db.Connection, key: tuple[str, str], response: Any) -> bool:
        stored: StoredResponse = response
        answered = conn.execute(
            "UPDATE idempotency_keys SET order_number = %s, response = %s"
            " WHERE customer_id = %s AND key = %s AND response IS NULL",
            (stored.order_number, Jsonb(stored.body, dumps=_json), *key),
        )
        return answered.rowcount == 1

    def release(self, conn: db.Connection, key: tuple[str, str]) -> None:
        conn.execute("DELETE FROM idempotency_keys WHERE customer_id = %s AND key = %s AND response IS NULL", key)


KEYS = IdempotencyKeys()


class PostgresOrderStore:
    def __init__(self, url: str, *, abandoned_after: timedelta = ABANDONED_CLAIM) -> None:
        self.url = url
        self.abandoned_after = abandoned_after

    def claim_key(self, customer_id: str, key: str, request_hash: str) -> StoredResponse | None:
        """Claims the key for this request; returns the stored answer if it was already given.

        Raises KeyInUse for another body, KeyInFlight while the first request still runs.
        """
        with db.transaction(self.url) as conn:
            try:
                decision = idempotency.claim(conn, KEYS, (customer_id, key), request_hash, self.abandoned_after)
            except idempotency.Mismatch:
                raise KeyInUse() from None
        if decision.claim is idempotency.Claim.IN_FLIGHT:
            raise KeyInFlight()
        return decision.response if decision.claim is idempotency.Claim.REPLAY else None

    def release_key(self, customer_id: str, key: str) -> None:
        """Frees the key of a request that failed, so its retry need not wait for the claim to go stale."""
        idempotency.release(self.url, KEYS, (customer_id, key))

    def insert(self, order: Order, event: CloudEvent, key: str | None, response: dict[str, Any] | None) -> None:
        """Commits the order with its event and, for a key, its answer.

        Raises KeyInFlight, committing nothing, when the key's claim was taken over and answered
        meanwhile (this request ran past the claim timeout): one key never makes two orders.
        """
        with db.transaction(self.url) as conn:
            c = order.customer
            # The order, its lines and its event reach the server together (BEGIN included): one
            # round trip instead of four. The pipeline's end waits for them; an error raises there.
            with conn.pipeline():
                conn.execute(
                    "INSERT INTO orders (order_number, customer_id, email, first_name, last_name, status, total,"
                    " currency, placed_at, contact, shipping_address)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        order.order_number,
                        c.id,
                        c.email,
                        c.first_name,
                        c.last_name,
                        order.status.value,
                        order.total,
                        order.currency,
                        order.placed_at,
                        Jsonb(order.contact.as_json()) if order.contact else None,
                        Jsonb(order.shipping_address.as_json()) if order.shipping_address else None,
                    ),
                )
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO order_lines (order_number, line_no, sku, name, quantity, unit_price, line_total)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        [
                            (order.order_number, i, ln.sku, ln.name, ln.quantity, ln.unit_price, ln.line_total)
                            for i, ln in enumerate(order.lines)
                        ],
                    )
                postgres_outbox.add(conn, event)
            if key is not None:
                try:
                    idempotency.complete(
                        conn, KEYS, (c.id, key), StoredResponse(201, response or {}, order.order_number)
                    )
                except idempotency.Overtaken:
                    raise KeyInFlight() from None

    def get(self, order_number: str) -> Order | None:
        with db.transaction(self.url) as conn:
            return _load(conn, order_number, lock=False)

    def search(self, query: OrderQuery) -> OrderPage:
        conditions: list[str] = ["true"]
        params: list[object] = []
        if query.customer_id is not None:
            conditions.append("customer_id = %s")
            params.append(query.customer_id)
        if query.status is not None:
            conditions.append("status = %s")
            params.append(query.status.value)
        if query.email is not None:
            conditions.append("lower(email) = lower(%s)")
            params.append(query.email)
        if query.placed_from is not None:
            conditions.append("placed_at >= %s::date::timestamp AT TIME ZONE 'UTC'")
            params.append(query.placed_from)
        if query.placed_to is not None:
            conditions.append("placed_at < (%s::date + 1)::timestamp AT TIME ZONE 'UTC'")
            params.append(query.placed_to)
        where = " AND ".join(conditions)
        with db.transaction(self.url) as conn:
            total_row = conn.execute(f"SELECT count(*) AS n FROM orders WHERE {where}", params).fetchone()
            numbers = conn.execute(
                f"SELECT order_number FROM orders WHERE {where} ORDER BY placed_at DESC, order_number"
                " LIMIT %s OFFSET %s",
                [*params, query.size, query.page * query.size],
            ).fetchall()
            orders = _load_many(conn, [r["order_number"] for r in numbers])
        return OrderPage(orders, query.page, query.size, int(total_row["n"]) if total_row else 0)

    def cancel(
        self,
        cmd: CancelOrder,
        allowed: Callable[[Order], bool],
        now: datetime,
        event_for: Callable[[Order], CloudEvent],
    ) -> Order | None:
        """Cancels a PLACED order the caller may see; None if there is none for them."""
        with db.transaction(self.url) as conn:
            order = _load(conn, cmd.order_number, lock=True)
            if order is None or not allowed(order):
                return None
            if order.status is not OrderStatus.PLACED:
                raise OrderNotCancellable(order.order_number, order.status)
            conn.execute(
                "UPDATE orders SET status = 'CANCELLED', cancelled_at = %s, cancel_reason = %s WHERE order_number = %s",
                (now, cmd.reason, cmd.order_number),
            )
            cancelled = Order(
                order.order_number,
                order.customer,
                OrderStatus.CANCELLED,
                order.lines,
                order.currency,
                order.placed_at,
                now,
                cmd.reason,
                order.contact,
                order.shipping_address,
            )
            postgres_outbox.add(conn, event_for(cancelled))
            return cancelled


def _json(value: Any) -> str:
    return json.dumps(value, default=web.to_json_value)


def _load(conn: db.Connection, order_number: str, *, lock: bool) -> Order | None:
    orders = _load_many(conn, [order_number], lock=lock)
    return orders[0] if orders else None


def _load_many(conn: db.Connection, numbers: list[str], *, lock: bool = False) -> list[Order]:
    if not numbers:
        return []
    rows = conn.execute(
        "SELECT * FROM orders WHERE order_number = ANY(%s)" + (" FOR UPDATE" if lock else ""), (numbers,)
    ).fetchall()
    lines: dict[str, list[OrderLine]] = {}
    for line in conn.execute(
        "SELECT order_number, sku, name, quantity, unit_price FROM order_lines WHERE order_number = ANY(%s)"
        " ORDER BY order_number, line_no",
        (numbers,),
    ).fetchall():
        lines.setdefault(line["order_number"], []).append(
            OrderLine(line["sku"], line["name"], line["quantity"], line["unit_price"])
        )
    by_number = {
        r["order_number"]: Order(
            order_number=r["order_number"],
            customer=Customer(r["customer_id"], r["email"], r["first_name"], r["last_name"]),
            status=OrderStatus(r["status"]),
            lines=tuple(lines.get(r["order_number"], [])),
            currency=r["currency"],
            placed_at=r["placed_at"],
            cancelled_at=r["cancelled_at"],
            cancel_reason=r["cancel_reason"],
            contact=Contact.of(r["contact"]) if r.get("contact") else None,
            shipping_address=Address.of(r["shipping_address"]) if r.get("shipping_address") else None,
        )
        for r in rows
    }
    return [by_number[n] for n in numbers if n in by_number]
