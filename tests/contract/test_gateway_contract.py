"""The gateway's route table and the public OpenAPI document describe the same API."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from gateway import openapi
from gateway.routing import RouteTable

ROUTES = RouteTable.load()


def public_operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method.upper(), operation)
        for area in openapi.fragments().values()
        for path, item in area["paths"].items()
        for method, operation in item.items()
        if method in openapi.METHODS and not operation.get("x-internal")
    ]


def test_the_merged_document_is_valid_openapi_3_1() -> None:
    validate(openapi.document("http://issuer.test/realms/shop"))


@pytest.mark.parametrize(
    ("path", "method", "operation"), public_operations(), ids=[f"{m} {p}" for p, m, _ in public_operations()]
)
def test_every_public_operation_has_a_route_to_its_service(path: str, method: str, operation: dict[str, Any]) -> None:
    routes = [r for r in ROUTES.routes if r.path == path and method in r.methods]
    assert len(routes) == 1, f"{method} {path} needs exactly one route in gateway/routes.yaml"
    assert routes[0].service == operation["x-service"]


def test_every_route_is_a_documented_operation() -> None:
    documented = {(p, m) for p, m, _ in public_operations()}
    for route in ROUTES.routes:
        for method in route.methods:
            assert (route.path, method) in documented, f"{method} {route.path} is routed but not in any api.yaml"


def test_protected_operations_say_so_in_the_document() -> None:
    document = openapi.document()
    for route in ROUTES.routes:
        for method in route.methods:
            security = document["paths"][route.path][method.lower()]["security"]
            assert security == ([] if route.auth == "public" else [{"bearer": []}]), (method, route.path)
