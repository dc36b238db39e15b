"""Bearer JWTs checked against the realm's keys, found through OIDC discovery.

Keys are cached and fetched again when a token names a key id we have not seen (Keycloak
rotated its keys), at most once per `refresh_seconds`, so a flood of made-up key ids
cannot turn the gateway into a key-fetching loop against the issuer.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import urllib3
from jose import jwt
from jose.exceptions import JWTError

from functions.shared import problems
from functions.shared.identity import Identity

ACCEPTED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256"})
Fetch = Callable[[str], dict[str, Any]]
_pool = urllib3.PoolManager(num_pools=4, retries=False)


def fetch_json(url: str) -> dict[str, Any]:
    response = _pool.request("GET", url, timeout=urllib3.Timeout(total=3.0))
    if response.status != 200:
        raise OSError(f"{url} answered {response.status}")
    document = json.loads(response.data)
    if not isinstance(document, dict):
        raise OSError(f"{url} did not answer a JSON object")
    return document


def rejected(reason: str) -> problems.Problem:
    """401 with the RFC 6750 challenge naming what was wrong."""
    challenge = f'Bearer realm="shop", error="invalid_token", error_description="{reason}"'
    return problems.unauthorized(f"the access token was rejected: {reason}", challenge)


@dataclass(frozen=True)
class Caller:
    identity: Identity
    expires_at: float


class JwtVerifier:
    def __init__(
        self,
        issuer: str,
        *,
        audience: str,
        allowed_clients: Iterable[str],
        discovery_url: str | None = None,
        fetch: Fetch = fetch_json,
        leeway_seconds: float = 30,
        refresh_seconds: float = 30,
        cache_size: int = 10_000,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.allowed_clients = frozenset(allowed_clients)
        self.discovery_url = discovery_url or f"{self.issuer}/.well-known/openid-configuration"
        self.fetch = fetch
        self.leeway = leeway_seconds
        self.refresh_seconds = refresh_seconds
        self.cache_size = cache_size
        self._keys: dict[str, dict[str, Any]] = {}
        self._jwks_uri: str | None = None
        self._refreshed_at = -float("inf")
        self._lock = threading.Lock()
        self._verified: OrderedDict[str, Caller] = OrderedDict()

    def verify(self, token: str) -> Identity:
        """The caller a bearer token proves, or a 401 problem saying why not."""
        cached = self._verified.get(token)
        if cached is not None and cached.expires_at + self.leeway > time.time():
            return cached.identity
        caller = self._verify(token)
        with self._lock:
            self._verified[token] = caller
            while len(self._verified) > self.cache_size:
                self._verified.popitem(last=False)
        return caller.identity

    def _verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except JWTError:
            raise rejected("not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ACCEPTED_ALGORITHMS:
            # "none" and HMAC algorithms are refused outright: an HS256 token "signed" with the
            # public key would otherwise verify against it.
            raise rejected(f"algorithm {algorithm!r} is not accepted")
        key = self._key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                options={"verify_aud": False, "leeway": self.leeway, "require_exp": True, "require_iat": False},
            )
        except JWTError as error:
            raise rejected(str(error).rstrip(".").lower()) from None
        self._check_audience(claims)
        if claims.get("typ", "Bearer") != "Bearer":
            raise rejected(f"a {claims.get('typ')} token is not an access token")
        roles = claims.get("realm_access", {}).get("roles", [])
        identity = Identity(
            subject=str(claims.get("sub", "")),
            email=str(claims.get("email", "")),
            first_name=str(claims.get("given_name", "")),
            last_name=str(claims.get("family_name", "")),
            roles=frozenset(str(r) for r in roles) if isinstance(roles, list) else frozenset(),
        )
        if not identity.subject:
            raise rejected("the token names no subject")
        return Caller(identity, float(claims["exp"]))

    def _check_audience(self, claims: dict[str, Any]) -> None:
        audiences = claims.get("aud", [])
        audiences = [audiences] if isinstance(audiences, str) else list(audiences)
        if self.audience in audiences or claims.get("azp") in self.allowed_clients:
            return
        raise rejected(f"the token is not meant for this API (audience {audiences}, azp {claims.get('azp')!r})")

    def _key(self, kid: str | None) -> dict[str, Any]:
        if kid is None:
            raise rejected("the token names no key (kid)")
        key = self._keys.get(kid)
        if key is None:
            self._refresh()
            key = self._keys.get(kid)
        if key is None:
            raise rejected(f"unknown signing key {kid!r}")
        return key

    def _refresh(self) -> None:
        with self._lock:
            # The first load always happens; later ones (a token naming a key we do not know)
            # at most once per refresh_seconds.
            if self._keys:
                if time.monotonic() - self._refreshed_at < self.refresh_seconds:
                    return
                self._refreshed_at = time.monotonic()
            try:
                if self._jwks_uri is None:
                    self._jwks_uri = str(self.fetch(self.discovery_url)["jwks_uri"])
                keys = self.fetch(self._jwks_uri).get("keys", [])
            except (OSError, KeyError, ValueError, urllib3.exceptions.HTTPError) as error:
                raise problems.unavailable(f"the identity provider is unreachable ({error}); try again", 5) from None
            self._keys = {k["kid"]: k for k in keys if k.get("kid") and k.get("use", "sig") == "sig"}
