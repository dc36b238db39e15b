"""Turns order HTTP requests into commands and queries, validated against api.yaml."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from functions.orders.model import (
    Address,
    CancelOrder,
    Contact,
    Customer,
    OrderQuery,
    OrderStatus,
    PlaceOrder,
    RequestedLine,
)
from functions.shared import problems, web
from functions.shared.identity import Identity
from functions.shared.validation import SchemaSet

SCHEMAS = SchemaSet(Path(__file__).with_name("api.yaml"))
ORDERS_PREFIX = "/api/orders"
LEGACY_PATH = "/api/order"
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
ORDER_NUMBER = re.compile(r"^[A-Za-z0-9-]{6,64}$")
ORDER_PATH = re.compile(r"^/api/orders/(?P<number>[^/]+)/?$")
CANCEL_PATH = re.compile(r"^/api/orders/(?P<number>[^/]+)/cancel/?$")
LIST_PARAMETERS = ("page", "size", "status", "customer", "email", "from", "to")


def is_legacy(path: str) -> bool:
    return path.rstrip("/") == LEGACY_PATH


def customer_of(caller: Identity) -> Customer:
    if not caller.email:
        raise problems.unprocessable("your account has no email address; the shop needs one to confirm orders")
    return Customer(caller.subject, caller.email, caller.first_name, caller.last_name)


def place_command(body: Any, caller: Identity, idempotency_key: str | None, *, legacy: bool) -> PlaceOrder:
    if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise problems.invalid_field("Idempotency-Key", "8 to 128 letters, digits, '-' or '_' (a UUID works)")
    if legacy:
        SCHEMAS.check("LegacyPlaceOrder", body)
        lines: tuple[RequestedLine, ...] = (RequestedLine(body["skuCode"], body["quantity"]),)
    else:
        _refuse_prices(body)
        SCHEMAS.check("PlaceOrder", body)
        lines = tuple(RequestedLine(item["skuCode"], item["quantity"]) for item in body["items"])
        seen: dict[str, int] = {}
        for i, line in enumerate(lines):
            if line.sku in seen:
                raise problems.invalid_field(
                    f"/items/{i}/skuCode", f"{line.sku!r} is already line {seen[line.sku]}; give one line per product"
                )
            seen[line.sku] = i
        return PlaceOrder(customer_of(caller), lines, idempotency_key, legacy, *_details(body))
    return PlaceOrder(customer_of(caller), lines, idempotency_key, legacy)


def _details(body: dict[str, Any]) -> tuple[Contact | None, Address | None]:
    """Contact and shipping address of a checkout (the schema checked them), trimmed."""
    trimmed = {
        part: {key: value.strip() for key, value in body[part].items()}
        for part in ("contact", "shippingAddress")
        if part in body
    }
    contact = trimmed.get("contact")
    address = trimmed.get("shippingAddress")
    return (
        Contact.of(contact) if contact else None,
        Address.of(address) if address else None,
    )


def _refuse_prices(body: Any) -> None:
    """A price in the request is an attempt to set it: say so plainly, not as 'additional property'."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        return
    errors = [
        problems.FieldError(f"/items/{i}/{name}", "prices come from the catalog; do not send them")
        for i, item in enumerate(body["items"])
        if isinstance(item, dict)
        for name in ("price", "unitPrice", "lineTotal", "total")
        if name in item
    ]
    if "total" in body:
        errors.append(problems.FieldError("/total", "the total is computed from catalog prices; do not send it"))
    if errors:
        raise problems.invalid(errors)


def order_number_from(path: str, pattern: re.Pattern[str]) -> str:
    match = pattern.match(path)
    if not match:
        raise problems.not_found(f"no such resource {path!r}")
    number = match["number"]
    if not ORDER_NUMBER.match(number):
        raise problems.invalid_field("orderNumber", f"must match {ORDER_NUMBER.pattern}")
    return number


def cancel_command(path: str, body: Any | None) -> CancelOrder:
    number = order_number_from(path, CANCEL_PATH)
    if body is None:
        return CancelOrder(number, "")
    SCHEMAS.check("CancelOrder", body)
    return CancelOrder(number, body.get("reason", "").strip())


def order_query(params: Mapping[str, list[str]], caller: Identity) -> OrderQuery:
    status = web.single(params, "status")
    if status is not None and status not in OrderStatus.__members__:
        raise problems.invalid_field("status", "PLACED or CANCELLED")
    customer = web.single(params, "customer")
    email = web.single(params, "email")
    if (customer or email) and not caller.is_admin:
        raise problems.forbidden("filtering by customer or email needs the 'admin' role")
    if customer is not None and not 1 <= len(customer) <= 128:
        raise problems.invalid_field("customer", "1 to 128 characters")
    if email is not None and not 3 <= len(email) <= 254:
        raise problems.invalid_field("email", "3 to 254 characters")
    placed_from, placed_to = _day(params, "from"), _day(params, "to")
    if placed_from and placed_to and placed_from > placed_to:
        raise problems.invalid_field("from", f"{placed_from} is after to={placed_to}")
    return OrderQuery(
        placed_from=placed_from,
        placed_to=placed_to,
        customer_id=customer if caller.is_admin else caller.subject,
        status=OrderStatus(status) if status else None,
        email=email,
        page=web.integer(params, "page", 0, 0, 10_000),
        size=web.integer(params, "size", 20, 1, 100),
    )


def _day(params: Mapping[str, list[str]], name: str) -> date | None:
    raw = web.single(params, name)
    if raw is None:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            return date.fromisoformat(raw)
    except ValueError:
        pass
    raise problems.invalid_field(name, f"a day as YYYY-MM-DD, got {raw!r}")
