"""The forwarded identity and the fail-fast configuration."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from jose import jwt

from functions.shared import identity
from functions.shared.config import Config, ConfigError
from functions.shared.problems import Problem

SECRET = "unit-test-secret"


def test_a_signed_identity_round_trips() -> None:
    who = identity.Identity("u1", "u1@example.com", "Ada", "Lovelace", frozenset({"customer"}))
    assert identity.verify(identity.sign(who, SECRET), SECRET) == who


def claims(**changes: Any) -> dict[str, Any]:
    """The claims the gateway signs, valid for another minute from now, with `changes` made."""
    valid = {
        "sub": "u1",
        "roles": ["admin"],
        "iss": identity.ISSUER,
        "aud": identity.AUDIENCE,
        "exp": int(time.time()) + 60,
    }
    return {name: value for name, value in {**valid, **changes}.items() if value is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return str(jwt.encode(payload, secret, algorithm="HS256"))


# Each token is made when its test runs (never at collection: a test run outlasts a 60 s `exp`),
# and each is refused for its own reason: every other claim is valid.
REFUSED: dict[str, tuple[Callable[[], str], str]] = {
    "another key": (lambda: hs256(claims(), "another-secret"), "Signature verification failed"),
    "expired": (lambda: hs256(claims(exp=int(time.time()) - 10)), "Signature has expired"),
    "wrong issuer": (lambda: hs256(claims(iss="someone-else")), "Invalid issuer"),
    "no issuer": (lambda: hs256(claims(iss=None)), "iss"),
    "wrong audience": (lambda: hs256(claims(aud="another-service")), "Invalid audience"),
    "audiences without ours": (lambda: hs256(claims(aud=["a", "b"])), "Invalid audience"),
    # alg "none": header and claims, no signature.
    "alg none": (
        lambda: "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsInJvbGVzIjpbImFkbWluIl19.",
        "alg value is not allowed",
    ),
    "not a token": (lambda: "not-a-token", "Not enough segments"),
}


def test_the_valid_claims_the_refusals_start_from_are_accepted() -> None:
    """Each refusal below changes one claim of these: were these refused, every refusal would prove nothing."""
    assert identity.verify(hs256(claims()), SECRET) == identity.Identity("u1", roles=frozenset({"admin"}))


@pytest.mark.parametrize("case", list(REFUSED))
def test_forged_expired_or_foreign_identities_are_401(case: str) -> None:
    make, reason = REFUSED[case]
    with pytest.raises(Problem) as caught:
        identity.verify(make(), SECRET)
    assert caught.value.status == 401
    assert reason in caught.value.detail


@pytest.mark.parametrize("claim", ["aud", "exp"])
def test_an_identity_without_an_audience_or_an_expiry_is_401(claim: str) -> None:
    """The gateway always signs both: a token without `aud` was meant for something else, one without
    `exp` would be good forever."""
    with pytest.raises(Problem) as caught:
        identity.verify(hs256(claims(**{claim: None})), SECRET)
    assert caught.value.status == 401


def test_required_settings_fail_fast_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Config({}).required("DATABASE_URL")
    assert Config({"X": " "}).optional("X", "default") == "default"
    with pytest.raises(ConfigError, match="RESERVATION_TTL_SECONDS"):
        Config({"RESERVATION_TTL_SECONDS": "soon"}).seconds("RESERVATION_TTL_SECONDS", 300)
