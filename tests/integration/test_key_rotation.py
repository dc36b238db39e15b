"""Key rotation end to end: the local issuer rotated through its own admin API, the gateway's
JwtVerifier fetching its keys over HTTP, and the gateway function itself in front of an upstream."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import functions_framework
import pytest
import requests
from flask.testing import FlaskClient
from jose import jwt

from functions.shared import identity
from functions.shared.problems import Problem
from gateway import bootstrap
from gateway.auth import JwtVerifier, fetch_json
from tests.conftest import eventually, problem_of
from tests.integration.test_issuer import REALM_FILE, SERVICES_SECRET, Served, serve

IDENTITY_SECRET = "key-rotation-test-identity-secret"


class Fetches:
    """fetch_json, counted: how often the verifier went to the issuer, and for what."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, url: str) -> dict[str, Any]:
        with self._lock:
            self.urls.append(url)
        return fetch_json(url)

    @property
    def jwks(self) -> int:
        return sum(url.endswith("/certs") for url in self.urls)


class KeysAdmin:
    """The issuer's admin API, called as a script would: a service-account token, then HTTP."""

    def __init__(self, server: Served) -> None:
        self.server = server
        self.url = f"{server.url}/admin/realms/shop/keys"

    def _post(self, action: str) -> dict[str, Any]:
        grant = self.server.token(("shop-services", SERVICES_SECRET), grant_type="client_credentials")
        bearer = {"Authorization": f"Bearer {grant.json()['access_token']}"}
        answer = requests.post(f"{self.url}/{action}", headers=bearer, timeout=30)
        assert answer.status_code in (200, 201), answer.text
        return dict(answer.json())

    def rotate(self) -> str:
        return str(self._post("rotate")["active"]["RS256"])

    def retire_old(self) -> None:
        assert len(self._post("retire-old")["keys"]) == 1


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with serve(REALM_FILE, tmp_path / "issuer") as served:
        yield served


@pytest.fixture
def admin(server: Served) -> KeysAdmin:
    return KeysAdmin(server)


def verifier_of(issuer: str, fetch: Callable[[str], dict[str, Any]], **settings: Any) -> JwtVerifier:
    return JwtVerifier(issuer, audience="shop-api", allowed_clients=["storefront"], fetch=fetch, **settings)


def answer_of(verifier: JwtVerifier, token: str) -> str | Problem:
    """The subject the token proves, or the problem the verifier raised."""
    try:
        return verifier.verify(token).subject
    except Problem as problem:
        return problem


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def jane_subject(server: Served) -> str:
    return str(jwt.get_unverified_claims(server.password("jane")["access_token"])["sub"])


def test_twenty_requests_with_a_key_rotated_moments_ago_are_accepted_after_one_fetch(
    server: Served, admin: KeysAdmin
) -> None:
    fetches = Fetches()
    verifier = verifier_of(server.issuer.issuer, fetches)
    verifier.verify(server.password("jane")["access_token"])  # the keys were fetched just now
    new_kid = admin.rotate()
    token = server.password("jane")["access_token"]
    assert kid_of(token) == new_kid
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: answer_of(verifier, token), range(20)))
    assert answers == [jane_subject(server)] * 20  # every one on its first try
    assert fetches.jwks == 2  # the first load, and one shared fetch for the new key


def test_a_withdrawn_key_is_refused_once_the_new_set_is_fetched_even_for_a_cached_token(
    server: Served, admin: KeysAdmin
) -> None:
    fetches = Fetches()
    verifier = verifier_of(server.issuer.issuer, fetches)
    old = server.password("jane")["access_token"]
    verifier.verify(old)
    verifier.verify(old)  # answered from the cache of verified tokens
    admin.rotate()
    admin.retire_old()
    new = server.password("jane")["access_token"]
    assert verifier.verify(new).subject == jane_subject(server)  # fetches the set that lacks the old key
    seen = len(fetches.urls)
    refusal = answer_of(verifier, old)
    assert isinstance(refusal, Problem) and refusal.status == 401, refusal
    assert f"unknown signing key {kid_of(old)!r}" in refusal.detail
    assert len(fetches.urls) == seen  # known to be withdrawn: no fetch needed to refuse it


def test_a_withdrawn_key_is_noticed_when_the_set_grows_old_without_any_new_kid(
    server: Served, admin: KeysAdmin
) -> None:
    verifier = verifier_of(server.issuer.issuer, fetch_json, refresh_seconds=0.5)
    old = server.password("jane")["access_token"]
    verifier.verify(old)
    admin.rotate()
    admin.retire_old()
    # No token with the new kid reaches the verifier: only the age of its set makes it fetch again.
    eventually(lambda: isinstance(answer_of(verifier, old), Problem), timeout=30)
    refusal = answer_of(verifier, old)
    assert isinstance(refusal, Problem) and refusal.status == 401 and "unknown signing key" in refusal.detail


@pytest.fixture
def hanging_issuer() -> Iterator[tuple[str, list[socket.socket]]]:
    """An issuer that accepts connections and never answers (a hung Keycloak); the list holds them."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)

    threading.Thread(target=accept, name="hanging-issuer", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/realms/shop", accepted
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


def test_a_hung_issuer_at_start_costs_one_attempt_then_503s_at_once(
    server: Served, hanging_issuer: tuple[str, list[socket.socket]]
) -> None:
    url, connections = hanging_issuer
    retry_seconds = 30.0
    verifier = verifier_of(
        server.issuer.issuer, fetch_json, retry_seconds=retry_seconds, discovery_url=f"{url}/.well-known/x"
    )
    token = server.password("jane")["access_token"]
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: answer_of(verifier, token), range(10)))
    failed_at = time.monotonic()
    for answer in answers:  # all ten waited on the one attempt (3 s to time out), and share its failure
        assert isinstance(answer, Problem) and answer.status == 503, answer
        assert 1 <= int(answer.headers["Retry-After"]) <= retry_seconds
    eventually(lambda: connections)  # the accepting thread has taken the one connection in
    assert len(connections) == 1
    # Within the window every request is answered 503 without going to the issuer.
    for _ in range(10):
        answer = answer_of(verifier, token)
        assert isinstance(answer, Problem) and answer.status == 503
    assert len(connections) <= 1 + (time.monotonic() - failed_at) / retry_seconds


def test_an_issuer_down_at_start_is_used_as_soon_as_it_is_up(tmp_path: Path) -> None:
    retry_seconds = 0.5
    issuer = Served(REALM_FILE, tmp_path / "issuer")  # its port is taken but nothing listens yet
    fetches = Fetches()
    verifier = verifier_of(issuer.issuer.issuer, fetches, retry_seconds=retry_seconds)
    token = issuer.issuer.token_for("jane")["access_token"]
    began = time.monotonic()
    refusal = answer_of(verifier, token)
    assert isinstance(refusal, Problem) and refusal.status == 503 and "Retry-After" in refusal.headers
    assert "identity provider is unreachable" in refusal.detail
    issuer.start()
    try:
        eventually(lambda: answer_of(verifier, token) == jwt.get_unverified_claims(token)["sub"])
        failed = len(fetches.urls) - 2  # the last two: discovery and keys, once the issuer answered
        assert 1 <= failed <= 1 + (time.monotonic() - began) / retry_seconds
    finally:
        issuer.stop()


# --- the gateway function ---------------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[str]:
    """Stands in for every function behind the gateway: answers with the identity it was sent."""

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            caller = identity.verify(self.headers[identity.HEADER], IDENTITY_SECRET)
            body = json.dumps({"subject": caller.subject}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=httpd.serve_forever, name="upstream", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def gateway(server: Served, upstream: str, function_env: Callable[..., None]) -> Iterator[FlaskClient]:
    """The gateway function in process, configured as its Knative Service is, against the test issuer."""
    function_env(OIDC_ISSUER=server.issuer.issuer, IDENTITY_SECRET=IDENTITY_SECRET, SERVICE_INGRESS_URL=upstream)
    bootstrap.gateway.cache_clear()
    try:
        yield functions_framework.create_app("gateway", "gateway/main.py").test_client()
    finally:
        bootstrap.gateway.cache_clear()


def test_the_gateway_follows_a_rotation_made_through_the_issuers_api(
    server: Served, admin: KeysAdmin, gateway: FlaskClient
) -> None:
    def orders(token: str) -> Any:
        return gateway.get("/api/orders", headers={"Authorization": f"Bearer {token}"})

    old = server.password("jane")["access_token"]
    first = orders(old)
    assert first.status_code == 200, first.data
    assert first.get_json() == {"subject": jane_subject(server)}

    admin.rotate()
    rotated = server.password("jane")["access_token"]
    answer = orders(rotated)  # a kid the gateway fetched no key for yet, moments after its last fetch
    assert answer.status_code == 200, answer.data
    assert orders(old).status_code == 200  # the old key is still published

    admin.retire_old()
    admin.rotate()
    newest = server.password("jane")["access_token"]
    assert orders(newest).status_code == 200  # its fetch brings the set without the oldest key
    refused = orders(old)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "unknown signing key" in problem_of(refused)["detail"]
    assert orders(rotated).status_code == 200
