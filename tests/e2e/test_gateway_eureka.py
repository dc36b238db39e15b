"""The gateway routing to an app known only to the Eureka-compatible registry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import Ingress, eventually
from tests.e2e.eureka_app import APP, App, registered


@pytest.fixture
def apps(ingress: Ingress) -> Iterator[tuple[App, ...]]:
    with registered(ingress, "first", "second") as running:
        yield running


def test_the_gateway_balances_over_up_instances_and_skips_out_of_service_ones(
    stack: Any, ingress: Ingress, apps: tuple[App, ...]
) -> None:
    _, second = apps

    def served_by() -> str | None:
        return requests.get(f"{stack.url}/api/recommendations?sku=pixel_8", timeout=30).json().get("servedBy")

    # Even shares once the gateway's cache (EUREKA_CACHE_SECONDS) holds just these two instances
    # (an earlier test may have left it holding others).
    served = eventually(
        lambda: (counts := Counter(served_by() for _ in range(10))) == {"first": 5, "second": 5} and counts,
        timeout=20,
        interval=1,
    )
    assert served == {"first": 5, "second": 5}
    out = ingress.call("registry", "PUT", f"/eureka/apps/{APP}/{second.instance_id}/status?value=OUT_OF_SERVICE")
    assert out.status_code == 200, out.text

    def only_first() -> bool:  # once the gateway's cache (EUREKA_CACHE_SECONDS) has expired
        answers = {requests.get(f"{stack.url}/api/recommendations", timeout=30).json()["servedBy"] for _ in range(4)}
        return answers == {"first"}

    eventually(only_first, timeout=20, interval=1)


def test_an_app_with_no_instance_up_is_a_503_problem(stack: Any) -> None:
    # Once the gateway's cache of the (now cancelled) instances has expired.
    def unavailable() -> tuple[requests.Response] | None:  # a tuple: a 503 Response is falsy
        response = requests.get(f"{stack.url}/api/recommendations", timeout=30)
        # (until the cache expires, the gone instances' open circuits answer 503 too)
        return (response,) if response.status_code == 503 and "no instance" in response.text else None

    (response,) = eventually(unavailable, timeout=20, interval=1)
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert "no instance of RECOMMENDATIONS is UP" in response.json()["detail"]


def test_a_registered_app_never_receives_the_signed_identity(stack: Any, ingress: Ingress) -> None:
    """Anyone in the cluster may register an app, and every function accepts X-Shop-Identity:
    the gateway keeps it for the shop's own functions."""
    token = stack.issuer.token_for("admin")["access_token"]
    with registered(ingress, "curious") as (app,):

        def answered() -> bool:
            response = requests.get(
                f"{stack.url}/api/recommendations", headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            return response.ok and response.json()["servedBy"] == "curious"

        eventually(answered, timeout=20, interval=1)
    assert app.headers, "the app was never called"
    received = {name.lower() for headers in app.headers for name in headers}
    assert "x-shop-identity" not in received and "authorization" not in received
    assert "x-request-id" in received  # the headers it is meant to get still arrive
