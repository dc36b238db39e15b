"""Turns inventory HTTP requests into commands and queries, validated against api.yaml."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from functions.inventory.model import MAX_LINE_QUANTITY, Line, LowStockQuery, ReserveStock, Restock, StockQuery
from functions.shared import problems, web
from functions.shared.identity import Identity
from functions.shared.validation import SchemaSet

SCHEMAS = SchemaSet(Path(__file__).with_name("api.yaml"))
SKU = re.compile(r"^[a-z0-9_-]{2,64}$")
ORDER_NUMBER = re.compile(r"^[A-Za-z0-9-]{6,64}$")
RESTOCK_PREFIX = "/api/inventory/"
RELEASE_PATH = re.compile(r"^/reservations/(?P<order>[^/]+)/release/?$")
CHECK_PARAMETERS = ("skuCode", "quantity", "lowStock", "page", "size")
LEVEL_PREFIX = "/api/inventory/"
MAX_CHECK_SKUS = 50


def is_level_path(path: str) -> bool:
    """GET /api/inventory/{sku} rather than the check at /api/inventory."""
    return path.startswith(LEVEL_PREFIX) and bool(path[len(LEVEL_PREFIX) :].strip("/"))


def sku_from_path(path: str, prefix: str) -> str:
    sku = path[len(prefix) :].rstrip("/")
    if not SKU.match(sku):
        raise problems.invalid_field("sku", f"must match {SKU.pattern}")
    return sku


def low_stock_query(params: Mapping[str, list[str]], caller: Identity | None) -> LowStockQuery | None:
    """The low-stock listing (lowStock=true, admin only), or None for a stock check."""
    flag = (web.single(params, "lowStock") or "false").lower()
    if flag not in ("true", "false"):
        raise problems.invalid_field("lowStock", "must be true or false")
    paging = {"page", "size"} & set(params)
    if flag == "false":
        if paging:
            raise problems.invalid_field(sorted(paging)[0], "pages are for the low-stock list (lowStock=true)")
        return None
    if not (caller and caller.is_admin):
        raise problems.forbidden("lowStock=true needs the 'admin' role")
    if "skuCode" in params or "quantity" in params:
        raise problems.invalid_field("lowStock", "list low stock or check SKUs, not both")
    return LowStockQuery(web.integer(params, "page", 0, 0, 10_000), web.integer(params, "size", 20, 1, 100))


def stock_query(params: Mapping[str, list[str]]) -> tuple[StockQuery, bool]:
    """The lines to check and whether the caller used the original single-SKU form."""
    skus = params.get("skuCode", [])
    if not skus:
        raise problems.invalid_field("skuCode", "give at least one skuCode")
    if len(skus) > MAX_CHECK_SKUS:
        raise problems.invalid_field("skuCode", f"at most {MAX_CHECK_SKUS} per request")
    errors = [problems.FieldError("skuCode", f"{s!r} must match {SKU.pattern}") for s in skus if not SKU.match(s)]
    raw_quantities = params.get("quantity", [])
    quantities = [_quantity(q, errors) for q in raw_quantities]
    if len(quantities) not in (0, 1, len(skus)):
        errors.append(problems.FieldError("quantity", "give one quantity for all SKUs or one per skuCode"))
    if len(set(skus)) != len(skus):
        errors.append(problems.FieldError("skuCode", "each SKU once"))
    if errors:
        raise problems.invalid(errors)
    if len(quantities) <= 1:
        quantities = [quantities[0] if quantities else 1] * len(skus)
    return StockQuery(tuple(Line(s, q) for s, q in zip(skus, quantities, strict=True))), len(skus) == 1


def _quantity(raw: str, errors: list[problems.FieldError]) -> int:
    try:
        value = int(raw)
    except ValueError:
        errors.append(problems.FieldError("quantity", f"{raw!r} is not an integer"))
        return 1
    if not 1 <= value <= MAX_LINE_QUANTITY:
        errors.append(problems.FieldError("quantity", f"must be between 1 and {MAX_LINE_QUANTITY}, got {value}"))
    return value


def reserve_command(body: Any) -> ReserveStock:
    SCHEMAS.check("ReserveRequest", body)
    lines = tuple(Line(item["skuCode"], item["quantity"]) for item in body["items"])
    seen: set[str] = set()
    for i, line in enumerate(lines):
        if line.sku in seen:
            raise problems.invalid_field(f"/items/{i}/skuCode", f"{line.sku!r} appears twice; merge the lines")
        seen.add(line.sku)
    return ReserveStock(body["orderNumber"], lines)


def order_number_from_release_path(path: str) -> str:
    match = RELEASE_PATH.match(path)
    if not match:
        raise problems.not_found(f"no such resource {path!r}; release with POST /reservations/{{orderNumber}}/release")
    order_number = match["order"]
    if not ORDER_NUMBER.match(order_number):
        raise problems.invalid_field("orderNumber", f"must match {ORDER_NUMBER.pattern}")
    return order_number


def restock_command(path: str, body: Any) -> Restock:
    if not path.startswith(RESTOCK_PREFIX):
        raise problems.not_found(f"no such resource {path!r}; restock with PUT {RESTOCK_PREFIX}{{sku}}")
    sku = sku_from_path(path, RESTOCK_PREFIX)
    SCHEMAS.check("Restock", body)
    return Restock(sku, body["quantity"], body.get("mode", "set"), body.get("lowStockThreshold"))
