"""RFC 9457 problem details: the one error shape every endpoint answers with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from functions.shared.errors import (
    Conflict,
    DomainError,
    FieldError,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    Refused,
    Rejected,
    Unavailable,
    UpstreamFailed,
)

PROBLEM_JSON = "application/problem+json"
# Problem type URIs are relative references (RFC 9457 §3.1.1), resolved against the API's base.
TYPE_BASE = "/problems/"


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


# How each kind of domain error is answered: its status and title (an error class may name its own title).
DOMAIN_STATUS: Mapping[type[DomainError], tuple[int, str]] = {
    Invalid: (400, "Invalid request"),
    Forbidden: (403, "Forbidden"),
    NotFound: (404, "Not found"),
    Conflict: (409, "Conflict"),
    PreconditionFailed: (412, "Precondition failed"),
    Rejected: (422, "Unprocessable request"),
    UpstreamFailed: (502, "Bad gateway"),
    Unavailable: (503, "Service unavailable"),
}


def from_domain(error: DomainError) -> Problem:
    """The problem+json answer to a domain error: the one place a service's error becomes HTTP."""
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    if isinstance(error, Refused):
        status, title, slug = error.status, error.relayed_title, error.relayed_slug
    else:
        kind = next((k for k in type(error).__mro__ if k in DOMAIN_STATUS), None)
        status, title = DOMAIN_STATUS[kind] if kind is not None else (500, "Internal error")
        title, slug = error.title or title, error.slug
    return Problem(
        status,
        title,
        error.detail,
        slug,
        errors=error.errors,
        headers=headers,
        extensions=error.extensions,
    )
