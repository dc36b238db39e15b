"""Request validation against the JSON Schemas of each area's OpenAPI fragment (`api.yaml`).

The same schemas build the gateway's public OpenAPI document, so what the document
promises and what the functions enforce cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from functions.shared import problems
from functions.shared.schema_errors import field_error

if TYPE_CHECKING:
    import jsonschema

DECIMAL_PLACES = "x-maxDecimalPlaces"


def _max_decimal_places(
    validator: Any, places: int, instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    import jsonschema  # imported already: this runs inside a validation

    if isinstance(instance, Decimal) and instance.is_finite():
        if decimal_places(instance) > places:
            yield jsonschema.ValidationError(f"{instance} has more than {places} decimal places")
    elif isinstance(instance, float):
        # Bodies are parsed with Decimal; a float here means a caller built it in code.
        yield jsonschema.ValidationError(f"{instance} must be an exact decimal")


def decimal_places(value: Decimal) -> int:
    """Digits after the point, trailing zeros aside (1.50 has 1), with no arithmetic: a huge
    exponent such as 1e999999999 would overflow the decimal context of normalize()."""
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or exponent >= 0 or not any(digits):
        return 0
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -exponent - trailing_zeros)


def shop_validator(schema: Mapping[str, Any]) -> Any:
    """A Draft 2020-12 validator for `schema` that also knows x-maxDecimalPlaces.

    jsonschema (with referencing, attrs and its format checkers, about 50 ms) is imported here,
    on first use, not with the module: targets that only read (product-get, order-list, ...)
    never validate a body or an event and never pay for it."""
    return _shop_validator_class()(schema)


@cache
def _shop_validator_class() -> Any:
    import jsonschema
    from jsonschema import validators

    return validators.extend(jsonschema.Draft202012Validator, {DECIMAL_PLACES: _max_decimal_places})


# libyaml's parser where PyYAML has it (its wheels do): the same safe subset, parsed five to
# seven times faster; each target parses its area's fragment as it starts (20-35 ms in pure Python).
YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> Any:
    """The one YAML document in `path`, safe tags only."""
    return yaml.load(path.read_text(), Loader=YAML_LOADER)


@cache
def load_api(path: Path) -> dict[str, Any]:
    """An area's OpenAPI fragment, parsed once."""
    document = read_yaml(path)
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not an OpenAPI document")
    return document


class SchemaSet:
    """The component schemas of one OpenAPI fragment, with `$ref`s resolved inside it."""

    def __init__(self, api_path: Path) -> None:
        self.document = load_api(api_path)
        self._validators: dict[str, Any] = {}

    def validator(self, name: str) -> Any:
        if name not in self._validators:
            schemas = self.document["components"]["schemas"]
            if name not in schemas:
                raise KeyError(f"no schema {name!r} in the API fragment")
            # Resolve `#/components/schemas/...` refs against the whole fragment.
            schema = {"$ref": f"#/components/schemas/{name}", **_root_of(self.document)}
            self._validators[name] = shop_validator(schema)
        return self._validators[name]

    def check(self, name: str, instance: Any, *, where: str = "") -> None:
        """Raises a 400 problem listing every violation, each with a JSON pointer."""
        errors = sorted(self.validator(name).iter_errors(instance), key=error_order)
        if errors:
            raise problems.invalid([field_error(e, where) for e in errors])


def _root_of(document: Mapping[str, Any]) -> dict[str, Any]:
    return {"components": document.get("components", {})}


def error_order(error: jsonschema.ValidationError) -> tuple[str, str]:
    return ("/".join(str(p) for p in error.absolute_path), error.message)
