"""Turns catalog HTTP requests into commands and queries, validated against api.yaml."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from functions.catalog.model import (
    DEFAULT_CATEGORY,
    DEFAULT_CURRENCY,
    CreateProduct,
    ProductQuery,
    UpdateProduct,
)
from functions.shared import problems, web
from functions.shared.identity import Identity
from functions.shared.validation import SchemaSet

SCHEMAS = SchemaSet(Path(__file__).with_name("api.yaml"))
SKU = re.compile(r"^[a-z0-9_-]{2,64}$")
LEGACY_PREFIX = "/api/product"
PRODUCTS_PREFIX = "/api/products/"
SORTS = ("name", "-name", "price", "-price")
CENT = Decimal("0.01")


def money(value: Decimal | int) -> Decimal:
    """Two decimal places, exactly (the schema already refused a third)."""
    return Decimal(value).quantize(CENT)


def is_legacy(path: str) -> bool:
    """The original system's `/api/product` (singular) endpoints keep their shapes."""
    return path.rstrip("/") == LEGACY_PREFIX


def sku_from_path(path: str) -> str:
    if not path.startswith(PRODUCTS_PREFIX):
        raise problems.not_found(f"no such resource {path!r}; products live under {PRODUCTS_PREFIX}{{sku}}")
    sku = path[len(PRODUCTS_PREFIX) :].rstrip("/")
    if not SKU.match(sku):
        raise problems.invalid_field("sku", "must match ^[a-z0-9_-]{2,64}$")
    return sku


def create_command(body: Any, *, legacy: bool) -> CreateProduct:
    if legacy:
        SCHEMAS.check("LegacyProductCreate", body)
        return CreateProduct(
            sku=body["skuCode"],
            name=body["name"].strip(),
            description=body.get("description", ""),
            category=DEFAULT_CATEGORY,
            price=money(body["price"]),
        )
    SCHEMAS.check("ProductCreate", body)
    return CreateProduct(
        sku=body["sku"],
        name=body["name"].strip(),
        description=body.get("description", ""),
        category=body["category"],
        price=money(body["price"]),
        currency=body.get("currency", DEFAULT_CURRENCY),
        active=body.get("active", True),
        image=body.get("image") or "",
    )


def update_command(path: str, body: Any, if_match: str | None) -> UpdateProduct:
    sku = sku_from_path(path)
    SCHEMAS.check("ProductUpdate", body)
    changes = dict(body)
    if "price" in changes:
        changes["price"] = money(changes["price"])
    if "name" in changes:
        changes["name"] = changes["name"].strip()
    if "image" in changes:
        changes["image"] = changes["image"] or ""  # null removes the picture
    return UpdateProduct(sku=sku, changes=changes, if_match=if_match)


def product_query(params: Mapping[str, list[str]], caller: Identity | None) -> ProductQuery:
    text = web.single(params, "q")
    if text is not None and len(text) > 100:
        raise problems.invalid_field("q", "at most 100 characters")
    category = web.single(params, "category")
    if category is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", category):
        raise problems.invalid_field("category", "must match ^[a-z0-9][a-z0-9-]{0,39}$")
    sort = web.single(params, "sort") or "name"
    if sort not in SORTS:
        raise problems.invalid_field("sort", f"must be one of {list(SORTS)}")
    include_inactive = (web.single(params, "includeInactive") or "false").lower()
    if include_inactive not in ("true", "false"):
        raise problems.invalid_field("includeInactive", "must be true or false")
    if include_inactive == "true" and not (caller and caller.is_admin):
        raise problems.forbidden("includeInactive=true needs the 'admin' role")
    return ProductQuery(
        text=(text or "").strip() or None,
        category=category,
        page=web.integer(params, "page", 0, 0, 10_000),
        size=web.integer(params, "size", 20, 1, 100),
        sort=sort,
        include_inactive=include_inactive == "true",
    )


QUERY_PARAMETERS = ("q", "category", "page", "size", "sort", "includeInactive")
