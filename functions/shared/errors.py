"""What can go wrong, in the shop's own words: services raise these; web.py answers each as RFC 9457 problem+json.

A service speaks the domain ("that product is out of stock", "this order is already cancelled")
and knows nothing of HTTP. Each area subclasses the kinds below for its own errors, naming the
problem type (`slug`); one table in web.py turns each kind into its status and title.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldError:
    """One invalid input: `field` is a JSON pointer into the body or a query parameter name."""

    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class DomainError(Exception):
    """A failure the caller can understand and act on; `detail` says what happened in plain words."""

    slug: ClassVar[str] = "error"
    title: ClassVar[str | None] = None  # None: the kind's title (web.py's table)

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        retry_after: int | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = tuple(errors)
        self.retry_after = retry_after
        self.extensions: Mapping[str, Any] = extensions


class Invalid(DomainError):
    """The request is malformed or a field is out of range (what a schema could have caught)."""

    slug = "validation"

    @classmethod
    def fields(cls, errors: Sequence[FieldError]) -> Invalid:
        return cls("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)


class NotFound(DomainError):
    slug = "not-found"


class Conflict(DomainError):
    """The request clashes with the current state (a duplicate, a state that no longer allows it)."""

    slug = "conflict"


class PreconditionFailed(DomainError):
    """A condition the caller set (If-Match) no longer holds."""

    slug = "precondition-failed"


class Rejected(DomainError):
    """Well-formed, but a business rule refuses it (not enough stock, an unknown product)."""

    slug = "unprocessable"


class Forbidden(DomainError):
    slug = "forbidden"


class UpstreamFailed(DomainError):
    """What this asked of another service failed there (502): the service itself is fine."""

    slug = "upstream-failed"


class Unavailable(DomainError):
    """Something this depends on is down or busy: try again after `retry_after` seconds."""

    slug = "unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5, **extensions: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extensions)


class Refused(DomainError):
    """Another function refused the request, for a reason the caller can act on: its answer is passed on
    (its status, title and problem type) rather than hidden behind a generic one."""

    def __init__(self, status: int, title: str, detail: str, slug: str, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.status = status
        self.relayed_title = title
        self.relayed_slug = slug
