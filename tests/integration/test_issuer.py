"""The local OIDC issuer over real HTTP: Keycloak's endpoints, grants, PKCE, key rotation, all from the realm file."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from aiohttp import web
from jose import jwt
from jose.exceptions import JWTError

from local.identity import Issuer

REALM_FILE = Path(__file__).resolve().parents[2] / "knative" / "keycloak" / "realm-shop.json"
REALM = json.loads(REALM_FILE.read_text(encoding="utf-8"))
CALLBACK = "http://127.0.0.1:8080/callback"  # under the storefront's registered http://127.0.0.1:8080/*


def realm_client(client_id: str) -> dict[str, Any]:
    return next(c for c in REALM["clients"] if c["clientId"] == client_id)


def realm_user(username: str) -> dict[str, Any]:
    return next(u for u in REALM["users"] if u["username"] == username)


SERVICES_SECRET = realm_client("shop-services")["secret"]


class Clock:
    """A clock the tests move forward; it starts at the real time so tokens verify as usual."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Served:
    """An Issuer on a real aiohttp server (its own event loop, in a thread) on a free port."""

    def __init__(self, realm_file: Path, data_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.issuer = Issuer(realm_file, data_dir, self.url, clock=clock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="issuer", daemon=True)
        self._runner: web.AppRunner | None = None

    async def _start(self) -> None:
        app = web.Application()
        app.add_routes(self.issuer.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def endpoint(self, name: str) -> str:
        return f"{self.url}/realms/shop/protocol/openid-connect/{name}"

    def token(self, basic: tuple[str, str] | None = None, **form: str) -> requests.Response:
        """A token request: form fields, and client credentials in HTTP Basic when given."""
        return requests.post(self.endpoint("token"), data=form, auth=basic, timeout=10)

    def password(self, username: str = "jane", password: str = "", **form: str) -> dict[str, Any]:
        response = self.token(
            grant_type="password",
            client_id="storefront",
            username=username,
            password=password or str(realm_user(username)["credentials"][0]["value"]),
            **form,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def jwks(self) -> dict[str, Any]:
        response = requests.get(self.endpoint("certs"), timeout=10)
        assert response.status_code == 200
        return dict(response.json())

    def verify(self, token: str, audience: str = "shop-api", access_token: str | None = None) -> dict[str, Any]:
        """What a relying party does: the key named by `kid` from the JWKS, then signature, iss, aud, exp."""
        kid = jwt.get_unverified_header(token)["kid"]
        key = next((k for k in self.jwks()["keys"] if k["kid"] == kid), None)
        if key is None:
            raise JWTError(f"kid {kid} is not in the JWKS")
        issuer = f"{self.url}/realms/shop"
        claims = jwt.decode(
            token, key, algorithms=["RS256"], audience=audience, issuer=issuer, access_token=access_token
        )
        return dict(claims)

    def userinfo(self, access_token: str) -> requests.Response:
        return requests.get(self.endpoint("userinfo"), headers={"Authorization": f"Bearer {access_token}"}, timeout=10)


@contextmanager
def serve(realm_file: Path, data_dir: Path, clock: Callable[[], float] = time.time) -> Iterator[Served]:
    served = Served(realm_file, data_dir, clock)
    served.start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(tmp_path: Path, clock: Clock) -> Iterator[Served]:
    with serve(REALM_FILE, tmp_path / "issuer", clock) as served:
        yield served


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorization(challenge: str | None, redirect_uri: str = CALLBACK, **extra: str) -> dict[str, str]:
    params = {"response_type": "code", "client_id": "storefront", "redirect_uri": redirect_uri, "state": "st-42"}
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    return params | extra


def sign_in(server: Served, params: dict[str, str], username: str = "jane", password: str = "jane-password") -> str:
    """The browser's part: the login page, the credentials, the redirect back; returns the code."""
    page = requests.get(server.endpoint("auth"), params=params, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'name="username"' in page.text and 'type="password"' in page.text
    answer = requests.post(
        page.url, data={"username": username, "password": password}, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == params["redirect_uri"]
    query = parse_qs(location.query)
    assert query["state"] == [params["state"]] and query["iss"] == [server.issuer.issuer]
    return query["code"][0]


def exchange(server: Served, code: str, verifier: str, redirect_uri: str = CALLBACK) -> requests.Response:
    return server.token(
        grant_type="authorization_code",
        client_id="storefront",
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=verifier,
    )


def oauth_error(response: requests.Response, status: int, error: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error and body["error_description"], body
    return str(body["error_description"])


# --- discovery and keys ---------------------------------------------------------------------------


def test_discovery_names_keycloaks_endpoints_under_the_realm(server: Served) -> None:
    response = requests.get(f"{server.url}/realms/shop/.well-known/openid-configuration", timeout=10)
    assert response.status_code == 200
    document = response.json()
    issuer = f"{server.url}/realms/shop"
    assert document["issuer"] == issuer == server.issuer.issuer
    for field, name in [
        ("authorization_endpoint", "auth"),
        ("token_endpoint", "token"),
        ("jwks_uri", "certs"),
        ("userinfo_endpoint", "userinfo"),
        ("end_session_endpoint", "logout"),
    ]:
        assert document[field] == f"{issuer}/protocol/openid-connect/{name}"
    assert set(document["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "password",
        "client_credentials",
    }
    assert document["response_types_supported"] == ["code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"openid", "profile", "email"} <= set(document["scopes_supported"])
    assert requests.get(document["jwks_uri"], timeout=10).json() == server.jwks()


def test_jwks_publishes_public_rsa_signing_keys_only(server: Served) -> None:
    (key,) = server.jwks()["keys"]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256" and key["kid"]
    assert key["e"] == "AQAB"
    modulus = base64.urlsafe_b64decode(key["n"] + "=" * (-len(key["n"]) % 4))
    assert len(modulus) * 8 == 2048
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


# --- password grant -------------------------------------------------------------------------------


def test_password_grant_gives_a_keycloak_shaped_token_that_verifies_against_the_jwks(server: Served) -> None:
    body = server.password("jane")
    assert body["token_type"] == "Bearer" and body["expires_in"] == REALM["accessTokenLifespan"]
    assert body["refresh_expires_in"] == REALM["ssoSessionIdleTimeout"] and body["refresh_token"]
    assert "id_token" not in body  # no openid scope asked for
    claims = server.verify(body["access_token"])
    jane = realm_user("jane")
    assert claims["iss"] == f"{server.url}/realms/shop"
    assert claims["aud"] == ["shop-api", "account"]
    assert claims["azp"] == "storefront" and claims["typ"] == "Bearer"
    assert claims["sub"] == jane["id"] and claims["sid"] == body["session_state"]
    assert claims["exp"] - claims["iat"] == REALM["accessTokenLifespan"]
    assert claims["preferred_username"] == "jane" and claims["email"] == "jane@example.com"
    assert claims["email_verified"] is True
    assert (claims["given_name"], claims["family_name"], claims["name"]) == ("Jane", "Doe", "Jane Doe")
    assert "customer" in claims["realm_access"]["roles"] and "admin" not in claims["realm_access"]["roles"]
    assert claims["resource_access"]["account"]["roles"]  # what gives the `account` audience
    assert claims["scope"] == "profile email" and claims["jti"]
    assert body["scope"] == claims["scope"]


def test_admin_holds_admin_and_customer(server: Served) -> None:
    claims = server.verify(server.password("admin")["access_token"])
    assert {"admin", "customer"} <= set(claims["realm_access"]["roles"])
    assert (claims["given_name"], claims["family_name"]) == ("Ada", "Admin")


def test_openid_scope_adds_an_id_token_for_the_client(server: Served) -> None:
    body = server.password("john", scope="openid")
    id_claims = server.verify(body["id_token"], audience="storefront", access_token=body["access_token"])
    assert id_claims["typ"] == "ID" and id_claims["azp"] == "storefront"
    assert id_claims["sub"] == realm_user("john")["id"] and id_claims["email"] == "john@example.com"
    assert server.verify(body["access_token"])["scope"] == "openid profile email"


def test_a_wrong_password_or_unknown_user_is_401_invalid_grant(server: Served) -> None:
    wrong = server.token(grant_type="password", client_id="storefront", username="jane", password="john-password")
    assert oauth_error(wrong, 401, "invalid_grant") == "Invalid user credentials"
    nobody = server.token(grant_type="password", client_id="storefront", username="mallory", password="x")
    assert oauth_error(nobody, 401, "invalid_grant") == "Invalid user credentials"
    assert wrong.headers["Cache-Control"] == "no-store"


def test_the_token_endpoint_refuses_malformed_and_unauthorized_requests(server: Served) -> None:
    oauth_error(server.token(client_id="storefront"), 400, "invalid_request")
    oauth_error(server.token(grant_type="implicit", client_id="storefront"), 400, "unsupported_grant_type")
    # RFC 6749 5.2: 401 is for a client that tried HTTP authentication; a client named in the form gets 400.
    oauth_error(server.token(grant_type="password", client_id="nobody"), 400, "invalid_client")
    no_credentials = server.token(grant_type="password", client_id="storefront", scope="superpowers")
    assert "username" in oauth_error(no_credentials, 400, "invalid_request")
    unknown_scope = server.token(
        grant_type="password", client_id="storefront", username="jane", password="jane-password", scope="superpowers"
    )
    oauth_error(unknown_scope, 400, "invalid_scope")
    # shop-services has no direct access grants in the realm file
    services = server.token(
        grant_type="password",
        client_id="shop-services",
        client_secret=SERVICES_SECRET,
        username="jane",
        password="jane-password",
    )
    oauth_error(services, 400, "unauthorized_client")
    twice = requests.post(
        server.endpoint("token"), data=[("grant_type", "password"), ("grant_type", "password")], timeout=10
    )
    oauth_error(twice, 400, "invalid_request")


# --- client credentials ---------------------------------------------------------------------------


def test_client_credentials_with_the_secret_gives_the_service_account_token(server: Served) -> None:
    response = server.token(grant_type="client_credentials", client_id="shop-services", client_secret=SERVICES_SECRET)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body and body["refresh_expires_in"] == 0
    claims = server.verify(body["access_token"])
    account = realm_user("service-account-shop-services")
    assert claims["sub"] == account["id"] and claims["preferred_username"] == "service-account-shop-services"
    assert claims["azp"] == "shop-services" and claims["client_id"] == "shop-services"
    assert "admin" in claims["realm_access"]["roles"] and "shop-api" in claims["aud"]
    assert "sid" not in claims

    basic = server.token(grant_type="client_credentials", basic=("shop-services", SERVICES_SECRET))
    assert basic.status_code == 200, basic.text
    assert server.verify(basic.json()["access_token"])["sub"] == account["id"]


def test_client_credentials_with_a_wrong_secret_is_401_invalid_client(server: Served) -> None:
    wrong = server.token(grant_type="client_credentials", client_id="shop-services", client_secret="guess")
    oauth_error(wrong, 401, "invalid_client")
    missing = server.token(grant_type="client_credentials", client_id="shop-services")
    oauth_error(missing, 401, "invalid_client")
    basic = server.token(grant_type="client_credentials", basic=("shop-services", "guess"))
    oauth_error(basic, 401, "invalid_client")
    assert basic.headers["WWW-Authenticate"].startswith("Basic")
    public = server.token(grant_type="client_credentials", client_id="storefront")
    oauth_error(public, 400, "unauthorized_client")


# --- refresh tokens -------------------------------------------------------------------------------


def test_a_refresh_token_works_once_and_rotates(server: Served) -> None:
    first = server.password("jane")
    second = server.token(grant_type="refresh_token", client_id="storefront", refresh_token=first["refresh_token"])
    assert second.status_code == 200, second.text
    renewed = second.json()
    assert renewed["refresh_token"] != first["refresh_token"]
    before, after = server.verify(first["access_token"]), server.verify(renewed["access_token"])
    assert after["sid"] == before["sid"] and after["sub"] == before["sub"] and after["jti"] != before["jti"]

    again = server.token(grant_type="refresh_token", client_id="storefront", refresh_token=first["refresh_token"])
    oauth_error(again, 400, "invalid_grant")
    third = server.token(grant_type="refresh_token", client_id="storefront", refresh_token=renewed["refresh_token"])
    assert third.status_code == 200, third.text
    other_client = server.token(
        grant_type="refresh_token",
        client_id="shop-services",
        client_secret=SERVICES_SECRET,
        refresh_token=third.json()["refresh_token"],
    )
    oauth_error(other_client, 400, "unauthorized_client")  # shop-services has no refresh tokens at all


def test_a_refresh_token_expires_after_the_realms_session_idle_timeout(server: Served, clock: Clock) -> None:
    body = server.password("john")
    clock.now += REALM["ssoSessionIdleTimeout"] + 1
    late = server.token(grant_type="refresh_token", client_id="storefront", refresh_token=body["refresh_token"])
    oauth_error(late, 400, "invalid_grant")


# --- authorization code with PKCE -----------------------------------------------------------------


def test_authorization_code_with_pkce_end_to_end(server: Served) -> None:
    verifier, challenge = pkce()
    code = sign_in(server, authorization(challenge, scope="openid", nonce="n-0S6"))
    response = exchange(server, code, verifier)
    assert response.status_code == 200, response.text
    body = response.json()
    claims = server.verify(body["access_token"])
    assert claims["sub"] == realm_user("jane")["id"] and claims["azp"] == "storefront"
    assert "customer" in claims["realm_access"]["roles"]
    id_claims = server.verify(body["id_token"], audience="storefront", access_token=body["access_token"])
    assert id_claims["nonce"] == "n-0S6" and id_claims["sid"] == claims["sid"]

    reused = exchange(server, code, verifier)
    oauth_error(reused, 400, "invalid_grant")
    # RFC 6749 4.1.2: a code used twice revokes the tokens it gave.
    revoked = server.token(grant_type="refresh_token", client_id="storefront", refresh_token=body["refresh_token"])
    oauth_error(revoked, 400, "invalid_grant")


def test_wrong_verifier_or_redirect_uri_is_invalid_grant_missing_verifier_invalid_request(server: Served) -> None:
    verifier, challenge = pkce()
    code = sign_in(server, authorization(challenge))
    other_verifier, _ = pkce()
    oauth_error(exchange(server, code, other_verifier), 400, "invalid_grant")  # RFC 7636 4.6
    oauth_error(exchange(server, code, verifier), 400, "invalid_grant")  # the failed try spent the code

    code = sign_in(server, authorization(challenge))
    elsewhere = exchange(server, code, verifier, redirect_uri="http://localhost:8080/callback")
    assert "redirect_uri" in oauth_error(elsewhere, 400, "invalid_grant")

    code = sign_in(server, authorization(challenge))
    no_verifier = server.token(
        grant_type="authorization_code", client_id="storefront", code=code, redirect_uri=CALLBACK
    )
    assert "code_verifier" in oauth_error(no_verifier, 400, "invalid_request")


def test_a_code_lives_for_the_realms_access_code_lifespan(server: Served, clock: Clock) -> None:
    verifier, challenge = pkce()
    code = sign_in(server, authorization(challenge))
    clock.now += REALM["accessCodeLifespan"] + 1
    assert "expired" in oauth_error(exchange(server, code, verifier), 400, "invalid_grant")


def test_a_wrong_password_shows_the_form_again_with_401(server: Served) -> None:
    _, challenge = pkce()
    page = requests.get(server.endpoint("auth"), params=authorization(challenge), timeout=10)
    wrong = requests.post(page.url, data={"username": "jane", "password": "nope"}, allow_redirects=False, timeout=10)
    assert wrong.status_code == 401 and "Location" not in wrong.headers
    assert "Invalid user credentials" in wrong.text and 'name="password"' in wrong.text
    assert 'value="jane"' in wrong.text


def test_an_unregistered_redirect_uri_is_400_before_any_login(server: Served) -> None:
    _, challenge = pkce()
    for redirect_uri in (
        "https://evil.example/callback",
        "http://127.0.0.1:8080.evil.example/callback",
        "http://127.0.0.1:8080@evil.example/callback",
        "https://shop.example/callback#fragment",
    ):
        params = authorization(challenge, redirect_uri=redirect_uri)
        page = requests.get(server.endpoint("auth"), params=params, allow_redirects=False, timeout=10)
        assert page.status_code == 400 and "Location" not in page.headers and "<form" not in page.text
        credentials = {"username": "jane", "password": "jane-password"}
        posted = requests.post(
            server.endpoint("auth"), params=params, data=credentials, allow_redirects=False, timeout=10
        )
        assert posted.status_code == 400 and "Location" not in posted.headers
    unknown = requests.get(server.endpoint("auth"), params={**authorization(challenge), "client_id": "x"}, timeout=10)
    assert unknown.status_code == 400


def test_storefront_requires_pkce_s256(server: Served) -> None:
    for params in (
        authorization(None),
        {**authorization("a" * 43), "code_challenge_method": "plain"},
        {**authorization(None), "response_type": "token"},
    ):
        answer = requests.get(server.endpoint("auth"), params=params, allow_redirects=False, timeout=10)
        assert answer.status_code == 302
        location = urlsplit(answer.headers["Location"])
        assert location.netloc == "127.0.0.1:8080"  # the error goes back to the (registered) client
        query = parse_qs(location.query)
        assert query["error"][0] in {"invalid_request", "unsupported_response_type"} and "code" not in query
        assert query["state"] == ["st-42"]


def test_fragment_response_mode_returns_the_code_in_the_fragment(server: Served) -> None:
    verifier, challenge = pkce()
    page = requests.get(server.endpoint("auth"), params=authorization(challenge, response_mode="fragment"), timeout=10)
    answer = requests.post(
        page.url, data={"username": "john", "password": "john-password"}, allow_redirects=False, timeout=10
    )
    location = urlsplit(answer.headers["Location"])
    assert answer.status_code == 302 and not location.query
    code = parse_qs(location.fragment)["code"][0]
    assert exchange(server, code, verifier).status_code == 200


def test_pages_on_a_clients_web_origin_may_read_the_answers(server: Served) -> None:
    form = {"grant_type": "password", "client_id": "storefront", "username": "jane", "password": "jane-password"}
    allowed = requests.post(
        server.endpoint("token"), data=form, headers={"Origin": "http://localhost:8080"}, timeout=10
    )
    assert allowed.status_code == 200 and allowed.headers["Access-Control-Allow-Origin"] == "http://localhost:8080"
    foreign = requests.post(server.endpoint("token"), data=form, headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in foreign.headers
    preflight = requests.options(
        server.endpoint("userinfo"),
        headers={"Origin": "https://shop.example", "Access-Control-Request-Headers": "authorization"},
        timeout=10,
    )
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]


# --- userinfo and logout --------------------------------------------------------------------------


def test_userinfo_answers_for_a_valid_bearer_token_only(server: Served) -> None:
    body = server.password("jane", scope="openid")
    info = server.userinfo(body["access_token"])
    assert info.status_code == 200, info.text
    assert info.json() == {
        "sub": realm_user("jane")["id"],
        "name": "Jane Doe",
        "given_name": "Jane",
        "family_name": "Doe",
        "preferred_username": "jane",
        "email_verified": True,
        "email": "jane@example.com",
    }
    missing = requests.get(server.endpoint("userinfo"), timeout=10)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].lower().startswith("bearer")
    assert server.userinfo("not.a.token").status_code == 401
    assert server.userinfo(body["id_token"]).status_code == 401  # an ID token is no access token


def test_logout_ends_the_session_and_returns_to_an_allowed_uri(server: Served) -> None:
    body = server.password("jane", scope="openid")
    refused = requests.get(
        server.endpoint("logout"),
        params={"id_token_hint": body["id_token"], "post_logout_redirect_uri": "https://evil.example/"},
        allow_redirects=False,
        timeout=10,
    )
    assert refused.status_code == 400 and "Location" not in refused.headers
    not_an_id_token = requests.get(
        server.endpoint("logout"),
        params={"id_token_hint": body["access_token"], "post_logout_redirect_uri": "http://localhost:8080/goodbye"},
        allow_redirects=False,
        timeout=10,
    )
    assert not_an_id_token.status_code == 400 and "Location" not in not_an_id_token.headers

    answer = requests.get(
        server.endpoint("logout"),
        params={
            "id_token_hint": body["id_token"],
            "post_logout_redirect_uri": "http://localhost:8080/goodbye",
            "state": "bye-1",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302
    assert answer.headers["Location"] == "http://localhost:8080/goodbye?state=bye-1"
    after = server.token(grant_type="refresh_token", client_id="storefront", refresh_token=body["refresh_token"])
    oauth_error(after, 400, "invalid_grant")
    assert server.userinfo(body["access_token"]).status_code == 401


# --- keys: rotation and restarts ------------------------------------------------------------------


def test_rotation_signs_with_the_new_key_and_publishes_both_until_the_old_is_retired(
    server: Served, tmp_path: Path
) -> None:
    old = server.password("jane")["access_token"]
    old_kid = jwt.get_unverified_header(old)["kid"]
    new_kid = server.issuer.rotate()
    assert new_kid != old_kid
    new = server.password("jane")["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    assert {k["kid"] for k in server.jwks()["keys"]} == {old_kid, new_kid}
    server.verify(old)
    server.verify(new)

    server.issuer.retire_old()
    assert {k["kid"] for k in server.jwks()["keys"]} == {new_kid}
    with pytest.raises(JWTError):
        server.verify(old)
    assert server.userinfo(old).status_code == 401
    assert server.userinfo(new).status_code == 200
    assert len(list((tmp_path / "issuer").glob("*.pem"))) == 1


def test_admins_rotate_and_retire_keys_over_http_and_nobody_else_can(server: Served) -> None:
    keys = f"{server.url}/admin/realms/shop/keys"
    admin = server.password("admin")["access_token"]
    old_kid = jwt.get_unverified_header(admin)["kid"]
    listing = requests.get(keys, headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    assert listing.status_code == 200, listing.text
    assert listing.json() == {
        "active": {"RS256": old_kid},
        "keys": [{"kid": old_kid, "type": "RSA", "algorithm": "RS256", "use": "SIG", "status": "ACTIVE"}],
    }

    customer = server.password("jane")["access_token"]
    for token, status in ((None, 401), ("not.a.token", 401), (customer, 403)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for method, url in (("GET", keys), ("POST", f"{keys}/rotate"), ("POST", f"{keys}/retire-old")):
            answer = requests.request(method, url, headers=headers, timeout=10)
            assert answer.status_code == status, (token, url, answer.text)
    assert [k["kid"] for k in server.jwks()["keys"]] == [old_kid]

    # The shop's service account holds the admin role too (client credentials, as a script would).
    service = server.token(("shop-services", SERVICES_SECRET), grant_type="client_credentials").json()
    rotated = requests.post(
        f"{keys}/rotate", headers={"Authorization": f"Bearer {service['access_token']}"}, timeout=30
    )
    assert rotated.status_code == 201, rotated.text
    new_kid = rotated.json()["active"]["RS256"]
    assert new_kid != old_kid
    assert {k["kid"]: k["status"] for k in rotated.json()["keys"]} == {old_kid: "PASSIVE", new_kid: "ACTIVE"}
    assert {k["kid"] for k in server.jwks()["keys"]} == {old_kid, new_kid}
    assert jwt.get_unverified_header(server.password("jane")["access_token"])["kid"] == new_kid

    retired = requests.post(f"{keys}/retire-old", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    assert retired.status_code == 200, retired.text
    assert retired.json()["keys"] == [
        {"kid": new_kid, "type": "RSA", "algorithm": "RS256", "use": "SIG", "status": "ACTIVE"}
    ]
    assert [k["kid"] for k in server.jwks()["keys"]] == [new_kid]
    # The admin's own token was signed with the retired key: it opens nothing any more.
    assert requests.get(keys, headers={"Authorization": f"Bearer {admin}"}, timeout=10).status_code == 401


def test_a_restart_on_the_same_data_folder_still_verifies_earlier_tokens(tmp_path: Path) -> None:
    with serve(REALM_FILE, tmp_path / "keys") as first:
        earlier = first.password("admin")["access_token"]
        kid = jwt.get_unverified_header(earlier)["kid"]
    with serve(REALM_FILE, tmp_path / "keys") as second:
        assert [k["kid"] for k in second.jwks()["keys"]] == [kid]
        claims = jwt.decode(
            earlier, second.jwks(), algorithms=["RS256"], audience="shop-api", issuer=first.issuer.issuer
        )
        assert claims["preferred_username"] == "admin"
    with serve(REALM_FILE, tmp_path / "other-keys") as elsewhere:
        assert [k["kid"] for k in elsewhere.jwks()["keys"]] != [kid]


# --- the realm file is the only source ------------------------------------------------------------


def test_users_roles_and_lifespans_come_from_the_realm_file(tmp_path: Path) -> None:
    realm = json.loads(REALM_FILE.read_text(encoding="utf-8"))
    realm["accessTokenLifespan"] = 120
    realm["roles"]["realm"].append({"name": "auditor", "description": "Reads everything, changes nothing"})
    person = {"enabled": True, "emailVerified": False, "requiredActions": []}
    realm["users"] += [
        {
            **person,
            "username": "zoe",
            "email": "zoe@example.com",
            "firstName": "Zoe",
            "lastName": "Quinn",
            "credentials": [{"type": "password", "value": "zoe-password", "temporary": False}],
            "realmRoles": ["auditor"],
        },
        {
            **person,
            "username": "newbie",
            "credentials": [{"type": "password", "value": "newbie-password", "temporary": True}],
        },
        {**person, "username": "gone", "enabled": False, "credentials": [{"type": "password", "value": "gone-pw"}]},
    ]
    copy = tmp_path / "realm-copy.json"
    copy.write_text(json.dumps(realm), encoding="utf-8")

    with serve(copy, tmp_path / "keys") as server:
        body = server.password("zoe@example.com", password="zoe-password")  # login with email is on in the realm
        claims = server.verify(body["access_token"])
        assert claims["realm_access"]["roles"] == ["auditor"] and "resource_access" not in claims
        assert claims["aud"] == "shop-api"  # one audience: no account roles without the default role
        assert claims["exp"] - claims["iat"] == 120 and body["expires_in"] == 120
        assert (claims["preferred_username"], claims["email_verified"], claims["name"]) == ("zoe", False, "Zoe Quinn")
        assert str(uuid.UUID(claims["sub"])) == claims["sub"]
        jane = server.verify(server.password("jane")["access_token"])
        assert jane["sub"] == realm_user("jane")["id"]  # nothing else changed

        temporary = server.token(
            grant_type="password", client_id="storefront", username="newbie", password="newbie-password"
        )
        assert oauth_error(temporary, 400, "invalid_grant") == "Account is not fully set up"
        disabled = server.token(grant_type="password", client_id="storefront", username="gone", password="gone-pw")
        assert oauth_error(disabled, 400, "invalid_grant") == "Account disabled"
    # The same user gets the same subject from another issuer reading the same file.
    again = Issuer(copy, tmp_path / "keys", "http://127.0.0.1:1").token_for("zoe")
    assert jwt.get_unverified_claims(again["access_token"])["sub"] == claims["sub"]


def test_token_for_gives_what_a_password_grant_gives(server: Served) -> None:
    claims = server.verify(server.issuer.token_for("admin")["access_token"])
    granted = server.verify(server.password("admin")["access_token"])
    for name in ("iss", "aud", "azp", "sub", "typ", "realm_access", "resource_access", "scope", "email", "name"):
        assert claims[name] == granted[name], name
    with pytest.raises(KeyError):
        server.issuer.token_for("mallory")


def test_the_realm_file_declares_what_keycloak_must_import() -> None:
    assert REALM["realm"] == "shop" and REALM["enabled"] is True
    assert {"customer", "admin"} <= {r["name"] for r in REALM["roles"]["realm"]}
    default_role = next(r for r in REALM["roles"]["realm"] if r["name"] == REALM["defaultRole"]["name"])
    assert "customer" in default_role["composites"]["realm"]
    assert (REALM["accessTokenLifespan"], REALM["ssoSessionIdleTimeout"]) == (300, 1800)
    storefront, services = realm_client("storefront"), realm_client("shop-services")
    assert storefront["publicClient"] is True and storefront["standardFlowEnabled"] is True
    assert storefront["directAccessGrantsEnabled"] is True
    assert storefront["attributes"]["pkce.code.challenge.method"] == "S256"
    assert set(storefront["redirectUris"]) == {
        "http://127.0.0.1:8080/*",
        "http://localhost:8080/*",
        "https://shop.example/*",
    }
    assert services["publicClient"] is False and services["serviceAccountsEnabled"] is True
    for client in (storefront, services):
        (mapper,) = client["protocolMappers"]
        assert mapper["protocolMapper"] == "oidc-audience-mapper"
        assert mapper["config"]["included.custom.audience"] == "shop-api"
    assert "admin" in realm_user("service-account-shop-services")["realmRoles"]
    for username in ("jane", "john", "admin"):
        user = realm_user(username)
        assert user["enabled"] and user["emailVerified"]
        assert user["credentials"] == [{"type": "password", "value": f"{username}-password", "temporary": False}]
