"""Catalog functions through functions_framework.create_app, against the real MongoDB-protocol server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import functions_framework
import pytest
from bson.decimal128 import Decimal128
from flask.testing import FlaskClient

from functions.catalog.model import ProductQuery
from functions.catalog.store import MongoProductStore
from functions.catalog.view import CatalogView
from functions.shared import mongo as mongo_clients
from tests.conftest import People, eventually, problem_of

SOURCE = "functions/catalog/main.py"


@pytest.fixture
def catalog(stack: Any, function_env: Callable[..., None]) -> Callable[[str], FlaskClient]:
    # No Kafka for in-process writers: the fast-path relay fails quietly and rows stay unsent,
    # which is what these tests look at.
    function_env(
        MONGODB_URI=stack.mongodb_uri, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", IDENTITY_SECRET=stack.identity_secret
    )
    return lambda target: functions_framework.create_app(target, SOURCE).test_client()


@pytest.fixture
def mongo(stack: Any) -> Any:
    return mongo_clients.client(stack.mongodb_uri)["catalog"]


def new_sku() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


def product_body(sku: str, **changes: Any) -> dict[str, Any]:
    return {
        "sku": sku,
        "name": "Test phone",
        "description": "A phone for tests",
        "category": "phones",
        "price": 199.99,
        **changes,
    }


def test_create_stores_exact_price_and_queues_its_event_in_the_same_transaction(
    catalog: Callable[[str], FlaskClient], people: People, mongo: Any
) -> None:
    sku = new_sku()
    response = catalog("product_create").post(
        "/api/products", json=product_body(sku, price=1234.5), headers=people.admin()
    )
    assert response.status_code == 201, response.data
    body = response.get_json()
    assert body["sku"] == sku and body["price"] == 1234.5 and body["version"] == 1 and body["active"] is True
    assert response.headers["Location"] == f"/api/products/{sku}"
    stored = mongo.products.find_one({"sku": sku})
    assert stored["price"] == Decimal128(Decimal("1234.50"))
    queued = list(mongo.outbox.find({"event.subject": sku}))
    assert [q["type"] for q in queued] == ["com.shop.product.created"]
    assert queued[0]["event"]["data"]["price"] == "1234.50"
    assert queued[0]["event"]["partitionkey"] == sku and queued[0]["sentAt"] is None


def test_a_duplicate_sku_is_a_conflict_and_writes_nothing(
    catalog: Callable[[str], FlaskClient], people: People, mongo: Any
) -> None:
    sku = new_sku()
    client = catalog("product_create")
    assert client.post("/api/products", json=product_body(sku), headers=people.admin()).status_code == 201
    again = client.post("/api/products", json=product_body(sku, name="Other"), headers=people.admin())
    assert again.status_code == 409
    assert problem_of(again)["sku"] == sku
    assert mongo.products.count_documents({"sku": sku}) == 1
    assert mongo.outbox.count_documents({"event.subject": sku}) == 1


def test_the_original_shapes_keep_working(catalog: Callable[[str], FlaskClient], people: People) -> None:
    sku = new_sku()
    created = catalog("product_create").post(
        "/api/product",
        json={"name": "Legacy", "description": "old body", "skuCode": sku, "price": 10},
        headers=people.admin(),
    )
    assert created.status_code == 201, created.data
    assert set(created.get_json()) == {"id", "name", "description", "skuCode", "price"}
    listed = catalog("product_list").get("/api/product")
    assert listed.status_code == 200
    mine = [p for p in listed.get_json() if p["skuCode"] == sku]
    assert mine == [
        {"id": created.get_json()["id"], "name": "Legacy", "description": "old body", "skuCode": sku, "price": 10}
    ]


def test_only_admins_create_products(catalog: Callable[[str], FlaskClient], people: People, mongo: Any) -> None:
    sku = new_sku()
    client = catalog("product_create")
    anonymous = client.post("/api/products", json=product_body(sku))
    assert anonymous.status_code == 401 and "Bearer" in anonymous.headers["WWW-Authenticate"]
    problem_of(anonymous)
    customer = client.post("/api/products", json=product_body(sku), headers=people.customer())
    assert customer.status_code == 403
    problem_of(customer)
    forged = client.post(
        "/api/products",
        json=product_body(sku),
        headers={"X-Shop-Identity": People("not-the-secret").admin()["X-Shop-Identity"]},
    )
    assert forged.status_code == 401
    assert mongo.products.count_documents({"sku": sku}) == 0


def test_update_changes_fields_bumps_the_version_and_emits_what_changed(
    catalog: Callable[[str], FlaskClient], people: People, mongo: Any
) -> None:
    sku = new_sku()
    catalog("product_create").post("/api/products", json=product_body(sku), headers=people.admin())
    update = catalog("product_update")
    changed = update.patch(f"/api/products/{sku}", json={"price": 149, "active": False}, headers=people.admin())
    assert changed.status_code == 200, changed.data
    assert changed.get_json()["version"] == 2 and changed.get_json()["price"] == 149
    assert changed.headers["ETag"] == '"v2"'
    updated_events = [
        d["event"]["data"] for d in mongo.outbox.find({"event.subject": sku, "type": "com.shop.product.updated"})
    ]
    assert updated_events == [{**updated_events[0], "changed": ["active", "price"], "price": "149.00", "version": 2}]
    stale = update.patch(f"/api/products/{sku}", json={"price": 120}, headers={**people.admin(), "If-Match": '"v1"'})
    assert stale.status_code == 412
    problem_of(stale)
    same = update.patch(f"/api/products/{sku}", json={"price": 149}, headers=people.admin())
    assert same.status_code == 200 and same.get_json()["version"] == 2
    assert mongo.outbox.count_documents({"event.subject": sku}) == 2


def test_get_answers_one_product_or_a_problem(catalog: Callable[[str], FlaskClient], people: People) -> None:
    sku = new_sku()
    catalog("product_create").post("/api/products", json=product_body(sku), headers=people.admin())
    get = catalog("product_get")
    found = get.get(f"/api/products/{sku}")
    assert found.status_code == 200 and found.get_json()["sku"] == sku
    assert get.get("/api/products/no_such_sku").status_code == 404
    bad = get.get("/api/products/NOT%20VALID")
    assert bad.status_code == 400 and problem_of(bad)["errors"][0]["field"] == "sku"
    assert get.post(f"/api/products/{sku}").status_code == 405


def test_list_searches_filters_sorts_and_pages(catalog: Callable[[str], FlaskClient], people: People) -> None:
    marker = uuid.uuid4().hex[:8]
    create = catalog("product_create")
    for i, price in enumerate(["30.00", "10.00", "20.00"]):
        create.post(
            "/api/products",
            json={
                "sku": f"{marker}_{i}",
                "name": f"Gadget {marker} {i} (v1.0)",
                "category": f"c{marker}",
                "price": float(price),
                "description": "needle in a haystack",
            },
            headers=people.admin(),
        )
    create.post(
        "/api/products",
        json={
            "sku": f"{marker}_hidden",
            "name": f"Gadget {marker} hidden",
            "category": f"c{marker}",
            "price": 5,
            "active": False,
        },
        headers=people.admin(),
    )
    listing = catalog("product_list")

    def skus(query: str, **kwargs: Any) -> list[str]:
        response = listing.get(f"/api/products?{query}", **kwargs)
        assert response.status_code == 200, response.data
        return [p["sku"] for p in response.get_json()["items"]]

    assert skus(f"category=c{marker}&sort=price") == [f"{marker}_1", f"{marker}_2", f"{marker}_0"]
    assert skus(f"category=c{marker}&sort=-price") == [f"{marker}_0", f"{marker}_2", f"{marker}_1"]
    assert skus(f"q={marker}%20{1}&category=c{marker}") == [f"{marker}_1"]
    # Regex metacharacters are searched literally, not interpreted.
    assert skus(f"q=(v1.0)&category=c{marker}&sort=name") == [f"{marker}_0", f"{marker}_1", f"{marker}_2"]
    assert skus(f"q={marker}.*&category=c{marker}") == []
    page = listing.get(f"/api/products?category=c{marker}&sort=price&page=1&size=2").get_json()
    assert [p["sku"] for p in page["items"]] == [f"{marker}_0"] and page["totalItems"] == 3 and page["totalPages"] == 2
    assert f"{marker}_hidden" in skus(f"category=c{marker}&includeInactive=true", headers=people.admin())
    assert listing.get(f"/api/products?category=c{marker}&includeInactive=true").status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "category": "phones", "price": 1}, "/sku"),
        ({"sku": "ok_sku", "category": "phones", "price": 1}, "/name"),
        ({"sku": "ok_sku", "name": "x", "category": "phones", "price": "1.00"}, "/price"),
        ({"sku": "ok_sku", "name": "x", "category": "phones", "price": 0}, "/price"),
        ({"sku": "ok_sku", "name": "x", "category": "phones", "price": -5}, "/price"),
        ({"sku": "ok_sku", "name": "x", "category": "phones", "price": 10_000_000}, "/price"),
        ({"sku": "ok_sku", "name": "x", "category": "phones", "price": 9.999}, "/price"),
        ({"sku": "Bad SKU!", "name": "x", "category": "phones", "price": 1}, "/sku"),
        ({"sku": "ok_sku", "name": {"$gt": ""}, "category": "phones", "price": 1}, "/name"),
        ({"sku": "ok_sku", "name": "x", "category": "phones", "price": 1, "$where": "sleep(100)"}, "/$where"),
        ({"sku": "ok_sku", "name": "x", "category": "phones", "price": 1, "a.b": 1}, "/a.b"),
        ({"sku": "ok_sku", "name": "x", "category": {"$ne": None}, "price": 1}, "/category"),
        ({"sku": "ok_sku", "name": "   ", "category": "phones", "price": 1}, "/name"),
        ({"sku": "ok_sku", "name": "x", "category": "phones", "price": 1, "active": "yes"}, "/active"),
        ([{"sku": "ok_sku"}], "/"),
    ],
)
def test_bad_product_bodies_name_the_field_and_write_nothing(
    catalog: Callable[[str], FlaskClient], people: People, mongo: Any, body: Any, field: str
) -> None:
    before = (mongo.products.estimated_document_count(), mongo.outbox.estimated_document_count())
    response = catalog("product_create").post("/api/products", json=body, headers=people.admin())
    assert response.status_code == 400, response.data
    assert field in [e["field"] for e in problem_of(response)["errors"]]
    assert (mongo.products.estimated_document_count(), mongo.outbox.estimated_document_count()) == before


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"not json", "application/json", 400),
        (b'{"sku": "a_b", "sku": "c_d"}', "application/json", 400),
        (b'{"price": NaN}', "application/json", 400),
        (b"", "application/json", 400),
        (b"sku=a", "application/x-www-form-urlencoded", 415),
        (json.dumps({"description": "x" * (1024 * 1024 + 10)}).encode(), "application/json", 413),
        (b"[" * 200_000, "application/json", 400),  # deeper than the parser's recursion
        (b'{"name": ' + b"[" * 40 + b"]" * 40 + b"}", "application/json", 400),  # parses, but deeper than 32
        (b'{"sku": "ok_sku", "name": "x", "category": "phones", "price": 1e999999999}', "application/json", 400),
        (b'{"sku": "ok_sku", "name": "x", "category": "phones", "price": 1e-999999999}', "application/json", 400),
    ],
)
def test_bodies_that_are_not_one_json_document_are_refused(
    catalog: Callable[[str], FlaskClient], people: People, data: bytes, content_type: str, status: int
) -> None:
    response = catalog("product_create").post(
        "/api/products", data=data, content_type=content_type, headers=people.admin()
    )
    assert response.status_code == status
    problem_of(response)


@pytest.mark.parametrize(
    "query",
    [
        "category[$ne]=x",
        "category=%7B%22%24gt%22%3A%22%22%7D",
        "page=-1",
        "size=1000",
        "sort=price;drop",
        "q=" + "x" * 101,
        "includeInactive=maybe",
        "page=1&page=2",
    ],
)
def test_bad_queries_are_refused_with_a_problem(catalog: Callable[[str], FlaskClient], query: str) -> None:
    response = catalog("product_list").get(f"/api/products?{query}")
    assert response.status_code == 400
    assert problem_of(response)["errors"]


def test_the_reading_view_follows_writes_through_the_change_stream(stack: Any, mongo: Any) -> None:
    store = MongoProductStore(mongo_clients.client(stack.mongodb_uri))
    view = CatalogView(store)
    view.start()
    sku = new_sku()
    mongo.products.insert_one(
        {
            "sku": sku,
            "name": f"Seen {sku}",
            "description": "",
            "category": "phones",
            "price": Decimal128("5.00"),
            "currency": "USD",
            "active": True,
            "version": 1,
            "createdAt": datetime.now(UTC),
            "updatedAt": datetime.now(UTC),
        }
    )
    eventually(lambda: sku in [p.sku for p in view.all_active()], timeout=10)
    mongo.products.update_one({"sku": sku}, {"$set": {"price": Decimal128("4.50"), "version": 2}})
    eventually(lambda: (p := view.get(sku)) is not None and p.price == Decimal("4.50"), timeout=10)
    mongo.products.update_one({"sku": sku}, {"$set": {"active": False, "version": 3}})
    eventually(lambda: sku not in [p.sku for p in view.all_active()], timeout=10)

    def found() -> list[str]:
        return [p.sku for p in view.search(ProductQuery(text=sku, include_inactive=True)).items]

    assert found() == [sku]  # kept, though inactive
    mongo.products.delete_one({"sku": sku})
    eventually(lambda: found() == [], timeout=10)
