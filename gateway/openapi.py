"""The public OpenAPI 3.1 document, merged from the areas' fragments, and edge validation against it.

The functions validate bodies with the same schemas (functions/shared/validation.py), so
the gateway refuses exactly what they would, one hop earlier.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from functions.shared import problems
from functions.shared.validation import error_order, field_error, load_api, shop_validator
from gateway.routing import Route, RouteTable

FUNCTIONS_DIR = Path(__file__).resolve().parents[1] / "functions"
SCHEMA_REF = re.compile(r"^#/components/schemas/(.+)$")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
PROBLEM = {"$ref": "#/components/schemas/Problem"}


EXTERNAL_FRAGMENT = Path(__file__).with_name("external-api.yaml")


def fragments() -> dict[str, dict[str, Any]]:
    """Each area's fragment by area name, and the gateway's own for apps found in the registry."""
    found = {path.parent.name: load_api(path) for path in sorted(FUNCTIONS_DIR.glob("*/api.yaml"))}
    found["external"] = load_api(EXTERNAL_FRAGMENT)
    return found


def _namespaced(node: Any, area: str) -> Any:
    """A copy of `node` whose schema references point at `<area>.<Name>`."""
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            match = SCHEMA_REF.match(value) if key == "$ref" and isinstance(value, str) else None
            result[key] = f"#/components/schemas/{area}.{match[1]}" if match else _namespaced(value, area)
        return result
    if isinstance(node, list):
        return [_namespaced(item, area) for item in node]
    return node


@cache
def document(issuer: str = "") -> dict[str, Any]:
    """The public API: every non-internal operation of every area, with who may call it."""
    routes = RouteTable.load()
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        }
    }
    for area, fragment in fragments().items():
        for name, schema in fragment.get("components", {}).get("schemas", {}).items():
            schemas[f"{area}.{name}"] = _namespaced(schema, area)
        for path, item in fragment.get("paths", {}).items():
            for method, operation in item.items():
                if method not in METHODS or operation.get("x-internal"):
                    continue
                route = _route_for(routes, method.upper(), path)
                merged = _namespaced(copy.deepcopy(operation), area)
                merged["parameters"] = _namespaced(item.get("parameters", []), area) + merged.get("parameters", [])
                if not merged["parameters"]:
                    del merged["parameters"]
                merged["security"] = [] if route is None or route.auth == "public" else [{"bearer": []}]
                responses = merged.setdefault("responses", {})
                for status, why in (
                    ("400", "invalid request"),
                    ("401", "not signed in"),
                    ("403", "missing role"),
                    ("429", "rate limited"),
                    ("503", "upstream unavailable"),
                ):
                    if status in ("401", "403") and (route is None or route.auth == "public"):
                        continue
                    responses.setdefault(
                        status, {"description": why, "content": {"application/problem+json": {"schema": PROBLEM}}}
                    )
                paths.setdefault(path, {})[method] = merged
    security_schemes: dict[str, Any] = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    if issuer:
        security_schemes["oidc"] = {
            "type": "openIdConnect",
            "openIdConnectUrl": f"{issuer}/.well-known/openid-configuration",
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Shop API",
            "version": "1.0.0",
            "description": "The public API of the shop, served by its gateway. Errors are RFC 9457 problems.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": security_schemes},
    }


def _route_for(routes: RouteTable, method: str, path: str) -> Route | None:
    return next((r for r in routes.routes if r.path == path and method in r.methods), None)


@cache
def operation(path_template: str, method: str) -> dict[str, Any] | None:
    return document()["paths"].get(path_template, {}).get(method.lower())


class OperationCheck:
    """Validators for one operation's parameters and JSON body, built once."""

    def __init__(self, op: Mapping[str, Any]) -> None:
        components = {"components": document()["components"]}
        self.parameters = {
            p["name"]: (p["in"], p.get("schema", {}), shop_validator({**p.get("schema", {}), **components}))
            for p in op.get("parameters", [])
            if p.get("in") in ("query", "path")
        }
        content = op.get("requestBody", {}).get("content", {}).get("application/json")
        self.body = shop_validator({**content.get("schema", {}), **components}) if content else None

    def check(self, params: Mapping[str, str], query: Mapping[str, list[str]], body: Any) -> None:
        errors: list[problems.FieldError] = []
        for name, value in params.items():
            if name in self.parameters:
                errors += _errors(self.parameters[name][2], value, name)
        for name in sorted(query):
            declared = self.parameters.get(name)
            if declared is None or declared[0] != "query":
                errors.append(problems.FieldError(name, "unknown query parameter"))
                continue
            errors += _errors(declared[2], _typed(declared[1], query[name]), name)
        if self.body is not None and body is not None:
            errors += _errors(self.body, body, "")
        if errors:
            raise problems.invalid(errors)


def _errors(validator: Any, value: Any, where: str) -> list[problems.FieldError]:
    """The field names the functions give too: a JSON pointer into the body, or the parameter's name."""
    errors = sorted(validator.iter_errors(value), key=error_order)
    if where:  # a parameter: its name, whatever failed inside it
        return [problems.FieldError(where, e.message) for e in errors]
    return [field_error(e, "") for e in errors]


@cache
def checker(path_template: str, method: str) -> OperationCheck | None:
    op = operation(path_template, "GET" if method == "HEAD" else method)
    return OperationCheck(op) if op is not None else None


def check(route: Route, method: str, params: Mapping[str, str], query: Mapping[str, list[str]], body: Any) -> None:
    """Validates a request against its operation: path and query parameters, JSON body."""
    found = checker(route.path, method)
    if found is not None:
        found.check(params, query, body)


def _resolved(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        match = SCHEMA_REF.match(schema["$ref"])
        if match is None:
            break
        schema = document()["components"]["schemas"][match[1]]
    return schema


def _typed(schema: Mapping[str, Any], values: list[str]) -> Any:
    """Query strings as the schema's type, so the schema can judge them (a repeated scalar stays a list)."""
    schema = _resolved(schema)
    if schema.get("type") == "array":
        return [_scalar(_resolved(schema.get("items", {})), v) for v in values]
    if len(values) > 1:
        return values
    return _scalar(schema, values[0])


def _scalar(schema: Mapping[str, Any], value: str) -> Any:
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return Decimal(value)
    except (ValueError, InvalidOperation):
        return value  # left as a string: the schema then says what is wrong with it
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    return value
