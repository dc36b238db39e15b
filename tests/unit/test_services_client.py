"""Function-to-function calls: retries only for idempotent calls, a breaker that opens and recovers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from functions.shared import services
from functions.shared.services import Reply, ServiceClient, UpstreamUnavailable


class Upstream:
    """A scripted upstream: each call takes the next answer (a status, or an exception to raise)."""

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.calls: list[str] = []

    def send(self, method: str, url: str, body: bytes | None, headers: Any, timeout: float) -> Reply:
        self.calls.append(f"{method} {url}")
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Reply(answer, {}, b"{}")


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[Upstream]:
    fake = Upstream()
    monkeypatch.setattr(services, "send", fake.send)
    yield fake


def test_an_idempotent_call_is_retried_until_it_succeeds(upstream: Upstream) -> None:
    upstream.script = [503, urllib3.exceptions.ReadTimeoutError(None, "/", "slow"), 200]
    client = ServiceClient("inventory-reserve", timeout=3.0, retries=3)
    assert client.call("POST", "/reservations", body={}, idempotent=True).status == 200
    assert len(upstream.calls) == 3


def test_a_call_that_is_not_idempotent_is_never_retried(upstream: Upstream) -> None:
    upstream.script = [503, 200]
    client = ServiceClient("order-place", timeout=3.0, retries=3)
    with pytest.raises(UpstreamUnavailable, match="answered 503"):
        client.call("POST", "/api/orders", body={})
    assert len(upstream.calls) == 1


def test_client_errors_are_answers_not_failures(upstream: Upstream) -> None:
    upstream.script = [409, 409, 409, 409, 409, 409]
    client = ServiceClient("inventory-reserve", failure_threshold=2)
    for _ in range(3):
        assert client.call("POST", "/reservations", idempotent=True).status == 409
    assert not client.breaker.opened


def test_the_breaker_opens_after_consecutive_failures_and_half_opens_later(upstream: Upstream) -> None:
    upstream.script = [500, 500, 200]
    client = ServiceClient("product-get", retries=0, failure_threshold=2, recovery_timeout=0.2)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            client.call("GET", "/api/products/x", idempotent=True)
    with pytest.raises(UpstreamUnavailable, match="circuit open") as caught:
        client.call("GET", "/api/products/x", idempotent=True)
    assert caught.value.retry_after >= 1
    assert len(upstream.calls) == 2  # the open circuit did not call
    import time

    time.sleep(0.25)
    assert client.call("GET", "/api/products/x", idempotent=True).status == 200
    assert not client.breaker.opened


def test_cluster_urls_go_through_the_local_ingress_when_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.shared import config as config_module

    seen: dict[str, Any] = {}

    class Pool:
        def request(self, method: str, url: str, **kwargs: Any) -> Any:
            seen.update(url=url, headers=kwargs["headers"])
            return type("R", (), {"status": 204, "headers": {}, "data": b""})()

    monkeypatch.setattr(services, "_pool", Pool())
    monkeypatch.setenv("SERVICE_INGRESS_URL", "http://127.0.0.1:8080")
    config_module.config.cache_clear()
    try:
        services.send("POST", "http://notification-send.shop.svc.cluster.local/x?y=1", b"", {}, 1.0)
    finally:
        config_module.config.cache_clear()
    assert seen == {
        "url": "http://127.0.0.1:8080/x?y=1",
        "headers": {"Host": "notification-send.shop.svc.cluster.local"},
    }
