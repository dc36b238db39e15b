"""Keycloak-shaped token responses: the access token, ID token and refresh token Authlib's grants ask for.

Ours rather than Authlib's generators: its RFC 9068 access tokens carry `typ: at+jwt` and a `client_id`
in every token, and both they and its ID token helper take the time from the system clock, not the issuer's
(which tests move); the helper knows none of Keycloak's `typ`, `azp` and `sid` either. The gateway and the
tests read Keycloak's claims. Authlib still picks the user's claims by scope (UserInfo) and makes `at_hash`;
joserfc, its JOSE library, signs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from authlib.common.security import generate_token
from authlib.oidc.core import UserInfo
from authlib.oidc.core.util import create_half_hash

from local.identity.keys import ALGORITHM, KeyRing
from local.identity.realm import Client, Realm, User
from local.identity.sessions import Session, Sessions

# Scopes Keycloak applies without naming them in the token's `scope` claim.
UNNAMED_SCOPES = frozenset({"web-origins", "acr", "roles", "basic"})


def named_scopes(scopes: Iterable[str]) -> str:
    return " ".join(s for s in scopes if s not in UNNAMED_SCOPES)


def user_claims(user: User, scope: str) -> dict[str, Any]:
    """The standard claims of the user that the scopes (profile, email) give; Authlib's UserInfo picks them."""
    name = " ".join(p for p in (user.first_name, user.last_name) if p)
    names = {"name": name, "given_name": user.first_name, "family_name": user.last_name}
    claims: dict[str, Any] = {k: v for k, v in names.items() if v}
    claims |= {"preferred_username": user.username, "email_verified": user.email_verified}
    if user.email:
        claims["email"] = user.email
    return dict(UserInfo(claims).filter(scope))


class TokenMinter:
    """Authlib's token generator for every grant: Keycloak's claims, signed with the newest key."""

    def __init__(
        self, realm: Realm, keys: KeyRing, sessions: Sessions, issuer: Callable[[], str], clock: Callable[[], float]
    ) -> None:
        self.realm, self.keys, self.sessions, self.issuer, self.clock = realm, keys, sessions, issuer, clock

    def __call__(
        self,
        grant_type: str,
        client: Client,
        user: Session | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """The token response; `user` is the session the grant established (none: the client's service account)."""
        session = user or self.sessions.of_service_account(client)
        scopes = client.scopes(scope)
        now = int(self.clock())
        access_claims = self._access_claims(session, client, scopes, now)
        access_token = self.keys.current.sign(access_claims)
        body: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": self.realm.access_lifespan,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": access_claims["scope"],
        }
        if session.sid and include_refresh_token:
            body["refresh_token"] = generate_token(48)
            body["refresh_expires_in"] = self.sessions.refresh_deadline(session) - now
            body["session_state"] = session.sid
        if "openid" in scopes:
            body["id_token"] = self._id_token(session, client, access_claims, access_token)
        return body

    def _access_claims(self, session: Session, client: Client, scopes: tuple[str, ...], now: int) -> dict[str, Any]:
        user = session.user
        realm_roles, client_roles = self.realm.roles(user) if "roles" in scopes else ([], {})
        # Keycloak's audience mapper, then its audience resolver: every other client the user holds roles of.
        audiences = list(dict.fromkeys([*client.audiences, *(c for c in client_roles if c != client.client_id)]))
        claims: dict[str, Any] = {"exp": now + self.realm.access_lifespan, "iat": now, "jti": str(uuid.uuid4())}
        claims["iss"] = self.issuer()
        if audiences:
            claims["aud"] = audiences[0] if len(audiences) == 1 else audiences
        claims.update(sub=user.id, typ="Bearer", azp=client.client_id)
        if session.sid:
            claims.update(sid=session.sid, auth_time=session.auth_time)
        if "acr" in scopes:
            claims["acr"] = "1"
        if "web-origins" in scopes and client.web_origins:
            claims["allowed-origins"] = list(client.web_origins)
        if "roles" in scopes:
            claims["realm_access"] = {"roles": realm_roles}
            if client_roles:
                claims["resource_access"] = {c: {"roles": names} for c, names in client_roles.items()}
        claims["scope"] = named_scopes(scopes)
        claims.update(user_claims(user, " ".join(scopes)))
        if user.service_account_of:
            claims["client_id"] = user.service_account_of
        return claims

    def _id_token(self, session: Session, client: Client, access_claims: dict[str, Any], access_token: str) -> str:
        claims = {k: access_claims[k] for k in ("exp", "iat", "iss")} | {"jti": str(uuid.uuid4())}
        claims.update(aud=client.client_id, sub=session.user.id, typ="ID", azp=client.client_id)
        claims.update({k: access_claims[k] for k in ("sid", "auth_time", "acr") if k in access_claims})
        if session.nonce is not None:
            claims["nonce"] = session.nonce
        claims["at_hash"] = create_half_hash(access_token, ALGORITHM).decode("ascii")  # OIDC Core 3.1.3.6
        claims.update(user_claims(session.user, access_claims["scope"]))
        return self.keys.current.sign(claims)
