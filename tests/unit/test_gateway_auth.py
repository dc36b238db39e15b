"""Token checks against a realm's keys: every way a forged or misused token is turned away, and how
the keys are fetched again when the realm rotates them, withdraws one or cannot be reached."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from functions.shared.problems import Problem
from gateway.auth import JwtVerifier
from tests.conftest import eventually

ISSUER = "http://issuer.test/realms/shop"
MIN_INTERVAL = 0.1  # between two key fetches; short, so tests that need two fetches stay quick


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rsa_key() -> tuple[str, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return pem, jwk.construct(public_pem, "RS256").to_dict()


class Realm:
    """The issuer's side: its keys, which it can rotate, withdraw, hold back or fail to serve."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, dict[str, Any]]] = {}
        self.fetches = 0
        self.jwks_fetches = 0
        self.failed_fetches = 0
        self.down = False
        self.gate = threading.Event()  # cleared: every fetch hangs until the test sets it again
        self.gate.set()
        self._lock = threading.Lock()
        self.add_key("k1")

    def add_key(self, kid: str) -> None:
        pem, public = rsa_key()
        self.keys[kid] = (pem, {**public, "kid": kid, "use": "sig", "alg": "RS256"})

    def fetch(self, url: str) -> dict[str, Any]:
        with self._lock:
            self.fetches += 1
            self.jwks_fetches += not url.endswith("openid-configuration")
        assert self.gate.wait(60), "the test never let the fetch finish"
        if self.down:
            with self._lock:
                self.failed_fetches += 1
            raise OSError("connection refused")
        if url.endswith("openid-configuration"):
            return {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/protocol/openid-connect/certs"}
        return {"keys": [public for _, public in self.keys.values()]}

    def token(self, kid: str = "k1", **overrides: Any) -> str:
        return signed(self.keys[kid][0], kid, **overrides)


def signed(pem: str, kid: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": ["shop-api", "account"],
        "azp": "storefront",
        "typ": "Bearer",
        "exp": now + 300,
        "iat": now,
        "email": "jane@example.com",
        "given_name": "Jane",
        "family_name": "Doe",
        "realm_access": {"roles": ["customer"]},
        **overrides,
    }
    return str(jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid}))


STRANGER = signed(rsa_key()[0], "stranger")  # signed with a key the realm never published


def made_up(kid: str) -> str:
    """A well-formed token naming a key id the realm never had (its signature never gets checked)."""
    _, payload, signature = STRANGER.split(".")
    return ".".join([base64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode()), payload, signature])


@pytest.fixture
def realm() -> Realm:
    return Realm()


def verifier_for(realm: Realm, **settings: float) -> JwtVerifier:
    return JwtVerifier(
        ISSUER,
        audience="shop-api",
        allowed_clients=["storefront"],
        fetch=realm.fetch,
        leeway_seconds=5,
        **{"refresh_seconds": 60, "min_interval_seconds": MIN_INTERVAL, **settings},
    )


@pytest.fixture
def verifier(realm: Realm) -> JwtVerifier:
    return verifier_for(realm)


def refused(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(Problem) as caught:
        verifier.verify(token)
    assert caught.value.status == 401 and "invalid_token" in caught.value.headers["WWW-Authenticate"]
    return caught.value.detail


def test_a_good_token_gives_the_identity_with_realm_roles(realm: Realm, verifier: JwtVerifier) -> None:
    caller = verifier.verify(realm.token())
    assert (caller.subject, caller.email, caller.first_name, caller.roles) == (
        "user-1",
        "jane@example.com",
        "Jane",
        frozenset({"customer"}),
    )


def test_alg_none_and_hmac_with_the_public_key_are_refused(realm: Realm, verifier: JwtVerifier) -> None:
    unsigned = jwt.encode({"sub": "x", "iss": ISSUER}, "", algorithm="HS256").split(".")
    none_token = ".".join(["eyJhbGciOiJub25lIiwia2lkIjoiazEifQ", unsigned[1], ""])
    assert "algorithm" in refused(verifier, none_token)
    # The classic confusion: HS256 "signed" with the RSA public key everyone can fetch.
    public_pem = jwk.construct(realm.keys["k1"][1], "RS256").to_pem()
    header = base64url(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
    payload = base64url(json.dumps({"sub": "x", "iss": ISSUER, "exp": int(time.time()) + 60}).encode())
    signature = base64url(hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert "algorithm" in refused(verifier, f"{header}.{payload}.{signature}")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        # Times are offsets from when the test runs (collection may be minutes earlier).
        ({"exp": -60}, "expired"),
        ({"nbf": 60}, "not yet valid"),
        ({"iss": "http://issuer.test/realms/other"}, "issuer"),
        ({"aud": ["account"], "azp": "somebody-else"}, "not meant for this API"),
        ({"typ": "Refresh"}, "not an access token"),
    ],
)
def test_expired_early_foreign_or_misdirected_tokens_are_refused(
    realm: Realm, verifier: JwtVerifier, claims: dict[str, Any], reason: str
) -> None:
    now = int(time.time())
    claims = {key: now + value if key in ("exp", "nbf") else value for key, value in claims.items()}
    assert reason in refused(verifier, realm.token(**claims))


def test_tampering_with_payload_or_signature_is_refused(realm: Realm, verifier: JwtVerifier) -> None:
    header, payload, signature = realm.token().split(".")
    other = realm.token(sub="admin-1", realm_access={"roles": ["admin"]}).split(".")[1]
    refused(verifier, f"{header}.{other}.{signature}")
    refused(verifier, f"{header}.{payload}.{signature[:-4]}AAAA")


def test_a_token_from_another_realm_is_refused(verifier: JwtVerifier) -> None:
    stranger = Realm()  # its own key, also named k1
    refused(verifier, stranger.token(iss="http://issuer.test/realms/elsewhere"))
    refused(verifier, stranger.token())  # right issuer name, wrong key: the signature does not verify


# --- keys: rotation, withdrawal, floods and outages ---------------------------------------------


def status_of(verifier: JwtVerifier, token: str) -> int | Problem:
    """200, or the problem the verifier raised."""
    try:
        verifier.verify(token)
    except Problem as problem:
        return problem
    return 200


def concurrently(count: int, call: Callable[[int], Any]) -> tuple[ThreadPoolExecutor, list[Any]]:
    """Starts `count` calls together (a barrier lines them up); the caller collects the futures."""
    start = threading.Barrier(count)
    pool = ThreadPoolExecutor(max_workers=count)
    return pool, [pool.submit(lambda i=i: (start.wait(), call(i))[1]) for i in range(count)]


def test_twenty_concurrent_requests_with_a_new_kid_share_one_fetch(realm: Realm, verifier: JwtVerifier) -> None:
    verifier.verify(realm.token())
    realm.add_key("k2")  # the realm rotated its keys
    token = realm.token("k2")
    before = realm.jwks_fetches
    realm.gate.clear()
    pool, futures = concurrently(20, lambda _: status_of(verifier, token))
    with pool:
        # One request fetches (and hangs there); the nineteen others wait for that fetch.
        eventually(lambda: realm.jwks_fetches == before + 1 and verifier.keys.waiting == 19)
        realm.gate.set()
        assert [future.result() for future in futures] == [200] * 20
    assert realm.jwks_fetches == before + 1


def test_a_new_kid_right_after_a_refresh_is_accepted(realm: Realm, verifier: JwtVerifier) -> None:
    verifier.verify(realm.token())  # the keys were fetched just now
    realm.add_key("k2")
    assert verifier.verify(realm.token("k2")).subject == "user-1"  # the first time, not after a retry
    assert realm.jwks_fetches == 2


def test_a_withdrawn_key_is_refused_once_the_new_set_is_fetched_even_for_a_cached_token(
    realm: Realm, verifier: JwtVerifier
) -> None:
    old = realm.token()
    verifier.verify(old)
    verifier.verify(old)  # now answered from the cache of verified tokens
    realm.add_key("k2")
    del realm.keys["k1"]  # rotated, and the old key withdrawn
    verifier.verify(realm.token("k2"))  # the gateway fetches the new set
    fetches = realm.jwks_fetches
    assert "unknown signing key 'k1'" in refused(verifier, old)
    assert realm.jwks_fetches == fetches  # known to be withdrawn: refused without another fetch


def test_a_withdrawn_key_is_noticed_when_the_set_grows_old_without_any_new_kid(realm: Realm) -> None:
    verifier = verifier_for(realm, refresh_seconds=0.2)
    old = realm.token()
    verifier.verify(old)
    realm.add_key("k2")
    del realm.keys["k1"]
    # The set is fetched again in the background once it is 0.2 s old; until then the cache answers.
    eventually(lambda: status_of(verifier, old) != 200)
    assert "unknown signing key" in refused(verifier, old)
    assert verifier.verify(realm.token("k2")).subject == "user-1"


def test_made_up_kids_cost_the_issuer_a_bounded_number_of_fetches(realm: Realm, verifier: JwtVerifier) -> None:
    verifier.verify(realm.token())
    before = realm.jwks_fetches
    kids = [f"made-up-{i}" for i in range(30)]
    realm.gate.clear()
    pool, futures = concurrently(30, lambda i: status_of(verifier, made_up(kids[i])))
    with pool:
        eventually(lambda: realm.jwks_fetches == before + 1 and verifier.keys.waiting == 29)
        realm.gate.set()
        answers = [future.result() for future in futures]
    assert all(isinstance(a, Problem) and a.status == 401 and "unknown signing key" in a.detail for a in answers)
    # The fetch in flight, and at most one after it for the requests that came while it ran.
    assert realm.jwks_fetches - before <= 2

    # The same kids again: refused at once, from the list of kids a fresh fetch did not contain.
    fetches = realm.jwks_fetches
    for kid in kids:
        assert "unknown signing key" in refused(verifier, made_up(kid))
    assert realm.jwks_fetches == fetches

    # New made-up kids one after another: each waits for a fetch of its own, but fetches start at
    # least MIN_INTERVAL apart, so the issuer sees at most one per interval.
    began = time.monotonic()
    for i in range(8):
        assert "unknown signing key" in refused(verifier, made_up(f"one-by-one-{i}"))
    elapsed = time.monotonic() - began
    assert 1 <= realm.jwks_fetches - fetches <= 1 + elapsed / MIN_INTERVAL


def test_an_issuer_down_at_start_answers_503_at_once_with_one_fetch_per_window(realm: Realm) -> None:
    retry_seconds = 1.0
    verifier = verifier_for(realm, retry_seconds=retry_seconds)
    token = realm.token()
    realm.down = True
    realm.gate.clear()
    pool, futures = concurrently(20, lambda _: status_of(verifier, token))
    with pool:
        eventually(lambda: realm.fetches == 1 and verifier.keys.waiting == 19)
        began = time.monotonic()
        realm.gate.set()
        answers = [future.result() for future in futures]
    for answer in answers:  # every waiting request shares the one failed fetch
        assert isinstance(answer, Problem) and answer.status == 503, answer
        assert int(answer.headers["Retry-After"]) >= 1
    assert realm.failed_fetches == 1

    # While the failure is remembered, requests get their 503 without trying again.
    for _ in range(20):
        answer = status_of(verifier, token)
        assert isinstance(answer, Problem) and answer.status == 503
    assert realm.failed_fetches <= 1 + (time.monotonic() - began) / retry_seconds

    # Back up: the next fetch after the window succeeds; still at most one attempt per window.
    realm.down = False
    eventually(lambda: status_of(verifier, token) == 200)
    assert realm.failed_fetches <= 1 + (time.monotonic() - began) / retry_seconds


def test_a_failed_refresh_keeps_the_keys_the_gateway_has(realm: Realm) -> None:
    verifier = verifier_for(realm, refresh_seconds=0.2)
    cached = realm.token()
    verifier.verify(cached)
    realm.down = True

    def refresh_failed_while_tokens_verify() -> bool:
        assert verifier.verify(cached).subject == "user-1"
        assert verifier.verify(realm.token(jti=str(time.monotonic()))).subject == "user-1"  # not cached
        return realm.failed_fetches >= 1

    eventually(refresh_failed_while_tokens_verify)
    # A kid it does not know, though, cannot be checked while the issuer is down.
    realm.add_key("k2")
    answer = status_of(verifier, realm.token("k2"))
    assert isinstance(answer, Problem) and answer.status == 503


def test_a_made_up_kid_is_refused_after_one_fresh_fetch(realm: Realm, verifier: JwtVerifier) -> None:
    verifier.verify(realm.token())
    fetches = realm.jwks_fetches
    for _ in range(3):
        assert "unknown signing key" in refused(verifier, made_up("made-up"))
    assert realm.jwks_fetches == fetches + 1


def test_a_fetch_that_fails_unexpectedly_does_not_leave_later_requests_waiting_forever(realm: Realm) -> None:
    verifier = verifier_for(realm, retry_seconds=60)
    broken = iter([RuntimeError("a bug in the fetch")])

    def fetch(url: str) -> dict[str, Any]:
        error = next(broken, None)
        if error is not None:
            raise error
        return realm.fetch(url)

    verifier.keys.fetch = fetch
    with pytest.raises(RuntimeError):
        verifier.verify(realm.token())
    # Remembered as a failed fetch (a fetch still marked in flight would keep this request waiting).
    answer = status_of(verifier, realm.token())
    assert isinstance(answer, Problem) and answer.status == 503 and int(answer.headers["Retry-After"]) > 1
    assert verifier.keys.waiting == 0
