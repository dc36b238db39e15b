"""Where a JSON Schema error points, as a FieldError: the request body's and the event data's validators share it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from functions.shared.errors import FieldError

if TYPE_CHECKING:
    import jsonschema


def field_error(error: jsonschema.ValidationError, where: str) -> FieldError:
    """The JSON pointer of the offending value (for a missing or unexpected property, that property), under `where`."""
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        required: list[str] = list(error.validator_value)  # type: ignore[arg-type]
        missing = next((p for p in required if p not in error.instance), None)
        if missing is not None:
            path.append(missing)
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        allowed = set(schema.get("properties", {}))
        extra = next((p for p in error.instance if p not in allowed), None)
        if extra is not None:
            path.append(extra)
    pointer = "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)
    return FieldError(where + pointer if where else pointer, error.message)
