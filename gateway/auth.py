"""Bearer JWTs checked against the realm's keys, found through OIDC discovery.

The realm's key set (JWKS) is held in memory and fetched again on these rules, so that a key
rotation in Keycloak is followed at once, a withdrawn key stops verifying, and neither a flood
of made-up key ids nor an issuer that is down can turn the gateway against the issuer or
against its own callers:

- A token naming a key id (`kid`) the set lacks waits for a fetch: the one in flight if that
  brings the key, else one that started after the request arrived (an earlier fetch may predate
  the key); only then is the kid refused. Requests waiting together share one fetch (single
  flight): twenty requests signed with a freshly rotated key cost one fetch, however recently
  the set was fetched before.
- Fetches start at least `min_interval_seconds` apart (1 s), so made-up kids cost the issuer at
  most one fetch per interval; a kid that such a fresh fetch did not contain, or that a fetch
  found withdrawn, is refused at once, without waiting, for `negative_seconds` (a bounded list).
- Once the set is `refresh_seconds` old (JWKS_REFRESH_SECONDS, 5 minutes) it is fetched again in
  the background, so a withdrawn key is noticed even if no unknown kid ever shows up. Requests
  go on with the set they have meanwhile, and while the issuer cannot be reached.
- A verified token is answered from a cache only while the very key that verified it is still
  in the set: once a fetch no longer lists the key, its tokens are refused.
- A failed fetch is remembered for `retry_seconds` (5 s). Meanwhile a request that needs a fetch
  gets a 503 problem with Retry-After at once, so an issuer that is down at start costs one
  fetch attempt per window instead of a 3 s wait for every request; the requests that were
  waiting on the failed fetch share its 503.
"""

from __future__ import annotations

import json
import logging
import math
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
Jwk = dict[str, Any]
NEVER = -math.inf
FETCH_ERRORS = (OSError, KeyError, ValueError, TypeError, urllib3.exceptions.HTTPError)
log = logging.getLogger("shop.gateway.auth")
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


class RealmKeys:
    """The realm's signing keys by kid, fetched on the rules of the module docstring."""

    def __init__(
        self,
        discovery_url: str,
        fetch: Fetch,
        *,
        refresh_seconds: float,
        min_interval_seconds: float,
        retry_seconds: float,
        negative_seconds: float,
        negative_size: int = 1024,
    ) -> None:
        self.discovery_url = discovery_url
        self.fetch = fetch
        self.refresh_seconds = refresh_seconds
        self.min_interval = min_interval_seconds
        self.retry_seconds = retry_seconds
        self.negative_seconds = negative_seconds
        self.negative_size = negative_size
        self._keys: dict[str, Jwk] = {}  # replaced whole, never changed in place: read without the lock
        self._jwks_uri: str | None = None
        self._fetched_at = NEVER  # when the fetch that gave the current set started (monotonic)
        self._started_at = NEVER  # when the latest fetch started, whatever became of it
        self._in_flight = False
        self._failed_until = NEVER
        self._failure = ""
        self._missing: OrderedDict[str, float] = OrderedDict()  # kid -> refused without a fetch until
        self._waiting = 0
        self._changed = threading.Condition()

    @property
    def waiting(self) -> int:
        """Requests now waiting for a fetch (for tests and diagnostics)."""
        return self._waiting

    def current(self, kid: str) -> Jwk | None:
        """The key the set holds now for this kid, never fetching."""
        return self._keys.get(kid)

    def key(self, kid: str) -> Jwk:
        """The key for this kid, fetching the set if it lacks it; 401 for an unknown kid, 503 if unreachable."""
        found = self._keys.get(kid)
        if found is not None:
            return found
        arrived = time.monotonic()
        while True:
            with self._changed:
                found = self._await_turn(kid, arrived)
                if found is not None:
                    return found
                started = self._begin_fetch()
            self._run_fetch(started)

    def refresh_if_stale(self) -> None:
        """Starts a background fetch once the set is `refresh_seconds` old; never waits for it."""
        now = time.monotonic()
        if self._fetched_at == NEVER or now - self._fetched_at < self.refresh_seconds:
            return
        with self._changed:
            busy = self._in_flight or now < self._failed_until or now - self._started_at < self.min_interval
            if busy or now - self._fetched_at < self.refresh_seconds:  # or another request just refreshed it
                return
            started = self._begin_fetch()
        threading.Thread(target=self._run_fetch, args=(started,), name="jwks-refresh", daemon=True).start()

    def _await_turn(self, kid: str, arrived: float) -> Jwk | None:
        """With the lock held: the key once a fetch brought it, None when this request should fetch;
        raises for a kid a fresh enough fetch did not contain, or while fetches fail."""
        while True:
            found = self._keys.get(kid)
            if found is not None:
                return found
            now = time.monotonic()
            if self._missing.get(kid, NEVER) > now:
                raise rejected(f"unknown signing key {kid!r}")
            if self._fetched_at >= arrived:  # a fetch that started after this request came lacks the key
                self._remember_missing(kid, now)
                raise rejected(f"unknown signing key {kid!r}")
            if now < self._failed_until:
                raise self._unavailable(now)
            wait: float | None = None
            if not self._in_flight:
                wait = self._started_at + self.min_interval - now
                if wait <= 0:
                    return None
            self._waiting += 1
            try:
                self._changed.wait(wait)
            finally:
                self._waiting -= 1

    def _begin_fetch(self) -> float:
        """With the lock held: marks a fetch in flight and returns when it started."""
        self._in_flight = True
        self._started_at = time.monotonic()
        return self._started_at

    def _run_fetch(self, started: float) -> None:
        """One fetch, outside the lock; its outcome is recorded and every waiting request woken,
        whatever happens (a fetch left marked in flight would hold every unknown kid forever)."""
        keys: dict[str, Jwk] | None = None
        failure = "an unexpected error"
        try:
            keys = self._download()
        except FETCH_ERRORS as error:
            failure = str(error) or type(error).__name__
            log.warning("the realm's keys could not be fetched (%s); next try in %g s", failure, self.retry_seconds)
        finally:
            with self._changed:
                if keys is None:
                    self._failed_until = time.monotonic() + self.retry_seconds
                    self._failure = failure
                else:
                    self._replace_keys(keys, started)
                self._in_flight = False
                self._changed.notify_all()

    def _replace_keys(self, keys: dict[str, Jwk], started: float) -> None:
        """With the lock held: the set a fetch brought becomes the current one."""
        old = self._keys
        # An unchanged key keeps its identity, so tokens it verified stay cached.
        self._keys = {kid: old[kid] if old.get(kid) == jwk else jwk for kid, jwk in keys.items()}
        if self._keys.keys() != old.keys():
            log.info("the realm's signing keys are now %s", sorted(self._keys))
        for kid in keys:
            self._missing.pop(kid, None)
        now = time.monotonic()
        for kid in old.keys() - keys.keys():  # withdrawn: refused from now on without a fetch
            self._remember_missing(kid, now)
        self._fetched_at = started
        self._failed_until = NEVER

    def _download(self) -> dict[str, Jwk]:
        if self._jwks_uri is None:
            self._jwks_uri = str(self.fetch(self.discovery_url)["jwks_uri"])
        keys = self.fetch(self._jwks_uri).get("keys")
        if not isinstance(keys, list):
            raise ValueError(f"{self._jwks_uri} lists no keys")
        return {str(k["kid"]): k for k in keys if isinstance(k, dict) and k.get("kid") and k.get("use", "sig") == "sig"}

    def _remember_missing(self, kid: str, now: float) -> None:
        self._missing[kid] = now + self.negative_seconds
        self._missing.move_to_end(kid)
        while len(self._missing) > self.negative_size:
            self._missing.popitem(last=False)

    def _unavailable(self, now: float) -> problems.Problem:
        retry = max(1, math.ceil(self._failed_until - now))
        return problems.unavailable(f"the identity provider is unreachable ({self._failure}); try again", retry)


@dataclass(frozen=True)
class Caller:
    identity: Identity
    expires_at: float
    kid: str
    key: Jwk  # the very key that verified the token: the cached answer lasts while the set holds it


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
        refresh_seconds: float = 300,
        min_interval_seconds: float = 1,
        retry_seconds: float = 5,
        negative_seconds: float = 30,
        cache_size: int = 10_000,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.allowed_clients = frozenset(allowed_clients)
        self.leeway = leeway_seconds
        self.cache_size = cache_size
        self.keys = RealmKeys(
            discovery_url or f"{self.issuer}/.well-known/openid-configuration",
            fetch,
            refresh_seconds=refresh_seconds,
            min_interval_seconds=min_interval_seconds,
            retry_seconds=retry_seconds,
            negative_seconds=negative_seconds,
        )
        self._lock = threading.Lock()
        self._verified: OrderedDict[str, Caller] = OrderedDict()

    def verify(self, token: str) -> Identity:
        """The caller a bearer token proves, or a 401 problem saying why not."""
        self.keys.refresh_if_stale()
        cached = self._verified.get(token)
        if (
            cached is not None
            and cached.expires_at + self.leeway > time.time()
            and self.keys.current(cached.kid) is cached.key
        ):
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
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise rejected("the token names no key (kid)")
        key = self.keys.key(kid)
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
        return Caller(identity, float(claims["exp"]), kid, key)

    def _check_audience(self, claims: dict[str, Any]) -> None:
        audiences = claims.get("aud", [])
        audiences = [audiences] if isinstance(audiences, str) else list(audiences)
        if self.audience in audiences or claims.get("azp") in self.allowed_clients:
            return
        raise rejected(f"the token is not meant for this API (audience {audiences}, azp {claims.get('azp')!r})")
