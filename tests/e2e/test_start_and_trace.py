"""`./taskw start` as a user runs it, traced: the seeded shop serves, and one order is one trace end to end.

This test starts `python -m local start` in its own process (with OTEL_EXPORTER_OTLP_ENDPOINT
pointing at a real OTLP receiver) and talks to it only over HTTP and through its data folder.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from local.servers import free_port
from tests.conftest import ROOT, eventually
from tests.otlp_sink import OtlpSink, Span

pytestmark = pytest.mark.slow  # starts a shop of its own with ./taskw start, and stops it


@pytest.fixture(scope="module")
def sink() -> Iterator[OtlpSink]:
    receiver = OtlpSink().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def shop(sink: OtlpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("started-shop")
    port = free_port()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    for name in ("DATABASE_URL", "MONGODB_URI", "KAFKA_BOOTSTRAP_SERVERS", "SMTP_URL", "OIDC_ISSUER"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "local", "--data-dir", str(data), "start", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        assert process.stdout is not None
        running = False
        for line in process.stdout:
            running = "The shop is running" in line
            if running or time.monotonic() > deadline:
                break
        assert running and process.poll() is None, "the shop did not start"
        yield f"http://127.0.0.1:{port}", data
    finally:
        # Ctrl-C, as a user stops it: every process it started must be gone afterwards.
        started = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=90)
        _, alive = psutil.wait_procs(started, timeout=10)
        assert not alive, f"left running after Ctrl-C: {[p.pid for p in alive]}"


def test_the_started_shop_serves_its_seeded_catalog(shop: tuple[str, Path]) -> None:
    url, _ = shop
    products = requests.get(f"{url}/api/products?size=100", timeout=60).json()["items"]
    skus = {p["sku"] for p in products}
    assert len(products) >= 20 and len({p["category"] for p in products}) >= 4
    assert {"iphone_15", "pixel_8", "galaxy_24", "oneplus_12"} <= skus
    assert requests.get(f"{url}/api/inventory?skuCode=iphone_15&quantity=1", timeout=60).json() is True
    assert requests.get(f"{url}/", timeout=60).headers["Content-Type"].startswith("text/html")


def test_one_order_is_one_trace_from_the_gateway_to_the_email(sink: OtlpSink, shop: tuple[str, Path]) -> None:
    url, data = shop
    token = requests.post(
        f"{url}/realms/shop/protocol/openid-connect/token",
        timeout=30,
        data={"grant_type": "password", "client_id": "storefront", "username": "jane", "password": "jane-password"},
    )
    trace_id, root = secrets.token_hex(16), secrets.token_hex(8)
    placed = requests.post(
        f"{url}/api/orders",
        json={"items": [{"skuCode": "pixel_8", "quantity": 1}]},
        timeout=60,
        headers={"Authorization": f"Bearer {token.json()['access_token']}", "traceparent": f"00-{trace_id}-{root}-01"},
    )
    assert placed.status_code == 201, placed.text
    number = placed.json()["orderNumber"]
    eventually(lambda: any(number in p.read_text() for p in (data / "mail").glob("*.eml")), timeout=60)

    expected = {
        "gateway",
        "order-place",
        "product-get",
        "inventory-reserve",
        "knative-local-runtime",
        "notification-send",
    }

    def orphans(spans: list[Span]) -> list[tuple[str, str]]:
        """Spans whose parent is neither our request nor another span of this trace (so far)."""
        ids = {s.span_id for s in spans}
        return [(s.service, s.name) for s in spans if s.parent_id != root and s.parent_id not in ids]

    def complete() -> list[Span]:
        # Each process exports in its own batches: wait for the services, the email's span, and
        # every parent (a parent still in another process's batch arrives a moment later).
        spans = sink.trace(trace_id)
        mailed = any(s.name == "smtp send" for s in spans)
        return spans if expected <= {s.service for s in spans} and mailed and not orphans(spans) else []

    try:
        spans = eventually(complete, timeout=60, interval=0.5)
    except AssertionError:
        spans = sink.trace(trace_id)
        raise AssertionError(f"services {sorted({s.service for s in spans})}, orphans {orphans(spans)}") from None
    by_id = {s.span_id: s for s in spans}
    names = {s.name for s in spans}
    assert {"send shop.orders", "send knative-broker-shop-shop"} <= names
    assert any(n == "process shop.orders" for n in names)
    # The email's span descends, link by link, from the gateway's server span.
    chain, current = [], next(s for s in spans if s.name == "smtp send")
    while current.parent_id in by_id:
        chain.append(current.service)
        current = by_id[current.parent_id]
    chain.append(current.service)
    assert chain[0] == "notification-send" and chain[-1] == "gateway"
    assert {"order-place", "knative-local-runtime"} <= set(chain)
    producer = next(s for s in spans if s.name == "send shop.orders")
    assert producer.attributes["messaging.system"] == "kafka" and producer.kind == 4  # SPAN_KIND_PRODUCER
    assert producer.attributes["messaging.destination.name"] == "shop.orders"
    smtp = next(s for s in spans if s.name == "smtp send")
    assert smtp.kind == 3 and smtp.attributes["server.address"] == "127.0.0.1"  # SPAN_KIND_CLIENT

    # The request's log lines carry its trace id, and no secret.
    logs = {p.name: p.read_text() for p in (data / "logs").glob("*.log")}
    traced = [
        json.loads(line)
        for text in logs.values()
        for line in text.splitlines()
        if line.startswith("{") and trace_id in line
    ]
    assert {"order-place", "notification-send"} <= {line["service"] for line in traced}
    assert any(line.get("order_number") == number for line in traced)
    everything = "\n".join(logs.values())
    assert "Bearer " not in everything and "jane-password" not in everything
    assert not re.search(r"\bjane@example\.com\b", everything)


def test_reset_or_a_second_start_is_refused_while_the_shop_runs(shop: tuple[str, Path]) -> None:
    url, data = shop
    before = sorted(p.name for p in data.iterdir())
    for command in (["reset"], ["start", "--port", str(free_port())]):
        refused = subprocess.run(
            [sys.executable, "-m", "local", "--data-dir", str(data), *command],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0, refused.stdout
        assert "the shop is running" in refused.stderr, refused.stderr
    assert sorted(p.name for p in data.iterdir()) == before
    assert requests.get(f"{url}/api/products/pixel_8", timeout=60).status_code == 200
