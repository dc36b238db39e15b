"""The local issuer's protocol edges, now Authlib's to decide: RFC 9207, prompt and response modes, PKCE for
public clients, tokens bound to their client, refresh token rotation as the realm says, RP-initiated logout,
plain HTTP, and a discovery document that is valid OpenID Provider metadata."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.oidc.discovery import OpenIDProviderMetadata

from tests.integration import test_issuer
from tests.integration.test_issuer import (
    CALLBACK,
    REALM_FILE,
    Clock,
    Served,
    authorization,
    exchange,
    oauth_error,
    pkce,
    serve,
    sign_in,
)

clock, server = test_issuer.clock, test_issuer.server  # the same fixtures: an issuer with a clock tests move

# A second public client, like a kiosk app: direct grants and the code flow, no PKCE attribute of its own.
KIOSK = {
    "clientId": "kiosk",
    "enabled": True,
    "publicClient": True,
    "standardFlowEnabled": True,
    "directAccessGrantsEnabled": True,
    "redirectUris": ["http://127.0.0.1:8080/*"],
}


@pytest.fixture
def realm_with(tmp_path: Path) -> Callable[..., Path]:
    """A copy of the realm file with top-level fields changed, and more clients."""

    def write(clients: tuple[dict[str, Any], ...] = (), **fields: Any) -> Path:
        realm = json.loads(REALM_FILE.read_text(encoding="utf-8")) | fields
        realm["clients"] = [*realm["clients"], *clients]
        copy = tmp_path / "realm-copy.json"
        copy.write_text(json.dumps(realm), encoding="utf-8")
        return copy

    return write


@pytest.fixture
def kiosk_server(realm_with: Callable[..., Path], tmp_path: Path, clock: Clock) -> Iterator[Served]:
    with serve(realm_with((KIOSK,)), tmp_path / "keys", clock) as served:
        yield served


def refresh(server: Served, token: str, client_id: str = "storefront") -> requests.Response:
    return server.token(grant_type="refresh_token", client_id=client_id, refresh_token=token)


def logout(server: Served, **params: str) -> requests.Response:
    return requests.get(server.endpoint("logout"), params=params, allow_redirects=False, timeout=10)


def redirect_of(server: Served, params: dict[str, str]) -> dict[str, list[str]]:
    """The parameters the authorization endpoint sends back to the client's redirect URI, before any sign-in."""
    answer = requests.get(server.endpoint("auth"), params=params, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == params["redirect_uri"]
    return parse_qs(location.query)


def test_the_discovery_document_is_valid_openid_provider_metadata(server: Served) -> None:
    document = requests.get(f"{server.url}/realms/shop/.well-known/openid-configuration", timeout=10).json()
    OpenIDProviderMetadata(document).validate()  # OpenID Connect Discovery 1.0 and RFC 8414, by Authlib
    assert document["authorization_response_iss_parameter_supported"] is True


def test_errors_sent_back_to_the_client_name_the_issuer_and_keep_the_state(server: Served) -> None:
    _, challenge = pkce()
    query = redirect_of(server, authorization(challenge, scope="superpowers"))
    assert query["error"] == ["invalid_scope"] and query["error_description"] and query["state"] == ["st-42"]
    assert query["iss"] == [server.issuer.issuer]  # RFC 9207: the client can tell which issuer answered


def test_prompt_none_is_answered_login_required_as_there_is_no_single_sign_on_session(server: Served) -> None:
    _, challenge = pkce()
    query = redirect_of(server, authorization(challenge, prompt="none"))
    assert query["error"] == ["login_required"] and "code" not in query


def test_only_the_query_and_fragment_response_modes_are_served(server: Served) -> None:
    _, challenge = pkce()
    query = redirect_of(server, authorization(challenge, response_mode="form_post"))
    assert query["error"] == ["invalid_request"] and "response_mode" in query["error_description"][0]

    fragment = requests.get(
        server.endpoint("auth"),
        params=authorization(challenge, response_mode="fragment", prompt="none"),
        allow_redirects=False,
        timeout=10,
    )
    location = urlsplit(fragment.headers["Location"])
    errors = parse_qs(location.fragment)
    assert not location.query and errors["error"] == ["login_required"]
    assert errors["iss"] == [server.issuer.issuer] and errors["state"] == ["st-42"]


def test_a_challenge_must_say_s256(server: Served) -> None:
    _, challenge = pkce()
    params = authorization(challenge)
    del params["code_challenge_method"]  # RFC 7636 would read it as `plain`, which this issuer does not take
    assert redirect_of(server, params)["error"] == ["invalid_request"]


def test_every_public_client_uses_pkce_even_without_the_realms_attribute(kiosk_server: Served) -> None:
    query = redirect_of(kiosk_server, {**authorization(None), "client_id": "kiosk"})
    assert query["error"] == ["invalid_request"] and "code_challenge" in query["error_description"][0]


def test_a_code_works_only_for_the_client_it_was_issued_to(kiosk_server: Served) -> None:
    verifier, challenge = pkce()
    code = sign_in(kiosk_server, authorization(challenge))
    stolen = kiosk_server.token(
        grant_type="authorization_code", client_id="kiosk", code=code, redirect_uri=CALLBACK, code_verifier=verifier
    )
    oauth_error(stolen, 400, "invalid_grant")
    oauth_error(exchange(kiosk_server, code, verifier), 400, "invalid_grant")  # and the try spent it


def test_a_refresh_token_works_only_for_the_client_it_was_issued_to(kiosk_server: Served) -> None:
    body = kiosk_server.password("jane")
    oauth_error(refresh(kiosk_server, body["refresh_token"], client_id="kiosk"), 400, "invalid_grant")
    assert refresh(kiosk_server, body["refresh_token"]).status_code == 200


def test_a_refresh_token_reused_after_rotation_is_refused_and_the_newest_still_works(server: Served) -> None:
    first = server.password("john")
    second = refresh(server, first["refresh_token"]).json()
    third = refresh(server, second["refresh_token"]).json()
    for spent in (first, second):
        oauth_error(refresh(server, spent["refresh_token"]), 400, "invalid_grant")
    assert refresh(server, third["refresh_token"]).status_code == 200


def test_refresh_tokens_are_reusable_when_the_realm_does_not_rotate_them(
    realm_with: Callable[..., Path], tmp_path: Path
) -> None:
    with serve(realm_with(revokeRefreshToken=False), tmp_path / "keys") as server:
        body = server.password("jane")
        for _ in range(2):
            renewed = refresh(server, body["refresh_token"])
            assert renewed.status_code == 200, renewed.text
            assert renewed.json()["refresh_token"] != body["refresh_token"]


def test_a_refresh_token_ends_with_the_realms_maximum_session_lifespan(server: Served, clock: Clock) -> None:
    realm = json.loads(REALM_FILE.read_text(encoding="utf-8"))
    idle, maximum = realm["ssoSessionIdleTimeout"], realm["ssoSessionMaxLifespan"]
    body, refreshes = server.password("jane"), 0
    while True:  # each refresh within the idle timeout, until the session maximum has passed
        clock.now += idle - 1
        renewed = refresh(server, body["refresh_token"])
        if renewed.status_code != 200:
            break
        body, refreshes = renewed.json(), refreshes + 1
        assert 0 < body["refresh_expires_in"] <= idle
    oauth_error(renewed, 400, "invalid_grant")
    assert refreshes == (maximum - 1) // (idle - 1)


def test_logout_takes_an_expired_id_token_as_its_hint(server: Served, clock: Clock) -> None:
    clock.now -= 3600  # the tokens are issued an hour ago, and have expired since
    body = server.password("jane", scope="openid")
    clock.now += 3600
    answer = logout(server, id_token_hint=body["id_token"], post_logout_redirect_uri="http://localhost:8080/")
    assert answer.status_code == 302 and answer.headers["Location"] == "http://localhost:8080/"


def test_logout_refuses_an_id_token_another_client_sends(server: Served) -> None:
    body = server.password("jane", scope="openid")
    answer = logout(server, id_token_hint=body["id_token"], client_id="shop-services")
    assert answer.status_code == 400 and "Location" not in answer.headers
    assert refresh(server, body["refresh_token"]).status_code == 200  # the session goes on


def test_logout_without_a_hint_returns_to_a_uri_registered_for_the_client_only(server: Served) -> None:
    returned = logout(server, client_id="storefront", post_logout_redirect_uri="https://shop.example/")
    assert returned.status_code == 302 and returned.headers["Location"] == "https://shop.example/"
    refused = logout(server, client_id="storefront", post_logout_redirect_uri="https://evil.example/")
    assert refused.status_code == 400 and "Location" not in refused.headers
    bare = logout(server)
    assert bare.status_code == 200 and "logged out" in bare.text


def test_plain_http_under_another_name_than_loopback_is_refused(server: Served) -> None:
    form = {"grant_type": "password", "client_id": "storefront", "username": "jane", "password": "jane-password"}
    # What a browser would send for http://shop.example/... proxied here: passwords in the clear, on a network.
    refused = requests.post(server.endpoint("token"), data=form, headers={"Host": "shop.example"}, timeout=10)
    oauth_error(refused, 400, "insecure_transport")
    localhost = urlsplit(server.url.replace("127.0.0.1", "localhost")).netloc
    allowed = requests.post(server.endpoint("token"), data=form, headers={"Host": localhost}, timeout=10)
    assert allowed.status_code == 200, allowed.text
