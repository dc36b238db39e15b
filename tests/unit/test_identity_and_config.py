"""The forwarded identity and the fail-fast configuration."""

from __future__ import annotations

import time

import pytest
from jose import jwt

from functions.shared import identity
from functions.shared.config import Config, ConfigError
from functions.shared.problems import Problem

SECRET = "unit-test-secret"


def test_a_signed_identity_round_trips() -> None:
    who = identity.Identity("u1", "u1@example.com", "Ada", "Lovelace", frozenset({"customer"}))
    assert identity.verify(identity.sign(who, SECRET), SECRET) == who


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode(
            {
                "sub": "u1",
                "roles": ["admin"],
                "iss": identity.ISSUER,
                "aud": identity.AUDIENCE,
                "exp": int(time.time()) + 60,
            },
            "another-secret",
            algorithm="HS256",
        ),
        jwt.encode(
            {
                "sub": "u1",
                "roles": ["admin"],
                "iss": identity.ISSUER,
                "aud": identity.AUDIENCE,
                "exp": int(time.time()) - 10,
            },
            SECRET,
            algorithm="HS256",
        ),
        jwt.encode(
            {
                "sub": "u1",
                "roles": ["admin"],
                "iss": "someone-else",
                "aud": identity.AUDIENCE,
                "exp": int(time.time()) + 60,
            },
            SECRET,
            algorithm="HS256",
        ),
        # alg "none": header and claims, no signature.
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsInJvbGVzIjpbImFkbWluIl19.",
        "not-a-token",
    ],
)
def test_forged_expired_or_foreign_identities_are_401(token: str) -> None:
    with pytest.raises(Problem) as caught:
        identity.verify(token, SECRET)
    assert caught.value.status == 401


def test_required_settings_fail_fast_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Config({}).required("DATABASE_URL")
    assert Config({"X": " "}).optional("X", "default") == "default"
    with pytest.raises(ConfigError, match="RESERVATION_TTL_SECONDS"):
        Config({"RESERVATION_TTL_SECONDS": "soon"}).seconds("RESERVATION_TTL_SECONDS", 300)
