"""A local OpenID Connect issuer that serves a Keycloak realm export on Keycloak's URL layout (/realms/<realm>/...).

Users, passwords, clients, secrets, redirect URIs, roles and lifespans all come from the realm file that
Keycloak imports in the cluster (knative/keycloak/realm-shop.json), so tokens look the same in both places:
RS256 JWTs with Keycloak's claims (azp, typ, sid, realm_access, resource_access, audiences, ...).
Signing keys are RSA 2048 PEM files in the data folder and survive restarts; authorization codes, sessions
and refresh tokens (opaque random strings, not Keycloak's JWTs) live in memory, so a restart ends sessions
while access tokens already issued stay valid until they expire.

Keys rotate over HTTP too, for tests and demos, with a bearer token of a user or service account holding
the realm's `admin` role: GET /admin/realms/<realm>/keys lists them (Keycloak's KeysMetadataRepresentation:
the signing key ACTIVE, older ones PASSIVE, still published), POST .../keys/rotate adds a new signing key and
POST .../keys/retire-old withdraws every other one. Keycloak rotates by adding and removing key provider
components instead; these two endpoints are this local issuer's own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from jose.exceptions import JWTError
from multidict import MultiMapping

# What Keycloak gives a client that names no client scopes of its own. offline_access is left out:
# this issuer has no offline tokens, so asking for one is an invalid scope here.
DEFAULT_SCOPES = ("web-origins", "acr", "profile", "roles", "basic", "email")
OPTIONAL_SCOPES = ("address", "phone", "microprofile-jwt", "organization")
# Scopes Keycloak applies without naming them in the token's `scope` claim.
UNNAMED_SCOPES = frozenset({"web-origins", "acr", "roles", "basic"})
CLAIMS: tuple[str, ...] = ("iss", "sub", "aud", "exp", "iat", "auth_time", "azp", "sid", "acr", "name", "given_name")
CLAIMS += ("family_name", "preferred_username", "email", "email_verified", "realm_access", "resource_access")
PKCE_VALUE = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636: verifier and challenge alike
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The sign-in page wears the storefront's look (gateway/storefront/style.css, in short), inline: the page's
# policy allows this one stylesheet by its hash and nothing else.
PAGE_STYLE = """
:root { color-scheme: light dark; --bg: #f7f7f9; --surface: #fff; --text: #1c1d21; --muted: #5b5f6b;
  --border: #d5d7de; --accent: #1f5fd1; --accent-text: #fff; --danger: #b3261e; --error-bg: #fdecea;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.5; }
@media (prefers-color-scheme: dark) { :root { --bg: #15161a; --surface: #1f2127; --text: #ececf1;
  --muted: #a4a8b4; --border: #3a3d47; --accent: #7aa7ff; --accent-text: #0b1020; --danger: #ff8a80;
  --error-bg: #3b1f1d; } }
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; background: var(--bg); color: var(--text); }
.bar { display: flex; align-items: center; gap: .5rem; padding: .75rem clamp(1rem, 4vw, 2.5rem);
  background: var(--surface); border-bottom: 1px solid var(--border); font-size: 1.25rem; font-weight: 700; }
.bar svg { width: 1.75rem; height: 1.75rem; }
main { max-width: 26rem; margin: 3rem auto; padding: 0 1rem; }
.card { padding: 1.5rem; background: var(--surface); border: 1px solid var(--border); border-radius: 8px; }
h1 { margin: 0 0 1rem; font-size: 1.5rem; }
label { display: block; margin-bottom: .75rem; font-weight: 600; }
input { display: block; width: 100%; margin-top: .25rem; padding: .5rem .6rem; border: 1px solid var(--border);
  border-radius: 8px; background: var(--surface); color: var(--text); font: inherit; }
input:focus-visible, button:focus-visible, a:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
button { width: 100%; padding: .6rem 1rem; border: 1px solid var(--accent); border-radius: 8px;
  background: var(--accent); color: var(--accent-text); font: inherit; font-weight: 600; cursor: pointer; }
[role=alert] { padding: .75rem 1rem; border: 1px solid var(--danger); border-radius: 8px; background: var(--error-bg); }
.back { display: inline-block; margin-top: 1rem; color: var(--accent); }
.hint { color: var(--muted); font-size: .9rem; }
"""
BAG_ICON = (
    '<svg viewBox="0 0 64 64" aria-hidden="true"><rect width="64" height="64" rx="14" fill="#1f5fd1"/>'
    '<path d="M16 24h32l-3 28H19z" fill="#fff"/><path d="M24 26v-6a8 8 0 0 1 16 0v6" fill="none" stroke="#fff" '
    'stroke-width="4" stroke-linecap="round"/></svg>'
)
PAGE_STYLE_HASH = base64.b64encode(hashlib.sha256(PAGE_STYLE.encode()).digest()).decode()
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{PAGE_STYLE_HASH}'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
Role = tuple[str | None, str]  # (client id, or None for a realm role; role name)
Handler = Callable[[web.Request], Awaitable[web.Response]]


class OAuthError(Exception):
    """An OAuth 2.0 error response: {"error": ..., "error_description": ...}."""

    def __init__(self, error: str, description: str, status: int = 400, headers: Mapping[str, str] | None = None):
        super().__init__(description)
        self.error, self.description, self.status, self.headers = error, description, status, dict(headers or {})

    def response(self) -> web.Response:
        body = {"error": self.error, "error_description": self.description}
        return web.json_response(body, status=self.status, headers={**NO_STORE, **self.headers})


# --- the realm file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    client_id: str
    public: bool
    secret: str
    standard_flow: bool
    direct_grants: bool
    service_account: bool
    redirect_uris: tuple[str, ...]
    post_logout_uris: tuple[str, ...]
    web_origins: tuple[str, ...]
    pkce_required: bool
    audiences: tuple[str, ...]
    default_scopes: tuple[str, ...]
    optional_scopes: tuple[str, ...]

    @classmethod
    def parse(cls, rep: Mapping[str, Any]) -> Client:
        attributes = rep.get("attributes") or {}
        redirects = tuple(rep.get("redirectUris") or ())
        post_logout = str(attributes.get("post.logout.redirect.uris", "+")).split("##")
        origins = [str(o) for o in rep.get("webOrigins") or ()]
        if "+" in origins:  # Keycloak: the origins of the redirect URIs
            origins = [o for o in origins if o != "+"] + [
                f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" for u in redirects
            ]
        audiences = [
            mapper.get("config", {}).get("included.custom.audience")
            or mapper.get("config", {}).get("included.client.audience")
            for mapper in rep.get("protocolMappers") or ()
            if mapper.get("protocolMapper") == "oidc-audience-mapper"
            and mapper.get("config", {}).get("access.token.claim", "true") == "true"
        ]
        return cls(
            client_id=rep["clientId"],
            public=bool(rep.get("publicClient", False)),
            secret=str(rep.get("secret") or ""),
            standard_flow=bool(rep.get("standardFlowEnabled", True)),
            direct_grants=bool(rep.get("directAccessGrantsEnabled", False)),
            service_account=bool(rep.get("serviceAccountsEnabled", False)),
            redirect_uris=redirects,
            post_logout_uris=tuple(u for part in post_logout for u in (redirects if part == "+" else (part,)) if u),
            web_origins=tuple(dict.fromkeys(origins)),
            pkce_required=attributes.get("pkce.code.challenge.method") == "S256",
            audiences=tuple(a for a in audiences if a),
            default_scopes=tuple(rep.get("defaultClientScopes") or DEFAULT_SCOPES),
            optional_scopes=tuple(
                s for s in rep.get("optionalClientScopes") or OPTIONAL_SCOPES if s != "offline_access"
            ),
        )


@dataclass(frozen=True)
class User:
    id: str
    username: str
    enabled: bool
    email: str | None
    email_verified: bool
    first_name: str | None
    last_name: str | None
    password: str | None
    ready: bool  # False: a temporary password or required actions; Keycloak refuses such logins
    roles: tuple[Role, ...]
    service_account_of: str | None = None

    @classmethod
    def parse(cls, rep: Mapping[str, Any], realm: str) -> User:
        username = str(rep["username"]).lower()
        password: Mapping[str, Any] = next((c for c in rep.get("credentials") or () if c.get("type") == "password"), {})
        roles = [(None, r) for r in rep.get("realmRoles") or ()]
        roles += [(c, r) for c, names in (rep.get("clientRoles") or {}).items() for r in names]
        return cls(
            id=str(rep.get("id") or stable_id(realm, username)),
            username=username,
            enabled=bool(rep.get("enabled", False)),  # Keycloak's import: absent means disabled
            email=rep.get("email"),
            email_verified=bool(rep.get("emailVerified", False)),
            first_name=rep.get("firstName"),
            last_name=rep.get("lastName"),
            password=password.get("value"),
            ready=not password.get("temporary", False) and not rep.get("requiredActions"),
            roles=tuple(roles),
            service_account_of=rep.get("serviceAccountClientId"),
        )


def stable_id(realm: str, username: str) -> str:
    """The `sub` of a user the realm file gives no id: the same on every start."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:shop-local-issuer:{realm}:{username}"))


def _composites(rep: Mapping[str, Any]) -> tuple[Role, ...]:
    composites = rep.get("composites") or {}
    realm_roles = [(None, name) for name in composites.get("realm") or ()]
    return tuple(realm_roles + [(c, n) for c, names in (composites.get("client") or {}).items() for n in names])


@dataclass(frozen=True)
class Realm:
    name: str
    display_name: str
    access_lifespan: int
    session_idle: int
    session_max: int
    code_lifespan: int
    revoke_refresh: bool
    login_with_email: bool
    clients: Mapping[str, Client]
    users: tuple[User, ...]
    composites: Mapping[Role, tuple[Role, ...]]

    @classmethod
    def load(cls, path: Path) -> Realm:
        rep = json.loads(path.read_text(encoding="utf-8"))
        name = rep["realm"]
        roles = rep.get("roles") or {}
        composites: dict[Role, tuple[Role, ...]] = {(None, r["name"]): _composites(r) for r in roles.get("realm") or ()}
        for client_id, client_roles in (roles.get("client") or {}).items():
            composites.update({(client_id, r["name"]): _composites(r) for r in client_roles})
        clients = {c["clientId"]: Client.parse(c) for c in rep.get("clients") or () if c.get("enabled", True)}
        users = [User.parse(u, name) for u in rep.get("users") or ()]
        default_role = (rep.get("defaultRole") or {}).get("name", f"default-roles-{name.lower()}")
        for client in clients.values():  # Keycloak creates the service account user a file leaves out
            if client.service_account and not any(u.service_account_of == client.client_id for u in users):
                account = {"username": f"service-account-{client.client_id}", "enabled": True}
                account |= {"serviceAccountClientId": client.client_id, "realmRoles": [default_role]}
                users.append(User.parse(account, name))
        return cls(
            name=name,
            display_name=rep.get("displayName") or name,
            access_lifespan=int(rep.get("accessTokenLifespan", 300)),  # Keycloak's defaults throughout
            session_idle=int(rep.get("ssoSessionIdleTimeout", 1800)),
            session_max=int(rep.get("ssoSessionMaxLifespan", 36000)),
            code_lifespan=int(rep.get("accessCodeLifespan", 60)),
            revoke_refresh=bool(rep.get("revokeRefreshToken", False)),
            login_with_email=bool(rep.get("loginWithEmailAllowed", True)),
            clients=clients,
            users=tuple(users),
            composites=composites,
        )

    def user(self, login: str) -> User | None:
        """By username, or by email when the realm allows logging in with it."""
        login = login.strip().lower()
        if not login:
            return None
        for user in self.users:
            if user.username == login or (self.login_with_email and (user.email or "").lower() == login):
                return user
        return None

    def user_by_id(self, user_id: str) -> User | None:
        return next((u for u in self.users if u.id == user_id), None)

    def service_account(self, client_id: str) -> User:
        return next(u for u in self.users if u.service_account_of == client_id)

    def roles(self, user: User) -> tuple[list[str], dict[str, list[str]]]:
        """Effective realm roles and client roles (by client id), composites expanded."""
        found: list[Role] = []
        pending = list(user.roles)
        while pending:
            role = pending.pop(0)
            if role not in found:
                found.append(role)
                pending.extend(self.composites.get(role, ()))
        client_roles: dict[str, list[str]] = {}
        for client_id, name in found:
            if client_id is not None:
                client_roles.setdefault(client_id, []).append(name)
        return [name for client_id, name in found if client_id is None], client_roles


# --- signing keys -------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    path: Path
    private: Any  # a python-jose key
    public_jwk: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        pem = path.read_bytes()
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ValueError(f"{path}: not an RSA private key")
        numbers = private.public_key().public_numbers()
        n, e = _b64_uint(numbers.n), _b64_uint(numbers.e)
        # RFC 7638 thumbprint: the same key always has the same kid.
        kid = _b64(hashlib.sha256(json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":")).encode()).digest())
        public = {"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig", "n": n, "e": e}
        return cls(kid, path, jwk.construct(pem, "RS256"), public)


class KeyRing:
    """RSA keys as PEM files `signing-key-<serial>.pem`: the newest signs, every one present is published."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.keys = [SigningKey.load(p) for p in sorted(folder.glob("signing-key-*.pem"))]
        if not self.keys:
            self.add()

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def add(self) -> SigningKey:
        serial = int(self.keys[-1].path.stem.rsplit("-", 1)[1]) + 1 if self.keys else 1
        path = self.folder / f"signing-key-{serial:06d}.pem"
        pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        partial = path.with_suffix(".partial")
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)  # a crash never leaves half a key behind
        self.keys = [*self.keys, SigningKey.load(path)]
        return self.current

    def retire_old(self) -> None:
        for key in self.keys[:-1]:
            key.path.unlink(missing_ok=True)
        self.keys = [self.current]

    def find(self, kid: object) -> SigningKey | None:
        return next((k for k in self.keys if k.kid == kid), None)


# --- sessions, codes, requests ------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    sid: str | None  # None: a service account's token, which has no session (nor refresh token)
    user: User
    client_id: str
    scopes: tuple[str, ...]
    auth_time: int


@dataclass(frozen=True)
class Code:
    session: Session
    redirect_uri: str
    challenge: str | None
    nonce: str | None
    expires: float


@dataclass(frozen=True)
class AuthRequest:
    """An authorization request whose client and redirect URI are checked: errors can go back to it."""

    client: Client
    redirect_uri: str
    state: str | None
    nonce: str | None
    challenge: str | None
    fragment: bool
    scopes: tuple[str, ...] = ()

    def redirect(self, issuer: str, **params: str) -> web.Response:
        values = {**params, **({"state": self.state} if self.state is not None else {}), "iss": issuer}
        separator = "#" if self.fragment else ("&" if "?" in self.redirect_uri else "?")
        return web.Response(
            status=302, headers={"Location": self.redirect_uri + separator + urlencode(values), **NO_STORE}
        )


def _with_own_origin(realm: Realm, base_url: str) -> Realm:
    """The realm with this runtime's own site allowed as a browser client's redirect URI and web origin:
    the storefront is served from the same origin, on whatever port the runtime listens (the realm file
    names port 8080, as `./taskw start` uses by default)."""
    clients = {
        client_id: replace(
            client,
            redirect_uris=(*client.redirect_uris, f"{base_url}/*"),
            post_logout_uris=(*client.post_logout_uris, f"{base_url}/*"),
            web_origins=(*client.web_origins, base_url),
        )
        if client.redirect_uris
        else client
        for client_id, client in realm.clients.items()
    }
    return replace(realm, clients=clients)


def allowed_uri(uri: str, patterns: Iterable[str]) -> bool:
    """Keycloak's matching: exact, or a prefix when the registered URI ends with `*`."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    if not uri or parts.fragment or "@" in parts.netloc:
        return False
    return any(uri.startswith(p[:-1]) if p.endswith("*") else uri == p for p in patterns)


def single_values(values: MultiMapping[Any]) -> dict[str, str]:
    """Form or query parameters; RFC 6749 allows each at most once."""
    result: dict[str, str] = {}
    for key in values:
        items = values.getall(key)
        if len(items) > 1:
            raise OAuthError("invalid_request", f"Duplicated parameter: {key}")
        if isinstance(items[0], str):
            result[key] = items[0]
    return result


def s256(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


# --- the issuer ---------------------------------------------------------------------------------


class Issuer:
    """The realm's OIDC endpoints as aiohttp routes, for the local runtime's ingress."""

    def __init__(
        self, realm_file: Path, data_dir: Path, base_url: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.realm = _with_own_origin(Realm.load(realm_file), self.base_url)
        self.keys = KeyRing(data_dir)
        self._clock = clock
        self._lock = threading.RLock()  # handlers run on the runtime's loop, rotate() and token_for() elsewhere
        self._codes: dict[str, Code] = {}
        self._spent_codes: dict[str, Code] = {}
        self._refresh: dict[str, tuple[Session, float]] = {}
        self._ended: dict[str, float] = {}  # session id -> when it would have ended anyway
        self._web_origins = frozenset(o for client in self.realm.clients.values() for o in client.web_origins)

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm.name}"

    def endpoint(self, name: str) -> str:
        return f"{self.issuer}/protocol/openid-connect/{name}"

    def routes(self) -> list[web.RouteDef]:
        realm = f"/realms/{self.realm.name}"
        oidc = f"{realm}/protocol/openid-connect"
        cors = self._with_cors
        return [
            web.get(f"{realm}/.well-known/openid-configuration", cors(self._discovery)),
            web.get(f"{oidc}/certs", cors(self._certs)),
            web.post(f"{oidc}/token", cors(self._token)),
            web.options(f"{oidc}/token", cors(self._preflight)),
            web.get(f"{oidc}/auth", self._login_page),
            web.post(f"{oidc}/auth", self._login),
            web.get(f"{oidc}/userinfo", cors(self._userinfo)),
            web.post(f"{oidc}/userinfo", cors(self._userinfo)),
            web.options(f"{oidc}/userinfo", cors(self._preflight)),
            web.get(f"{oidc}/logout", self._logout),
            web.post(f"{oidc}/logout", self._logout),
            web.get(f"/admin{realm}/keys", self._admin_keys),
            web.post(f"/admin{realm}/keys/rotate", self._admin_rotate),
            web.post(f"/admin{realm}/keys/retire-old", self._admin_retire_old),
        ]

    def rotate(self) -> str:
        with self._lock:
            return self.keys.add().kid

    def retire_old(self) -> None:
        with self._lock:
            self.keys.retire_old()

    def token_for(self, username: str, client_id: str = "storefront") -> dict[str, Any]:
        """What a password grant answers, without the password (tests and scripts)."""
        user = self.realm.user(username)
        if user is None:
            raise KeyError(f"no user {username!r} in realm {self.realm.name}")
        with self._lock:
            return self._password_grant(self.realm.clients[client_id], {}, user)

    # --- tokens ---------------------------------------------------------------------------------

    def _scopes(self, client: Client, requested: str | None) -> tuple[str, ...]:
        asked = (requested or "").split()
        unknown = [s for s in asked if s != "openid" and s not in client.default_scopes + client.optional_scopes]
        if unknown:
            raise OAuthError("invalid_scope", f"Invalid scopes: {' '.join(unknown)}")
        chosen = ["openid"] if "openid" in asked else []
        return tuple(dict.fromkeys(chosen + list(client.default_scopes) + [s for s in asked if s != "openid"]))

    def _user_claims(self, user: User, scopes: Iterable[str]) -> dict[str, Any]:
        claims: dict[str, Any] = {}
        if "profile" in scopes:
            name = " ".join(p for p in (user.first_name, user.last_name) if p)
            given = {"name": name, "given_name": user.first_name, "family_name": user.last_name}
            claims.update({k: v for k, v in given.items() if v})
            claims["preferred_username"] = user.username
        if "email" in scopes:
            claims["email_verified"] = user.email_verified
            if user.email:
                claims["email"] = user.email
        return claims

    def _access_claims(self, session: Session, client: Client, now: int) -> dict[str, Any]:
        user, scopes = session.user, session.scopes
        realm_roles, client_roles = self.realm.roles(user) if "roles" in scopes else ([], {})
        # Keycloak's audience mapper, then its audience resolver: every other client the user holds roles of.
        audiences = list(dict.fromkeys([*client.audiences, *(c for c in client_roles if c != client.client_id)]))
        claims: dict[str, Any] = {"exp": now + self.realm.access_lifespan, "iat": now, "jti": str(uuid.uuid4())}
        claims["iss"] = self.issuer
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
        claims["scope"] = " ".join(s for s in scopes if s not in UNNAMED_SCOPES)
        claims.update(self._user_claims(user, scopes))
        if user.service_account_of:
            claims["client_id"] = user.service_account_of
        return claims

    def _sign(self, claims: Mapping[str, Any], access_token: str | None = None) -> str:
        key = self.keys.current
        encoded: str = jwt.encode(
            dict(claims), key.private, algorithm="RS256", headers={"kid": key.kid}, access_token=access_token
        )
        return encoded

    def _issue(self, client: Client, session: Session, nonce: str | None = None) -> dict[str, Any]:
        """The token response; the caller holds the lock."""
        now = int(self._clock())
        access_claims = self._access_claims(session, client, now)
        access_token = self._sign(access_claims)
        body: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": self.realm.access_lifespan,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": access_claims["scope"],
        }
        if session.sid:
            self._purge(now)
            expires = min(now + self.realm.session_idle, session.auth_time + self.realm.session_max)
            refresh_token = secrets.token_urlsafe(32)
            self._refresh[refresh_token] = (session, expires)
            body.update(refresh_token=refresh_token, refresh_expires_in=expires - now, session_state=session.sid)
        if "openid" in session.scopes:
            id_claims = {"exp": access_claims["exp"], "iat": now, "jti": str(uuid.uuid4()), "iss": self.issuer}
            id_claims.update(aud=client.client_id, sub=session.user.id, typ="ID", azp=client.client_id)
            id_claims.update({k: access_claims[k] for k in ("sid", "auth_time", "acr") if k in access_claims})
            if nonce is not None:
                id_claims["nonce"] = nonce
            id_claims.update(self._user_claims(session.user, session.scopes))
            body["id_token"] = self._sign(id_claims, access_token=access_token)
        return body

    def _purge(self, now: float) -> None:
        for store in (self._codes, self._spent_codes):
            for code in [c for c, record in store.items() if record.expires <= now]:
                del store[code]
        for token in [t for t, (_, expires) in self._refresh.items() if expires <= now]:
            del self._refresh[token]
        for sid in [s for s, until in self._ended.items() if until <= now]:
            del self._ended[sid]

    def _end_session(self, sid: str | None) -> None:
        if sid:
            self._ended[sid] = self._clock() + self.realm.session_max
            for token in [t for t, (session, _) in self._refresh.items() if session.sid == sid]:
                del self._refresh[token]

    def _new_session(self, user: User, client: Client, scopes: tuple[str, ...]) -> Session:
        return Session(str(uuid.uuid4()), user, client.client_id, scopes, int(self._clock()))

    def _check_login(self, login: str, password: str) -> User:
        user = self.realm.user(login)
        if user is None or user.password is None or not hmac.compare_digest(password.encode(), user.password.encode()):
            raise OAuthError("invalid_grant", "Invalid user credentials", 401)
        if not user.enabled:
            raise OAuthError("invalid_grant", "Account disabled")
        if not user.ready:
            raise OAuthError("invalid_grant", "Account is not fully set up")
        return user

    # --- grants (the caller holds the lock) -----------------------------------------------------

    def _password_grant(self, client: Client, params: Mapping[str, str], user: User | None = None) -> dict[str, Any]:
        """Resource owner password credentials; `user` given: already known (token_for)."""
        if not client.direct_grants:
            raise OAuthError("unauthorized_client", "Client not allowed for direct access grants")
        user = user or self._check_login(params.get("username", ""), params.get("password", ""))
        return self._issue(client, self._new_session(user, client, self._scopes(client, params.get("scope"))))

    def _client_credentials_grant(self, client: Client, params: Mapping[str, str]) -> dict[str, Any]:
        if client.public or not client.service_account:
            raise OAuthError("unauthorized_client", "Client not enabled to retrieve service account")
        user = self.realm.service_account(client.client_id)
        session = Session(None, user, client.client_id, self._scopes(client, params.get("scope")), int(self._clock()))
        return self._issue(client, session)

    def _refresh_grant(self, client: Client, params: Mapping[str, str]) -> dict[str, Any]:
        token = params.get("refresh_token")
        if not token:
            raise OAuthError("invalid_request", "Missing parameter: refresh_token")
        session, expires = self._refresh.get(token, (None, 0.0))
        if session is None or expires <= self._clock():
            raise OAuthError("invalid_grant", "Invalid refresh token")
        if session.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Invalid refresh token. Token client and authorized client don't match")
        if self.realm.revoke_refresh:  # rotation: each refresh token works once
            del self._refresh[token]
        return self._issue(client, session)

    def _code_grant(self, client: Client, params: Mapping[str, str]) -> dict[str, Any]:
        code = params.get("code", "")
        record = self._codes.pop(code, None)
        if record is None:
            spent = self._spent_codes.get(code)
            if spent is not None:  # RFC 6749 4.1.2: a code used twice revokes what it gave
                self._end_session(spent.session.sid)
            raise OAuthError("invalid_grant", "Code not valid")
        self._spent_codes[code] = record
        if record.expires <= self._clock():
            raise OAuthError("invalid_grant", "Code is expired")
        if record.session.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Code was issued to another client")
        if params.get("redirect_uri") != record.redirect_uri:
            raise OAuthError("invalid_grant", "Incorrect redirect_uri")
        verifier = params.get("code_verifier")
        if record.challenge is not None:
            if verifier is None:
                raise OAuthError("invalid_grant", "PKCE code verifier not specified")
            if not PKCE_VALUE.fullmatch(verifier) or not hmac.compare_digest(s256(verifier), record.challenge):
                raise OAuthError("invalid_grant", "PKCE verification failed: Code mismatch")
        elif verifier is not None:
            raise OAuthError("invalid_grant", "PKCE code verifier specified but challenge not present in authorization")
        return self._issue(client, record.session, record.nonce)

    def _authenticate(self, request: web.Request, params: Mapping[str, str]) -> Client:
        """The calling client: a public one by its id, a confidential one by its secret (Basic or form)."""
        client_id, secret = params.get("client_id"), params.get("client_secret")
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        challenge = {}
        if scheme.lower() == "basic":
            challenge = {"WWW-Authenticate": f'Basic realm="{self.realm.name}"'}
            try:
                basic_id, _, basic_secret = base64.b64decode(credentials, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise OAuthError("invalid_client", "Malformed Basic credentials", 401, challenge) from None
            if client_id is not None and client_id != unquote_plus(basic_id):
                raise OAuthError("invalid_request", "client_id differs from the Basic credentials")
            client_id, secret = unquote_plus(basic_id), unquote_plus(basic_secret)
        client = self.realm.clients.get(client_id or "")
        if client is None or not (client.public or self._secret_matches(client, secret or "")):
            raise OAuthError("invalid_client", "Invalid client or Invalid client credentials", 401, challenge)
        return client

    @staticmethod
    def _secret_matches(client: Client, secret: str) -> bool:
        return bool(client.secret) and hmac.compare_digest(secret.encode(), client.secret.encode())

    def _verify(self, token: str, *, verify_exp: bool = True) -> dict[str, Any]:
        """Claims of a token this issuer signed with a key it still publishes; JWTError otherwise."""
        header = jwt.get_unverified_header(token)
        key = self.keys.find(header.get("kid"))
        if key is None or header.get("alg") != "RS256":
            raise JWTError("unknown signing key")
        options = {"verify_aud": False, "verify_exp": verify_exp, "verify_at_hash": False}
        claims: dict[str, Any] = jwt.decode(
            token, key.public_jwk, algorithms=["RS256"], issuer=self.issuer, options=options
        )
        return claims

    # --- HTTP handlers --------------------------------------------------------------------------

    def _with_cors(self, handler: Handler) -> Handler:
        """Keycloak's CORS: a page on a client's web origin may read the answer (say, the storefront opened
        on localhost while the issuer is named by 127.0.0.1)."""

        async def handle(request: web.Request) -> web.Response:
            response = await handler(request)
            origin = request.headers.get("Origin", "")
            if origin in self._web_origins:
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
            return response

        return handle

    async def _preflight(self, _: web.Request) -> web.Response:
        headers = {"Access-Control-Allow-Methods": "GET, POST, OPTIONS", "Access-Control-Max-Age": "3600"}
        return web.Response(
            status=204, headers={**headers, "Access-Control-Allow-Headers": "Authorization, Content-Type"}
        )

    async def _discovery(self, _: web.Request) -> web.Response:
        scopes = {s for c in self.realm.clients.values() for s in c.default_scopes + c.optional_scopes}
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": self.endpoint("auth"),
                "token_endpoint": self.endpoint("token"),
                "userinfo_endpoint": self.endpoint("userinfo"),
                "end_session_endpoint": self.endpoint("logout"),
                "jwks_uri": self.endpoint("certs"),
                "grant_types_supported": ["authorization_code", "refresh_token", "password", "client_credentials"],
                "response_types_supported": ["code"],
                "response_modes_supported": ["query", "fragment"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", *sorted(scopes - UNNAMED_SCOPES)],
                "claims_supported": list(CLAIMS),
                "claims_parameter_supported": False,
                "request_parameter_supported": False,
                "authorization_response_iss_parameter_supported": True,
            }
        )

    async def _certs(self, _: web.Request) -> web.Response:
        return web.json_response({"keys": [key.public_jwk for key in self.keys.keys]})

    async def _token(self, request: web.Request) -> web.Response:
        grants = {
            "password": self._password_grant,
            "client_credentials": self._client_credentials_grant,
            "refresh_token": self._refresh_grant,
            "authorization_code": self._code_grant,
        }
        try:
            params = single_values(await request.post())
            client = self._authenticate(request, params)
            grant_type = params.get("grant_type")
            if not grant_type:
                raise OAuthError("invalid_request", "Missing form parameter: grant_type")
            if grant_type not in grants:
                raise OAuthError("unsupported_grant_type", f"Unsupported grant_type: {grant_type}")
            with self._lock:
                body = grants[grant_type](client, params)
        except OAuthError as error:
            return error.response()
        return web.json_response(body, headers=NO_STORE)

    def _page(self, title: str, content: str, status: int = 200, back: str | None = None) -> web.Response:
        """A page in the shop's look; `back`: where "Back to the shop" leads (the client's site)."""
        link = f'<a class="back" href="{html.escape(back)}">&larr; Back to the shop</a>\n' if back else ""
        text = (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head>\n"
            f'<body><header class="bar">{BAG_ICON}<span>{html.escape(self.realm.display_name)}</span></header>\n'
            f'<main><div class="card"><h1>{html.escape(title)}</h1>\n{content}</div>\n{link}</main></body></html>\n'
        )
        return web.Response(text=text, status=status, content_type="text/html", headers=PAGE_HEADERS)

    def _form(
        self,
        request: web.Request,
        auth: AuthRequest,
        error: str | None = None,
        username: str = "",
        status: int = 200,
    ) -> web.Response:
        alert = f'<p role="alert">{html.escape(error)}</p>\n' if error else ""
        content = (
            f'{alert}<form method="post" action="{html.escape(request.path_qs)}">\n'
            f'<p><label>Username or email <input name="username" value="{html.escape(username)}" '
            'autocomplete="username" required autofocus></label></p>\n'
            '<p><label>Password <input name="password" type="password" autocomplete="current-password" required>'
            "</label></p>\n"
            '<p><button type="submit">Sign in</button></p>\n</form>\n'
        )
        parts = urlsplit(auth.redirect_uri)
        return self._page(f"Sign in to {self.realm.display_name}", content, status, f"{parts.scheme}://{parts.netloc}/")

    def _authorization_request(self, request: web.Request) -> AuthRequest | web.Response:
        """The checked request, or the answer: a page while the redirect URI is unproven, else a redirect."""
        try:
            query = single_values(request.query)
        except OAuthError as error:
            return self._page("Invalid request", f"<p>{html.escape(error.description)}</p>\n", 400)
        client = self.realm.clients.get(query.get("client_id", ""))
        if client is None:
            return self._page("Invalid request", "<p>Client not found.</p>\n", 400)
        redirect_uri = query.get("redirect_uri", "")
        if not allowed_uri(redirect_uri, client.redirect_uris):
            return self._page("Invalid request", "<p>Invalid parameter: redirect_uri</p>\n", 400)
        mode = query.get("response_mode", "query")
        auth = AuthRequest(
            client,
            redirect_uri,
            query.get("state"),
            query.get("nonce"),
            query.get("code_challenge"),
            mode == "fragment",
        )

        def refuse(error: str, description: str) -> web.Response:
            return auth.redirect(self.issuer, error=error, error_description=description)

        if mode not in ("query", "fragment"):
            return refuse("invalid_request", "Invalid parameter: response_mode")
        if query.get("response_type") != "code":
            return refuse("unsupported_response_type", "Only response_type=code is supported")
        if not client.standard_flow:
            return refuse("unauthorized_client", "Standard flow is disabled for the client")
        if auth.challenge is None and client.pkce_required:
            return refuse("invalid_request", "Missing parameter: code_challenge_method")
        if auth.challenge is not None and (
            query.get("code_challenge_method") != "S256" or not PKCE_VALUE.fullmatch(auth.challenge)
        ):
            return refuse("invalid_request", "Invalid parameter: code_challenge_method (S256 only) or code_challenge")
        if query.get("prompt") == "none":  # no single sign-on session here to reuse silently
            return refuse("login_required", "No session")
        try:
            return replace(auth, scopes=self._scopes(client, query.get("scope")))
        except OAuthError as error:
            return refuse(error.error, error.description)

    async def _login_page(self, request: web.Request) -> web.Response:
        auth = self._authorization_request(request)
        return auth if isinstance(auth, web.Response) else self._form(request, auth)

    async def _login(self, request: web.Request) -> web.Response:
        auth = self._authorization_request(request)
        if isinstance(auth, web.Response):
            return auth
        form = await request.post()
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        try:
            user = self._check_login(username, password)
        except OAuthError as error:
            return self._form(request, auth, error.description, username, 401)
        with self._lock:
            session = self._new_session(user, auth.client, auth.scopes)
            code = secrets.token_urlsafe(32)
            expires = self._clock() + self.realm.code_lifespan
            self._codes[code] = Code(session, auth.redirect_uri, auth.challenge, auth.nonce, expires)
        return auth.redirect(self.issuer, code=code, session_state=session.sid or "")

    def _admin_refusal(self, request: web.Request) -> web.Response | None:
        """None for a bearer access token of this realm with the admin role, else the 401 or 403 answer."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": f'Bearer realm="{self.realm.name}"'}
        try:
            claims = self._verify(token.strip()) if scheme.lower() == "bearer" else None
        except JWTError:
            claims = None
        if claims is None or claims.get("typ") != "Bearer" or claims.get("sid") in self._ended:
            return OAuthError("invalid_token", "A valid bearer access token is required", 401, challenge).response()
        if "admin" not in (claims.get("realm_access") or {}).get("roles", []):
            return OAuthError("forbidden", "The admin role is required", 403).response()
        return None

    def _key_listing(self, status: int = 200) -> web.Response:
        current = self.keys.current
        keys = [
            {
                "kid": key.kid,
                "type": "RSA",
                "algorithm": "RS256",
                "use": "SIG",
                "status": "ACTIVE" if key is current else "PASSIVE",
            }
            for key in self.keys.keys
        ]
        return web.json_response({"active": {"RS256": current.kid}, "keys": keys}, status=status, headers=NO_STORE)

    async def _admin_keys(self, request: web.Request) -> web.Response:
        return self._admin_refusal(request) or self._key_listing()

    async def _admin_rotate(self, request: web.Request) -> web.Response:
        refusal = self._admin_refusal(request)
        if refusal is not None:
            return refusal
        await asyncio.to_thread(self.rotate)  # generating an RSA key takes a while: off the event loop
        return self._key_listing(201)

    async def _admin_retire_old(self, request: web.Request) -> web.Response:
        refusal = self._admin_refusal(request)
        if refusal is not None:
            return refusal
        self.retire_old()
        return self._key_listing()

    async def _userinfo(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        refused = {"WWW-Authenticate": f'Bearer realm="{self.realm.name}", error="invalid_token"'}
        if scheme.lower() != "bearer" or not token:
            return OAuthError("invalid_request", "Missing bearer token", 401, refused).response()
        try:
            claims = self._verify(token.strip())
        except JWTError as error:
            return OAuthError("invalid_token", f"Token verification failed: {error}", 401, refused).response()
        user = self.realm.user_by_id(str(claims.get("sub")))
        if claims.get("typ") != "Bearer" or claims.get("sid") in self._ended or user is None:
            return OAuthError("invalid_token", "Token is not active", 401, refused).response()
        return web.json_response({"sub": user.id, **self._user_claims(user, str(claims.get("scope", "")).split())})

    async def _logout(self, request: web.Request) -> web.Response:
        try:
            params = single_values(request.query)
            if request.method == "POST":
                params.update(single_values(await request.post()))
        except OAuthError as error:
            return self._page("Invalid request", f"<p>{html.escape(error.description)}</p>\n", 400)
        claims: dict[str, Any] = {}
        if params.get("id_token_hint"):
            try:  # an expired ID token still names the session to end
                claims = self._verify(params["id_token_hint"], verify_exp=False)
            except JWTError:
                claims = {}
            if claims.get("typ") != "ID":
                return self._page("Invalid request", "<p>Invalid parameter: id_token_hint</p>\n", 400)
        client_id = params.get("client_id") or claims.get("azp")
        if claims and client_id != claims.get("azp"):
            return self._page("Invalid request", "<p>client_id differs from the ID token's client</p>\n", 400)
        target = params.get("post_logout_redirect_uri")
        client = self.realm.clients.get(str(client_id or ""))
        if target and (client is None or not allowed_uri(target, client.post_logout_uris)):
            return self._page("Invalid request", "<p>Invalid parameter: post_logout_redirect_uri</p>\n", 400)
        with self._lock:
            self._end_session(claims.get("sid"))
        if target:
            if "state" in params:
                target += ("&" if "?" in target else "?") + urlencode({"state": params["state"]})
            return web.Response(status=302, headers={"Location": target, **NO_STORE})
        return self._page("You are logged out", "", 200)
