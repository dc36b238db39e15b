"""Function-to-function calls: retries only for idempotent calls, a windowed breaker that opens and recovers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from circuitbreaker import CircuitBreakerMonitor
from prometheus_client import REGISTRY

from functions.shared import service_client
from functions.shared.keepalive import TransportTimeout
from functions.shared.resilience import BreakerPolicy
from functions.shared.service_client import Reply, ServiceClient, UpstreamUnavailable

FAST_RECOVERY = BreakerPolicy(open_seconds=0.2)


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
    monkeypatch.setattr(service_client, "send", fake.send)
    yield fake


def test_an_idempotent_call_is_retried_until_it_succeeds(upstream: Upstream) -> None:
    upstream.script = [503, TransportTimeout("slow"), 200]
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
    client = ServiceClient("inventory-reserve", breaker=BreakerPolicy(minimum_calls=2))
    for _ in range(3):
        assert client.call("POST", "/reservations", idempotent=True).status == 409
    assert client.breaker.state == "closed"


def fail(client: ServiceClient, times: int) -> None:
    for _ in range(times):
        with pytest.raises(UpstreamUnavailable, match="answered 500"):
            client.call("GET", "/api/products/x", idempotent=True)


def succeed(client: ServiceClient, times: int) -> None:
    for _ in range(times):
        assert client.call("GET", "/api/products/x", idempotent=True).status == 200


def test_the_breaker_uses_the_architectures_window_by_default() -> None:
    assert ServiceClient("inventory-reserve").breaker.policy == BreakerPolicy(
        window=10, failure_rate=50, minimum_calls=5, open_seconds=5, half_open_calls=3
    )


def test_five_failures_in_the_last_ten_calls_open_the_breaker(upstream: Upstream) -> None:
    upstream.script = [200] * 5 + [500] * 5
    client = ServiceClient("product-get", retries=0, breaker=FAST_RECOVERY)
    succeed(client, 5)
    fail(client, 4)
    assert client.breaker.state == "closed"  # 4 of 9
    fail(client, 1)
    assert client.breaker.state == "open"  # 5 of 10: 50 %
    with pytest.raises(UpstreamUnavailable, match="circuit open") as caught:
        client.call("GET", "/api/products/x", idempotent=True)
    assert caught.value.retry_after >= 1
    assert len(upstream.calls) == 10  # the open circuit did not call


def test_four_failures_in_the_last_ten_calls_do_not(upstream: Upstream) -> None:
    upstream.script = [200] * 6 + [500] * 4
    client = ServiceClient("product-get", retries=0, breaker=FAST_RECOVERY)
    succeed(client, 6)
    fail(client, 4)
    assert client.breaker.state == "closed"  # 4 of 10: 40 %


def test_failures_older_than_the_last_ten_calls_are_forgotten(upstream: Upstream) -> None:
    upstream.script = [200] * 5 + [500] * 4 + [200] * 6 + [500]
    client = ServiceClient("product-get", retries=0, breaker=FAST_RECOVERY)
    succeed(client, 5)
    fail(client, 4)
    succeed(client, 6)
    fail(client, 1)  # the 5th failure of 16 calls, but only the 4th of the last 10
    assert client.breaker.state == "closed"


def test_a_run_of_failures_below_the_minimum_calls_leaves_it_closed(upstream: Upstream) -> None:
    upstream.script = [500] * 4
    client = ServiceClient("product-get", retries=0, breaker=FAST_RECOVERY)
    fail(client, 4)
    assert client.breaker.state == "closed"  # 100 %, but only 4 calls seen


def test_half_open_lets_exactly_three_trials_through_and_closes_when_they_pass(upstream: Upstream) -> None:
    upstream.script = [500] * 5
    client = ServiceClient("product-get", retries=0, breaker=FAST_RECOVERY)
    fail(client, 5)
    time.sleep(0.25)
    assert client.breaker.state == "half_open"
    assert [client.breaker.allow() for _ in range(4)] == [True, True, True, False]
    with pytest.raises(UpstreamUnavailable, match="circuit open"):
        client.call("GET", "/api/products/x", idempotent=True)  # no trial slot left: not sent
    for _ in range(3):
        client.breaker.record(True)
    assert client.breaker.state == "closed"
    assert len(upstream.calls) == 5


def test_half_open_trials_go_out_and_a_failed_one_opens_it_again(upstream: Upstream) -> None:
    upstream.script = [500] * 5 + [200, 200, 500]
    client = ServiceClient("product-get", retries=0, breaker=FAST_RECOVERY)
    fail(client, 5)
    time.sleep(0.25)
    succeed(client, 2)
    assert client.breaker.state == "half_open"
    fail(client, 1)
    assert client.breaker.state == "open"
    with pytest.raises(UpstreamUnavailable, match="circuit open"):
        client.call("GET", "/api/products/x", idempotent=True)
    assert len(upstream.calls) == 8


def test_the_breaker_recovers_after_three_good_trials(upstream: Upstream) -> None:
    upstream.script = [500] * 5 + [200] * 3
    client = ServiceClient("product-get", retries=0, breaker=FAST_RECOVERY)
    fail(client, 5)
    time.sleep(0.25)
    succeed(client, 3)
    assert client.breaker.state == "closed"


def test_the_library_holds_the_state_and_lists_the_breaker(upstream: Upstream) -> None:
    upstream.script = [500] * 5
    client = ServiceClient("unit-monitored-upstream", retries=0, breaker=FAST_RECOVERY)
    fail(client, 5)
    circuit = CircuitBreakerMonitor.get("unit-monitored-upstream")
    assert circuit is client.breaker.circuit and circuit.opened
    assert circuit in list(CircuitBreakerMonitor.get_open())


def test_a_policy_the_library_would_misread_is_refused() -> None:
    with pytest.raises(ValueError, match="open_seconds"):
        BreakerPolicy(open_seconds=0)  # the library would read 0 as its default of 30 s
    with pytest.raises(ValueError, match="minimum_calls"):
        BreakerPolicy(window=4, minimum_calls=5)


def test_the_breaker_state_is_a_metric(upstream: Upstream) -> None:
    upstream.script = [500] * 5
    client = ServiceClient("unit-metric-upstream", retries=0, breaker=FAST_RECOVERY)

    def state() -> float | None:
        return REGISTRY.get_sample_value("shop_upstream_circuit_state", {"upstream": "unit-metric-upstream"})

    assert state() == 0
    fail(client, 5)
    assert state() == 2
    time.sleep(0.25)
    assert state() == 1


def test_a_retried_call_counts_once_in_the_window(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_client, "pause_before_retry", lambda retry, deadline: None)
    upstream.script = [503, 503, 503, 503] * 5
    client = ServiceClient("inventory-reserve", timeout=10.0, retries=3, breaker=FAST_RECOVERY)
    for _ in range(4):
        with pytest.raises(UpstreamUnavailable, match="answered 503"):
            client.call("POST", "/reservations", idempotent=True)
    assert client.breaker.state == "closed" and len(upstream.calls) == 16


def test_cluster_urls_go_through_the_local_ingress_when_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.shared import config as config_module

    seen: dict[str, Any] = {}

    class Pool:
        def request(self, method: str, url: str, body: bytes | None, headers: Any, timeout: float) -> Any:
            seen.update(url=url, headers=headers)
            return 204, {}, b""

    monkeypatch.setattr(service_client, "_pool", Pool())
    monkeypatch.setenv("SERVICE_INGRESS_URL", "http://127.0.0.1:8080")
    config_module.config.cache_clear()
    try:
        service_client.send("POST", "http://notification-send.shop.svc.cluster.local/x?y=1", b"", {}, 1.0)
    finally:
        config_module.config.cache_clear()
    assert seen == {
        "url": "http://127.0.0.1:8080/x?y=1",
        "headers": {"Host": "notification-send.shop.svc.cluster.local"},
    }
