"""The issuer's HTTP face: Keycloak's URL layout under /realms/<realm>/ as aiohttp routes, and its key admin API."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error, UnauthorizedClientError
from multidict import MultiDict

from local.identity import pages
from local.identity.keys import ALGORITHM, KeyRing, new_private_pem
from local.identity.pages import NO_STORE
from local.identity.realm import Realm
from local.identity.server import CodeGrant, HttpRequest, RealmServer
from local.identity.sessions import Sessions
from local.identity.tokens import UNNAMED_SCOPES, TokenMinter, user_claims

CLAIMS: tuple[str, ...] = ("iss", "sub", "aud", "exp", "iat", "auth_time", "azp", "sid", "acr", "name", "given_name")
CLAIMS += ("family_name", "preferred_username", "email", "email_verified", "realm_access", "resource_access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Issuer:
    """The realm's OIDC endpoints as aiohttp routes, for the local runtime's ingress."""

    def __init__(
        self, realm_file: Path, data_dir: Path, base_url: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.realm = Realm.load(realm_file).with_own_origin(self.base_url)
        self.keys = KeyRing(data_dir)
        self._lock = threading.RLock()  # handlers run on the runtime's loop, rotate() and token_for() elsewhere
        self._sessions = Sessions(self.realm, clock)
        self._minter = TokenMinter(self.realm, self.keys, self._sessions, lambda: self.issuer, clock)
        self._server = RealmServer(self.realm, self.keys, self._sessions, self._minter, lambda: self.issuer)
        self._web_origins = self.realm.web_origins

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm.name}"

    def endpoint(self, name: str) -> str:
        return f"{self.issuer}/protocol/openid-connect/{name}"

    def routes(self) -> list[web.RouteDef]:
        realm = f"/realms/{self.realm.name}"
        oidc = f"{realm}/protocol/openid-connect"
        oauth, cors = self._answering_oauth_errors, self._with_cors
        return [
            web.get(f"{realm}/.well-known/openid-configuration", cors(self._discovery)),
            web.get(f"{oidc}/certs", cors(self._certs)),
            web.post(f"{oidc}/token", cors(oauth(self._token))),
            web.options(f"{oidc}/token", cors(self._preflight)),
            web.get(f"{oidc}/auth", oauth(self._sign_in_page)),
            web.post(f"{oidc}/auth", oauth(self._sign_in)),
            web.get(f"{oidc}/userinfo", cors(oauth(self._userinfo))),
            web.post(f"{oidc}/userinfo", cors(oauth(self._userinfo))),
            web.options(f"{oidc}/userinfo", cors(self._preflight)),
            web.get(f"{oidc}/logout", oauth(self._logout)),
            web.post(f"{oidc}/logout", oauth(self._logout)),
            web.get(f"/admin{realm}/keys", oauth(self._admin_keys)),
            web.post(f"/admin{realm}/keys/rotate", oauth(self._admin_rotate)),
            web.post(f"/admin{realm}/keys/retire-old", oauth(self._admin_retire_old)),
        ]

    def rotate(self) -> str:
        """A new signing key; the older ones stay published until retire_old()."""
        pem = new_private_pem()  # slow: outside the lock
        with self._lock:
            return self.keys.add(pem).kid

    def retire_old(self) -> None:
        with self._lock:
            self.keys.retire_old()

    def token_for(self, username: str, client_id: str = "storefront") -> dict[str, Any]:
        """What a password grant answers, without the password (tests and scripts)."""
        user = self.realm.user(username)
        if user is None:
            raise KeyError(f"no user {username!r} in realm {self.realm.name}")
        client = self.realm.clients[client_id]
        if not client.check_grant_type("password"):
            raise UnauthorizedClientError(f"{client_id} may not use the password grant")
        with self._lock:
            session = self._sessions.start(user, client)
            token = self._minter("password", client, session)
            self._sessions.keep_refresh_token(token["refresh_token"], session, token["scope"])
            return token

    # --- discovery, keys, tokens ----------------------------------------------------------------

    def _answering_oauth_errors(self, handler: Handler) -> Handler:
        """An OAuth2Error no handler answers, in OAuth 2.0's shape: Authlib's insecure_transport, raised as
        a request is read that names a plain-HTTP URL other than loopback (RFC 8252 7.3)."""

        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except OAuth2Error as error:
                return self._server.handle_error_response(None, error)

        return handle

    def _with_cors(self, handler: Handler) -> Handler:
        """Keycloak's CORS: a page on a client's web origin may read the answer (say, the storefront opened
        on localhost while the issuer is named by 127.0.0.1)."""

        async def handle(request: web.Request) -> web.StreamResponse:
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
                "id_token_signing_alg_values_supported": [ALGORITHM],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
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

    async def _token(self, http: web.Request) -> web.Response:
        request = HttpRequest(http, await http.post())
        repeated = request.payload.repeated()
        if repeated or not request.payload.grant_type:  # Authlib checks neither at the token endpoint
            why = f"Repeated parameter: {repeated}" if repeated else "Missing parameter: grant_type"
            return self._server.handle_error_response(request, InvalidRequestError(why))
        with self._lock:
            response: web.Response = self._server.create_token_response(request)
            return response

    # --- the authorization code flow's sign-in ---------------------------------------------------

    def _authorization_request(self, http: web.Request) -> CodeGrant | web.Response:
        """Authlib's grant for the request, or the answer: a page while the redirect URI is unproven, else a
        redirect back to the client with the error."""
        request = HttpRequest(http, http.query)
        try:
            with self._lock:
                grant: CodeGrant = self._server.get_consent_grant(request)
                return grant
        except OAuth2Error as error:
            if error.redirect_uri:
                return self._server.authorization_error(request, error)
            reason = error.description or error.get_error_description() or error.error
            return pages.invalid_request(reason, self.realm.display_name)

    async def _sign_in_page(self, http: web.Request) -> web.Response:
        grant = self._authorization_request(http)
        if isinstance(grant, web.Response):
            return grant
        return pages.sign_in_form(self.realm.display_name, http.path_qs, back=_site(grant))

    async def _sign_in(self, http: web.Request) -> web.Response:
        grant = self._authorization_request(http)
        if isinstance(grant, web.Response):
            return grant
        form = await http.post()
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        try:
            user = self._server.check_login(username, password)
        except OAuth2Error as error:
            name, path = self.realm.display_name, http.path_qs
            return pages.sign_in_form(name, path, error.description, username, 401, back=_site(grant))
        request: HttpRequest = grant.request
        with self._lock:
            session = self._sessions.start(user, request.client, request.payload.data.get("nonce"))
            response: web.Response = self._server.create_authorization_response(request, session, grant)
            return response

    # --- bearer-token endpoints: userinfo and the key admin API ---------------------------------

    def _bearer_refusal(self, http: web.Request, *, role: str | None = None) -> tuple[web.Response | None, Any]:
        """(None, the token's claims) for a valid bearer access token holding the role, else (the answer, None)."""
        request = HttpRequest(http, MultiDict())
        try:
            with self._lock:
                claims = self._server.access_token(request).claims
        except OAuth2Error as error:
            return self._server.handle_error_response(request, error), None
        if role is not None and role not in (claims.get("realm_access") or {}).get("roles", []):
            body = {"error": "forbidden", "error_description": f"The {role} role is required"}
            return web.json_response(body, status=403, headers=NO_STORE), None
        return None, claims

    async def _userinfo(self, http: web.Request) -> web.Response:
        refusal, claims = self._bearer_refusal(http)
        if refusal is not None:
            return refusal
        user = self.realm.user_by_id(str(claims["sub"]))
        assert user is not None  # the validator refuses tokens of users the realm no longer has
        return web.json_response({"sub": user.id, **user_claims(user, str(claims.get("scope", "")))})

    def _key_listing(self, status: int = 200) -> web.Response:
        current = self.keys.current
        keys = [
            {
                "kid": key.kid,
                "type": "RSA",
                "algorithm": ALGORITHM,
                "use": "SIG",
                "status": "ACTIVE" if key is current else "PASSIVE",
            }
            for key in self.keys.keys
        ]
        return web.json_response({"active": {ALGORITHM: current.kid}, "keys": keys}, status=status, headers=NO_STORE)

    async def _admin_keys(self, http: web.Request) -> web.Response:
        refusal, _ = self._bearer_refusal(http, role="admin")
        return refusal or self._key_listing()

    async def _admin_rotate(self, http: web.Request) -> web.Response:
        refusal, _ = self._bearer_refusal(http, role="admin")
        if refusal is not None:
            return refusal
        await asyncio.to_thread(self.rotate)  # generating an RSA key takes a while: off the event loop
        return self._key_listing(201)

    async def _admin_retire_old(self, http: web.Request) -> web.Response:
        refusal, _ = self._bearer_refusal(http, role="admin")
        if refusal is not None:
            return refusal
        self.retire_old()
        return self._key_listing()

    # --- logout ----------------------------------------------------------------------------------

    async def _logout(self, http: web.Request) -> web.Response:
        parameters: MultiDict[Any] = MultiDict(http.query)
        if http.method == "POST":
            parameters.extend((await http.post()).items())
        request = HttpRequest(http, parameters)
        if request.payload.repeated():
            return pages.invalid_request(f"Repeated parameter: {request.payload.repeated()}", self.realm.display_name)
        try:
            with self._lock:
                logout = self._server.validate_endpoint_request("end_session", request)
        except OAuth2Error as error:
            return pages.invalid_request(error.description or error.error, self.realm.display_name)
        if request.payload.data.get("post_logout_redirect_uri") and logout.redirect_uri is None:
            return pages.invalid_request("Invalid parameter: post_logout_redirect_uri", self.realm.display_name)
        with self._lock:
            response: web.Response | None = self._server.create_endpoint_response("end_session", logout)
        return response or pages.page("You are logged out", realm=self.realm.display_name)


def _site(grant: CodeGrant) -> str:
    """The client's site: the origin of the redirect URI its authorization request names."""
    parts = urlsplit(grant.request.payload.redirect_uri or "")
    return f"{parts.scheme}://{parts.netloc}/"
