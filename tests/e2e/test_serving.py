"""The local runtime behaves like Knative Serving: routing, scale from zero, scale to zero, min-scale."""

from __future__ import annotations

from typing import Any

import requests

from tests.conftest import Ingress, eventually, problem_of


def status_of(stack: Any, name: str) -> dict[str, Any]:
    services = requests.get(f"{stack.url}/_local/services", timeout=10).json()["services"]
    return next(s for s in services if s["name"] == name)


def test_services_are_reached_by_host_or_by_path(stack: Any, ingress: Ingress) -> None:
    by_host = ingress.call("product-list", "GET", "/api/products?size=1")
    by_path = requests.get(f"{stack.url}/ksvc/product-list/api/products?size=1", timeout=30)
    short_host = requests.get(f"{stack.url}/api/products?size=1", headers={"Host": "product-list.shop"}, timeout=30)
    assert by_host.status_code == by_path.status_code == short_host.status_code == 200
    assert by_host.json()["size"] == by_path.json()["size"] == 1


def test_an_unknown_service_is_a_problem_not_a_crash(stack: Any) -> None:
    response = requests.get(f"{stack.url}/ksvc/no-such-service/", timeout=10)
    assert response.status_code == 404
    assert "no-such-service" in problem_of(response)["detail"]


def test_a_function_scales_to_zero_when_idle_and_back_on_the_next_request(stack: Any, ingress: Ingress) -> None:
    revision = stack.revisions["product-get"]
    original = revision.idle_seconds
    revision.idle_seconds = 1.0
    try:
        assert ingress.call("product-get", "GET", "/api/products/none_such").status_code == 404
        starts = status_of(stack, "product-get")["coldStarts"]
        eventually(lambda: not status_of(stack, "product-get")["running"], timeout=15)
        # The request that finds it stopped waits for a new process; it is not dropped.
        again = ingress.call("product-get", "GET", "/api/products/none_such")
        assert again.status_code == 404 and again.headers["Content-Type"].startswith("application/problem+json")
        assert status_of(stack, "product-get")["coldStarts"] == starts + 1
    finally:
        revision.idle_seconds = original


def test_concurrent_requests_to_a_stopped_function_share_one_cold_start(stack: Any, ingress: Ingress) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stack.stop_service("product-list")
    starts = status_of(stack, "product-list")["coldStarts"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda _: ingress.call("product-list", "GET", "/api/products").status_code, range(8)))
    assert codes == [200] * 8
    assert status_of(stack, "product-list")["coldStarts"] == starts + 1


def test_an_event_delivery_starts_a_subscriber_scaled_to_zero(stack: Any, ingress: Ingress, people: Any) -> None:
    """product.created reaches inventory-track through Kafka, the Broker and its Trigger while no
    inventory-track process runs: the delivery starts one and waits for it, as a request does."""
    import uuid

    import psycopg

    stack.stop_service("inventory-track")
    assert not status_of(stack, "inventory-track")["running"]
    starts = status_of(stack, "inventory-track")["coldStarts"]
    sku = f"cold_{uuid.uuid4().hex[:10]}"
    body = {"sku": sku, "name": "Cold start", "category": "tests", "price": 5}
    created = ingress.call("product-create", "POST", "/api/products", json=body, headers=people.admin())
    assert created.status_code == 201, created.text

    def stock_row() -> list[Any]:
        with psycopg.connect(stack.database_urls["inventory"]) as conn:
            return conn.execute("SELECT available FROM stock WHERE sku = %s", (sku,)).fetchall()

    assert eventually(stock_row, timeout=60, interval=0.5) == [(0,)]
    assert status_of(stack, "inventory-track")["coldStarts"] == starts + 1


def test_min_scale_services_stay_up_through_their_idle_window(stack: Any, ingress: Ingress) -> None:
    """Idle far past its window, a min-scale service keeps its one process: never stopped, never restarted."""
    kept, control = stack.revisions["inventory-reserve"], stack.revisions["product-get"]
    assert kept.service.min_scale >= 1 and control.service.min_scale == 0
    before = eventually(lambda: (s := status_of(stack, "inventory-reserve"))["running"] and s, timeout=30)
    originals = kept.idle_seconds, control.idle_seconds
    kept.idle_seconds = control.idle_seconds = 0.2
    try:
        # The control, busy after `kept` was last, scales to zero twice: the autoscaler has since
        # looked at `kept` at least once (a whole round) with its idle window long passed.
        for _ in range(2):
            assert ingress.call("product-get", "GET", "/api/products/none_such").status_code == 404
            eventually(lambda: not status_of(stack, "product-get")["running"], timeout=15)
    finally:
        kept.idle_seconds, control.idle_seconds = originals
    after = status_of(stack, "inventory-reserve")
    assert after["running"]
    assert (after["pid"], after["coldStarts"]) == (before["pid"], before["coldStarts"])


def test_a_crashed_min_scale_service_is_restarted(stack: Any) -> None:
    import os
    import signal

    pid = status_of(stack, "dead-letter")["pid"]
    os.killpg(pid, signal.SIGKILL)
    eventually(lambda: (s := status_of(stack, "dead-letter"))["running"] and s["pid"] != pid, timeout=30)


def test_functions_are_forks_of_the_zygote_which_comes_back_if_killed(stack: Any, ingress: Ingress) -> None:
    """A cold start is a fork of the zygote, which imported the common stack once; killed, it takes its
    forks with it (seen at once, and not held against them as crashes: no CrashLoopBackOff) and the next
    cold start brings a new zygote."""
    import os
    import signal

    import psutil

    zygote = stack.zygote
    assert zygote is not None and zygote.pid is not None
    assert ingress.call("product-get", "GET", "/api/products/none_such").status_code == 404
    function = status_of(stack, "product-get")["pid"]
    assert psutil.Process(function).ppid() == zygote.pid
    first = zygote.pid
    os.kill(first, signal.SIGKILL)
    restarts = status_of(stack, "product-get")["restarts"]
    eventually(lambda: not status_of(stack, "product-get")["running"], timeout=15)
    assert status_of(stack, "product-get")["state"] == "ScaledToZero"
    assert ingress.call("product-get", "GET", "/api/products/none_such").status_code == 404
    assert zygote.pid not in (None, first)
    after = status_of(stack, "product-get")
    assert psutil.Process(after["pid"]).ppid() == zygote.pid and after["restarts"] == restarts
    eventually(lambda: status_of(stack, "dead-letter")["running"], timeout=30)  # min-scale: started again
