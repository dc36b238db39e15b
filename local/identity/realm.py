"""The Keycloak realm export read as users, clients (Authlib's ClientMixin), roles and lifespans."""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin

# What Keycloak gives a client that names no client scopes of its own. offline_access is left out:
# this issuer has no offline tokens, so asking for one is an invalid scope here.
DEFAULT_SCOPES = ("web-origins", "acr", "profile", "roles", "basic", "email")
OPTIONAL_SCOPES = ("address", "phone", "microprofile-jwt", "organization")
Role = tuple[str | None, str]  # (client id, or None for a realm role; role name)


def allowed_uri(uri: str, patterns: Iterable[str]) -> bool:
    """Keycloak's matching: exact, or a prefix when the registered URI ends with `*`."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    if not uri or parts.fragment or "@" in parts.netloc:
        return False
    return any(uri.startswith(p[:-1]) if p.endswith("*") else uri == p for p in patterns)


@dataclass(frozen=True)
class Client(ClientMixin):
    """A client of the realm, answering Authlib's questions about what it may do."""

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

    def unknown_scopes(self, requested: str | None) -> list[str]:
        known = ("openid", *self.default_scopes, *self.optional_scopes)
        return [s for s in (requested or "").split() if s not in known]

    def scopes(self, requested: str | None) -> tuple[str, ...]:
        """Keycloak's effective scopes: openid when asked, the client's defaults, then the optional ones asked."""
        asked = (requested or "").split()
        chosen = ["openid"] if "openid" in asked else []
        return tuple(dict.fromkeys(chosen + list(self.default_scopes) + [s for s in asked if s != "openid"]))

    # --- Authlib's ClientMixin ------------------------------------------------------------------

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # an authorization request names its redirect URI

    def get_allowed_scope(self, scope: str | None) -> str | None:
        return None if self.unknown_scopes(scope) else " ".join(self.scopes(scope))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return allowed_uri(redirect_uri, self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.secret) and hmac.compare_digest(client_secret.encode(), self.secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none" if self.public else method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and self.standard_flow

    def check_grant_type(self, grant_type: str) -> bool:
        allowed = {
            "authorization_code": self.standard_flow,
            "password": self.direct_grants,
            "client_credentials": self.service_account and not self.public,
            "refresh_token": self.standard_flow or self.direct_grants,
        }
        return allowed.get(grant_type, False)


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

    def password_matches(self, password: str) -> bool:
        return self.password is not None and hmac.compare_digest(password.encode(), self.password.encode())


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

    def with_own_origin(self, base_url: str) -> Realm:
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
            for client_id, client in self.clients.items()
        }
        return replace(self, clients=clients)

    @property
    def web_origins(self) -> frozenset[str]:
        return frozenset(o for client in self.clients.values() for o in client.web_origins)

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
