"""Request validation against the areas' api.yaml schemas: exact decimals and precise field names."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from functions.shared.problems import Problem
from functions.shared.validation import SchemaSet, decimal_places

ROOT = Path(__file__).resolve().parents[2]
CATALOG = SchemaSet(ROOT / "functions/catalog/api.yaml")


def fields_of(name: str, body: object) -> list[str]:
    with pytest.raises(Problem) as caught:
        CATALOG.check(name, body)
    return [e.field for e in caught.value.errors]


def test_two_decimals_pass_and_a_third_is_named() -> None:
    body = {"sku": "ab_cd", "name": "x", "category": "phones", "price": Decimal("10.25")}
    CATALOG.check("ProductCreate", body)
    assert fields_of("ProductCreate", {**body, "price": Decimal("10.255")}) == ["/price"]
    # Trailing zeros are not extra precision.
    CATALOG.check("ProductCreate", {**body, "price": Decimal("10.2500")})


@pytest.mark.parametrize(
    ("value", "places"),
    [("10", 0), ("10.5", 1), ("10.50", 1), ("0.000", 0), ("1E+3", 0), ("1.23E-5", 7), ("1e-999999999", 999999999)],
)
def test_decimal_places_count_without_arithmetic(value: str, places: int) -> None:
    assert decimal_places(Decimal(value)) == places


def test_missing_and_unknown_properties_point_at_the_property_itself() -> None:
    assert fields_of("ProductCreate", {"name": "x", "category": "phones", "price": 1}) == ["/sku"]
    assert fields_of("ProductCreate", {"sku": "ab", "name": "x", "category": "c", "price": 1, "$where": 1}) == [
        "/$where"
    ]


def test_a_json_pointer_escapes_slashes_and_tildes() -> None:
    assert fields_of("ProductUpdate", {"a/b~c": 1}) == ["/a~1b~0c"]


@pytest.mark.parametrize("area", ["catalog", "inventory", "orders"])
def test_every_api_fragment_parses_and_names_existing_services(area: str) -> None:
    document = yaml.safe_load((ROOT / f"functions/{area}/api.yaml").read_text())
    services = {path.stem for path in (ROOT / "knative/services").glob("*.yaml")}
    operations = [
        op
        for item in document["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    ]
    assert operations
    for operation in operations:
        assert operation["x-service"] in services, operation["operationId"]
    schemas = SchemaSet(ROOT / f"functions/{area}/api.yaml")
    for name in document["components"]["schemas"]:
        schemas.validator(name).check_schema(schemas.validator(name).schema)
