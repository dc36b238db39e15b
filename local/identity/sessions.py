"""What the issuer remembers between requests, in memory: sessions, authorization codes, refresh tokens."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, TokenMixin

from local.identity.realm import Client, Realm, User


@dataclass(frozen=True)
class Session:
    """A user signed in to a client: the resource owner Authlib hands from a grant to the token generator."""

    sid: str | None  # None: a service account's token, which has no session (nor refresh token)
    user: User
    client_id: str
    auth_time: int
    nonce: str | None = None  # the sign-in's; Keycloak repeats it in every ID token of the session


@dataclass(frozen=True)
class AuthorizationCode(AuthorizationCodeMixin):
    code: str
    session: Session
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    expires: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass(frozen=True)
class RefreshToken(TokenMixin):
    token: str
    session: Session
    scope: str
    expires: float

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.session.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_user(self) -> Session:
        return self.session


@dataclass(frozen=True)
class AccessToken(TokenMixin):
    """A bearer access token this issuer signed, as Authlib's BearerTokenValidator checks it."""

    claims: dict[str, Any]
    revoked: bool  # its session ended, its user is gone, or it is no access token (an ID token)

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))

    def is_expired(self) -> bool:
        return False  # an expired token is not read at all: its exp is checked with its signature

    def is_revoked(self) -> bool:
        return self.revoked


class Sessions:
    """Sessions by id, live and spent codes, live refresh tokens; the caller holds the issuer's lock."""

    def __init__(self, realm: Realm, clock: Callable[[], float]) -> None:
        self.realm = realm
        self.clock = clock
        self._codes: dict[str, AuthorizationCode] = {}
        self._spent_codes: dict[str, AuthorizationCode] = {}
        self._refresh_tokens: dict[str, RefreshToken] = {}
        self._ended: dict[str, float] = {}  # session id -> when it would have ended anyway

    def start(self, user: User, client: Client, nonce: str | None = None) -> Session:
        return Session(str(uuid.uuid4()), user, client.client_id, int(self.clock()), nonce)

    def of_service_account(self, client: Client) -> Session:
        return Session(None, self.realm.service_account(client.client_id), client.client_id, int(self.clock()))

    def refresh_deadline(self, session: Session) -> int:
        """When a refresh token issued now stops working: the realm's idle timeout, within its session maximum."""
        return min(int(self.clock()) + self.realm.session_idle, session.auth_time + self.realm.session_max)

    def ended(self, sid: object) -> bool:
        return sid in self._ended

    def end(self, sid: str | None) -> None:
        """Logout, or a code used twice: the session's refresh tokens stop working, and so do its access tokens here."""
        if sid:
            self._ended[sid] = self.clock() + self.realm.session_max
            for token in [t for t, record in self._refresh_tokens.items() if record.session.sid == sid]:
                del self._refresh_tokens[token]

    def keep_code(self, code: AuthorizationCode) -> None:
        self._purge()
        self._codes[code.code] = code

    def spend_code(self, code: str) -> AuthorizationCode | None:
        """The code's record, which no later call returns; None when unknown or spent before.

        RFC 6749 4.1.2: a code used twice revokes what it gave, so its session ends then.
        """
        record = self._codes.pop(code, None)
        if record is None:
            spent = self._spent_codes.get(code)
            if spent is not None:
                self.end(spent.session.sid)
            return None
        self._spent_codes[code] = record
        return record

    def keep_refresh_token(self, token: str, session: Session, scope: str) -> None:
        self._purge()
        self._refresh_tokens[token] = RefreshToken(token, session, scope, self.refresh_deadline(session))

    def refresh_token(self, token: str) -> RefreshToken | None:
        record = self._refresh_tokens.get(token)
        return record if record is not None and record.expires > self.clock() else None

    def revoke_refresh_token(self, token: str) -> None:
        self._refresh_tokens.pop(token, None)

    def _purge(self) -> None:
        now = self.clock()
        for store in (self._codes, self._spent_codes):
            for code in [c for c, record in store.items() if record.expires <= now]:
                del store[code]
        for token in [t for t, record in self._refresh_tokens.items() if record.expires <= now]:
            del self._refresh_tokens[token]
        for sid in [s for s, until in self._ended.items() if until <= now]:
            del self._ended[sid]
