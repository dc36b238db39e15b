"""The caller's identity as the gateway forwards it: a short-lived HS256 token in one header.

The gateway verifies the user's Keycloak JWT, then signs the claims functions need
(subject, email, names, roles) with IDENTITY_SECRET, a key only the gateway and the
functions hold. A function trusts that header and nothing else: a request that did
not come through the gateway has no valid header and is refused with 401.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from functions.shared import problems
from functions.shared.config import config

HEADER = "X-Shop-Identity"
ALGORITHM = "HS256"
ISSUER = "shop-gateway"
AUDIENCE = "shop-functions"
DEFAULT_TTL_SECONDS = 60


class Headers(Protocol):
    """Anything with case-insensitive header lookup: Flask's request.headers, a dict."""

    def get(self, key: str, /) -> str | None: ...


@dataclass(frozen=True)
class Identity:
    subject: str
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def sign(identity: Identity, secret: str, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> str:
    from jose import jwt  # on first use: a target whose callers are all anonymous never needs it

    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": identity.subject,
        "email": identity.email,
        "given_name": identity.first_name,
        "family_name": identity.last_name,
        "roles": sorted(identity.roles),
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return str(jwt.encode(claims, secret, algorithm=ALGORITHM))


def verify(token: str, secret: str) -> Identity:
    from jose import JWTError, jwt  # on first use (as in sign)

    try:
        # python-jose checks aud and exp only when present: a token without them is refused here.
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require_aud": True, "require_exp": True, "require_iss": True},
        )
    except JWTError as error:
        raise problems.unauthorized(f"forwarded identity rejected: {error}") from None
    roles = claims.get("roles", [])
    if not isinstance(claims.get("sub"), str) or not isinstance(roles, list):
        raise problems.unauthorized("forwarded identity has malformed claims")
    return Identity(
        subject=claims["sub"],
        email=str(claims.get("email", "")),
        first_name=str(claims.get("given_name", "")),
        last_name=str(claims.get("family_name", "")),
        roles=frozenset(str(r) for r in roles),
    )


def from_headers(headers: Headers | Mapping[str, str]) -> Identity | None:
    """The verified identity in the request headers, None when absent; 401 when forged."""
    token = headers.get(HEADER)
    if not token:
        return None
    return verify(token, config().required("IDENTITY_SECRET"))


def require(headers: Headers | Mapping[str, str], role: str | None = None) -> Identity:
    """The caller, who must be signed in and, when `role` is given, hold it."""
    identity = from_headers(headers)
    if identity is None:
        raise problems.unauthorized("sign in first: this endpoint needs an authenticated caller")
    if role and not identity.has_role(role):
        raise problems.forbidden(f"this endpoint needs the {role!r} role")
    return identity
