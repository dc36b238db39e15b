"""RFC 9457 problem details: the one error shape every endpoint answers with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PROBLEM_JSON = "application/problem+json"
# Problem type URIs are relative references (RFC 9457 §3.1.1), resolved against the API's base.
TYPE_BASE = "/problems/"


@dataclass(frozen=True)
class FieldError:
    """One invalid input: `field` is a JSON pointer into the body or a query parameter name."""

    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass
class Problem(Exception):
    """A failure the client can understand; raise it anywhere below a handler."""

    status: int
    title: str
    detail: str
    slug: str = "error"
    errors: Sequence[FieldError] = field(default_factory=tuple)
    headers: Mapping[str, str] = field(default_factory=dict)
    extensions: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.detail}"

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = [e.as_json() for e in self.errors]
        # Extension members never replace the standard ones (RFC 9457 §3.2).
        body.update({k: v for k, v in self.extensions.items() if k not in body})
        return body


def invalid(errors: Sequence[FieldError]) -> Problem:
    """400 naming every invalid field."""
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return Problem(400, "Invalid request", detail, "validation", errors=tuple(errors))


def invalid_field(name: str, message: str) -> Problem:
    return invalid([FieldError(name, message)])


def not_found(detail: str) -> Problem:
    return Problem(404, "Not found", detail, "not-found")


def conflict(detail: str, **extensions: Any) -> Problem:
    return Problem(409, "Conflict", detail, "conflict", extensions=extensions)


def unprocessable(detail: str, slug: str = "unprocessable") -> Problem:
    return Problem(422, "Unprocessable request", detail, slug)


def unauthorized(detail: str, challenge: str = 'Bearer realm="shop"') -> Problem:
    return Problem(401, "Unauthorized", detail, "unauthorized", headers={"WWW-Authenticate": challenge})


def forbidden(detail: str) -> Problem:
    return Problem(403, "Forbidden", detail, "forbidden")


def unavailable(detail: str, retry_after: int = 5) -> Problem:
    return Problem(
        503,
        "Service unavailable",
        detail,
        "unavailable",
        headers={"Retry-After": str(retry_after)},
    )
