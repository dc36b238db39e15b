"""OAuth 2.0 and OpenID Connect on Authlib: an aiohttp adapter, the realm's grants, bearer checks and logout.

Authlib decides the protocol: client authentication (none, client_secret_basic, client_secret_post), the
authorization code, password, client credentials and refresh token grants, PKCE (RFC 7636), redirect URI
and scope checks through the realm's clients (its ClientMixin), the `iss` of RFC 9207, bearer tokens
(RFC 6750), RP-initiated logout, and refusing plain HTTP other than loopback.

What stays ours, and why: Authlib integrates with Flask and Django, not aiohttp, so the adapter is here
(`HttpRequest` carries the parameters read beforehand, as Authlib's calls are synchronous;
`handle_response` makes the aiohttp answer). Its code grant answers in the query only, so
`response_mode=fragment` is added here, as are Keycloak's `session_state`, `prompt=none` answered with
login_required (no single sign-on session), PKCE required before the sign-in (Authlib's `required` only asks
public clients for a verifier at the token endpoint) and S256 only, and Keycloak's wildcards in post-logout
redirect URIs (Authlib compares exactly). Its UserInfoEndpoint takes the token from a framework's request
and insists on the openid scope, which Keycloak's userinfo does not; ours uses its bearer-token check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    ResourceProtector,
    grants,
)
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core.errors import LoginRequiredError
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from multidict import MultiMapping

from local.identity.keys import ALGORITHM, KeyRing
from local.identity.pages import NO_STORE
from local.identity.realm import Client, Realm, User, allowed_uri
from local.identity.sessions import AccessToken, AuthorizationCode, RefreshToken, Session, Sessions

# Every grant takes a public client by its id and a confidential one by its secret, in Basic or the form.
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


class Parameters(OAuth2Payload):
    """A request's query or form parameters, as Authlib reads them."""

    def __init__(self, values: MultiMapping[Any]) -> None:
        self._lists = {key: [v for v in values.getall(key) if isinstance(v, str)] for key in values}

    @property
    def data(self) -> dict[str, str]:
        return {key: values[0] for key, values in self._lists.items() if values}

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._lists

    def repeated(self) -> str | None:
        """A parameter given more than once, which RFC 6749 (3.1, 3.2) forbids."""
        return next((key for key, values in self._lists.items() if len(values) > 1), None)


class HttpRequest(OAuth2Request):
    """An aiohttp request as Authlib's OAuth2Request, with the parameters the endpoint reads."""

    def __init__(self, request: web.Request, parameters: MultiMapping[Any]) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self.payload: Parameters = Parameters(parameters)

    @property
    def args(self) -> dict[str, str]:
        return self.payload.data

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data


class OAuth2Response(web.Response):
    """An aiohttp response with the `location` attribute Authlib's RFC 9207 extension reads and sets."""

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    @location.setter
    def location(self, value: str) -> None:
        self.headers["Location"] = value


class IssuerInRedirects(IssuerParameter):
    """RFC 9207: `iss` in every answer sent back to a client's redirect URI, in the fragment when the rest is."""

    def __init__(self, issuer: Callable[[], str]) -> None:
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer()

    def add_issuer_parameter(self, authorization_server: AuthorizationServer, response: OAuth2Response) -> None:
        if response.location and urlsplit(response.location).fragment:  # Authlib's adds it to the query
            response.location = add_params_to_uri(response.location, {"iss": self.issuer()}, fragment=True)
        else:
            super().add_issuer_parameter(authorization_server, response)


class RealmServer(AuthorizationServer):
    """Authlib's authorization server over the realm file, the key ring and the sessions in memory."""

    def __init__(
        self,
        realm: Realm,
        keys: KeyRing,
        sessions: Sessions,
        token_generator: Callable[..., dict[str, Any]],
        issuer: Callable[[], str],
    ) -> None:
        super().__init__()
        self.realm, self.keys, self.sessions, self.issuer = realm, keys, sessions, issuer
        self.register_token_generator("default", token_generator)
        self.register_grant(CodeGrant, [RealmPkce(required=True)])
        self.register_grant(PasswordGrant)
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(RefreshGrant)
        self.register_endpoint(EndSession)
        self.register_extension(IssuerInRedirects(issuer))
        self.bearer = ResourceProtector()
        self.bearer.register_token_validator(AccessTokenValidator(self))

    def query_client(self, client_id: str) -> Client | None:
        return self.realm.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: HttpRequest) -> None:
        if "refresh_token" in token:
            self.sessions.keep_refresh_token(token["refresh_token"], request.user, token["scope"])

    def create_oauth2_request(self, request: HttpRequest) -> HttpRequest:
        return request  # the handler built it, having read the body

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> OAuth2Response:
        content = json.dumps(body) if isinstance(body, dict) else str(body)
        return OAuth2Response(status=status, body=content.encode(), headers={**NO_STORE, **dict(headers)})

    def handle_error_response(self, request: HttpRequest | None, error: OAuth2Error) -> OAuth2Response:
        """Authlib's, with an error_description always, and in the fragment when the client asked for that."""
        if not error.description:
            error.description = error.get_error_description() or error.error.replace("_", " ").capitalize()
        if request is not None and request.payload.data.get("response_mode") == "fragment":
            error.redirect_fragment = True
        response: OAuth2Response = super().handle_error_response(request, error)
        return response

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Authlib's framework signals: nothing listens to them here."""

    def authorization_error(self, request: HttpRequest, error: OAuth2Error) -> OAuth2Response:
        """An error found before the sign-in, sent back to the client's (verified) redirect URI with `iss`."""
        response = self.handle_error_response(request, error)
        self.execute_hook("after_create_authorization_response", response)
        return response

    def check_login(self, login: str, password: str) -> User:
        user = self.realm.user(login)
        if user is None or not user.password_matches(password):
            raise InvalidGrantError("Invalid user credentials", status_code=401)
        if not user.enabled:
            raise InvalidGrantError("Account disabled")
        if not user.ready:
            raise InvalidGrantError("Account is not fully set up")
        return user

    def access_token(self, request: HttpRequest) -> AccessToken:
        """The request's valid bearer access token; OAuth2Error (401, with WWW-Authenticate) if none."""
        token: AccessToken = self.bearer.validate_request(None, request)
        return token


class ClientScopes:
    """Requested scopes checked against the client's default and optional client scopes, as Keycloak does."""

    request: HttpRequest

    def validate_requested_scope(self) -> None:
        unknown = self.request.client.unknown_scopes(self.request.payload.scope)
        if unknown:
            raise InvalidScopeError(f"Invalid scopes: {' '.join(unknown)}")


class RealmPkce(CodeChallenge):
    """RFC 7636, S256 only, required of public clients (as RFC 9700 2.1.1 has it; Authlib's `required` asks for
    their verifier) and of any client whose pkce.code.challenge.method says so, before the sign-in."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {"S256": compare_s256_code_challenge}

    def validate_code_challenge(self, grant: CodeGrant, redirect_uri: str) -> None:
        data, client = grant.request.payload.data, grant.request.client
        if (client.public or client.pkce_required) and not data.get("code_challenge"):
            raise InvalidRequestError("Missing parameter: code_challenge")
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Invalid parameter: code_challenge_method (S256 only)")
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(ClientScopes, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    server: RealmServer

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        data = self.request.payload.data
        if data.get("response_mode", "query") not in ("query", "fragment"):
            raise InvalidRequestError("Invalid parameter: response_mode", redirect_uri=redirect_uri)
        if data.get("prompt") == "none":  # no single sign-on session here to reuse silently
            raise LoginRequiredError("No session", redirect_uri=redirect_uri)
        return redirect_uri

    def create_authorization_response(self, redirect_uri: str, grant_user: Session) -> tuple[int, str, list[Any]]:
        """Authlib's, with Keycloak's session_state, in the fragment when the client asks for that."""
        self.request.user = grant_user
        code = self.generate_authorization_code()
        self.save_authorization_code(code, self.request)
        params = [("code", code), ("session_state", grant_user.sid or "")]
        if self.request.payload.state:
            params.append(("state", self.request.payload.state))
        fragment = self.request.payload.data.get("response_mode") == "fragment"
        return 302, "", [("Location", add_params_to_uri(redirect_uri, params, fragment))]

    def save_authorization_code(self, code: str, request: HttpRequest) -> None:
        data = request.payload.data
        expires = self.server.sessions.clock() + self.server.realm.code_lifespan
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        redirect_uri = request.payload.redirect_uri
        record = AuthorizationCode(code, request.user, redirect_uri, request.scope, challenge, method, expires)
        self.server.sessions.keep_code(record)

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        """The code, spent by this look-up: it works once, even when the exchange then fails (a wrong verifier)."""
        record = self.server.sessions.spend_code(code)
        if record is None or record.session.client_id != client.client_id:
            return None
        if record.expires <= self.server.sessions.clock():
            raise InvalidGrantError("Code is expired")
        return record

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Spent already, when it was looked up."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Session:
        return authorization_code.session


class PasswordGrant(ClientScopes, grants.ResourceOwnerPasswordCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    server: RealmServer

    def authenticate_user(self, username: str, password: str) -> User:
        return self.server.check_login(username, password)

    def validate_token_request(self) -> None:
        super().validate_token_request()
        self.request.user = self.server.sessions.start(self.request.user, self.request.client)


class ClientCredentialsGrant(ClientScopes, grants.ClientCredentialsGrant):
    """No user: the token generator makes the token of the client's service account."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # Keycloak's answer to a refresh holds a refresh token again
    server: RealmServer

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        return self.server.sessions.refresh_token(refresh_token)

    def authenticate_user(self, refresh_token: RefreshToken) -> Session:
        return refresh_token.session

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        if self.server.realm.revoke_refresh:  # the realm's refresh token rotation: each one works once
            self.server.sessions.revoke_refresh_token(refresh_token.token)


class AccessTokenValidator(BearerTokenValidator):
    """RFC 6750 bearer tokens: access tokens this issuer signed, with a key it still publishes."""

    def __init__(self, server: RealmServer) -> None:
        super().__init__(realm=server.realm.name)
        self.server = server

    def authenticate_token(self, token_string: str) -> AccessToken | None:
        server = self.server
        registry = JWTClaimsRegistry(
            now=int(server.sessions.clock()), iss={"essential": True, "value": server.issuer()}, exp={"essential": True}
        )
        try:
            claims = server.keys.verify(token_string)
            registry.validate(claims)
        except JoseError:
            return None
        gone = server.realm.user_by_id(str(claims.get("sub"))) is None
        return AccessToken(claims, claims.get("typ") != "Bearer" or server.sessions.ended(claims.get("sid")) or gone)


class EndSession(EndSessionEndpoint):
    """OpenID Connect RP-initiated logout, the ID token hint checked to be one of this issuer's ID tokens."""

    server: RealmServer

    def get_server_jwks(self) -> KeySet:
        return self.server.keys.published

    def get_algorithms(self) -> list[str]:
        return [ALGORITHM]

    def validate_request(self, request: HttpRequest) -> EndSessionRequest:
        validated: EndSessionRequest = super().validate_request(request)
        claims = validated.id_token_claims
        if claims is not None and (claims.get("typ") != "ID" or claims.get("iss") != self.server.issuer()):
            raise InvalidRequestError("Invalid parameter: id_token_hint")
        return validated

    def _is_valid_post_logout_redirect_uri(self, client: Client, post_logout_redirect_uri: str) -> bool:
        # Authlib's compares exactly; Keycloak's registered URIs end in `*` wildcards (the realm's "+").
        return allowed_uri(post_logout_redirect_uri, client.post_logout_uris)

    def is_post_logout_redirect_uri_legitimate(
        self, request: HttpRequest, post_logout_redirect_uri: str, client: Client, logout_hint: str | None
    ) -> bool:
        return True  # registered for the client named, as Keycloak has it: no open redirect

    def end_session(self, end_session_request: EndSessionRequest) -> None:
        self.server.sessions.end((end_session_request.id_token_claims or {}).get("sid"))
