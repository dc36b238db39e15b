"""The issuer's RSA signing keys (joserfc JWKs): PEM files in its folder, the newest signing, every one published."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

ALGORITHM = "RS256"


def new_private_pem() -> bytes:
    """A fresh RSA 2048 key; it takes a while, so callers make it outside any lock."""
    return RSAKey.generate_key(2048).as_pem(private=True)


@dataclass(frozen=True)
class SigningKey:
    path: Path
    jwk: RSAKey  # the private key; its kid is the RFC 7638 thumbprint, so a key keeps its kid across restarts

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        jwk = RSAKey.import_key(path.read_bytes(), parameters={"alg": ALGORITHM, "use": "sig"})
        if jwk.private_key is None:
            raise ValueError(f"{path}: not an RSA private key")
        jwk.ensure_kid()
        return cls(path, jwk)

    @property
    def kid(self) -> str:
        return str(self.jwk.kid)

    @property
    def private(self) -> RSAPrivateKey:
        """The key as `cryptography` holds it, which python-jose signs with too (the token-attack tests)."""
        key = self.jwk.private_key
        assert key is not None  # load() refuses public keys
        return key

    @property
    def public_jwk(self) -> dict[str, Any]:
        return dict(self.jwk.as_dict(private=False))

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode({"alg": ALGORITHM, "kid": self.kid}, claims, self.jwk, algorithms=[ALGORITHM])


class KeyRing:
    """RSA keys as PEM files `signing-key-<serial>.pem`: the newest signs, every one present is published."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.keys: list[SigningKey] = []
        self._published = KeySet([])
        self._publish([SigningKey.load(p) for p in sorted(folder.glob("signing-key-*.pem"))])
        if not self.keys:
            self.add(new_private_pem())

    def _publish(self, keys: list[SigningKey]) -> None:
        self.keys = keys
        self._published = KeySet([RSAKey.import_key(key.public_jwk) for key in keys])

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def add(self, pem: bytes) -> SigningKey:
        serial = int(self.keys[-1].path.stem.rsplit("-", 1)[1]) + 1 if self.keys else 1
        path = self.folder / f"signing-key-{serial:06d}.pem"
        partial = path.with_suffix(".partial")
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)  # a crash never leaves half a key behind
        self._publish([*self.keys, SigningKey.load(path)])
        return self.current

    def retire_old(self) -> None:
        for key in self.keys[:-1]:
            key.path.unlink(missing_ok=True)
        self._publish([self.current])

    def find(self, kid: object) -> SigningKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    @property
    def published(self) -> KeySet:
        """The public keys, as the JWKS endpoint serves them."""
        return self._published

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a JWT signed with RS256 by a key still published (not checked yet); JoseError if not."""
        return dict(jwt.decode(token, self._published, algorithms=[ALGORITHM]).claims)
