"""Token checks against a realm's keys: every way a forged or misused token is turned away."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from functions.shared.problems import Problem
from gateway.auth import JwtVerifier

ISSUER = "http://issuer.test/realms/shop"


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
    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, dict[str, Any]]] = {}
        self.fetches = 0
        self.add_key("k1")

    def add_key(self, kid: str) -> None:
        pem, public = rsa_key()
        self.keys[kid] = (pem, {**public, "kid": kid, "use": "sig", "alg": "RS256"})

    def fetch(self, url: str) -> dict[str, Any]:
        self.fetches += 1
        if url.endswith("openid-configuration"):
            return {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/protocol/openid-connect/certs"}
        return {"keys": [public for _, public in self.keys.values()]}

    def token(self, kid: str = "k1", **overrides: Any) -> str:
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
        return str(jwt.encode(claims, self.keys[kid][0], algorithm="RS256", headers={"kid": kid}))


@pytest.fixture
def realm() -> Realm:
    return Realm()


@pytest.fixture
def verifier(realm: Realm) -> JwtVerifier:
    return JwtVerifier(
        ISSUER,
        audience="shop-api",
        allowed_clients=["storefront"],
        fetch=realm.fetch,
        leeway_seconds=5,
        refresh_seconds=60,
    )


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


def test_an_unknown_kid_fetches_the_keys_again_but_not_on_every_request(realm: Realm, verifier: JwtVerifier) -> None:
    verifier.verify(realm.token())
    fetches = realm.fetches
    realm.add_key("k2")  # the realm rotated its keys
    assert verifier.verify(realm.token("k2")).subject == "user-1"
    assert realm.fetches == fetches + 1
    stranger = Realm()
    stranger.keys["made-up"] = stranger.keys.pop("k1")
    for _ in range(3):
        assert "unknown signing key" in refused(verifier, stranger.token("made-up"))
    assert realm.fetches == fetches + 1  # keys are fetched again at most once per refresh_seconds


def test_a_token_from_another_realm_is_refused(verifier: JwtVerifier) -> None:
    stranger = Realm()  # its own key, also named k1
    refused(verifier, stranger.token(iss="http://issuer.test/realms/elsewhere"))
    refused(verifier, stranger.token())  # right issuer name, wrong key: the signature does not verify
