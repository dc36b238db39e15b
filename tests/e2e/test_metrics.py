"""A real Prometheus scraping the running shop: orders, emails and deliveries show in its answers.

Debian's `prometheus` (tests/observability_tools.py fetches it) scrapes every running function's
/metrics, found through the runtime's HTTP service discovery (local/prometheus.py; a function's
port changes whenever its process restarts), and the runtime's own /_local/metrics, every second.
The test reads everything back through Prometheus's HTTP API, as Grafana would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from local import prometheus as discovery
from local.servers import free_port
from tests import observability_tools as tools
from tests.conftest import eventually

ORDERS = 3
PINNED_IDLE_SECONDS = 3600.0
# What placing an order touches, started (and pinned) before the first reading.
WARM = ("order-place", "product-get", "inventory-reserve", "inventory-confirm", "notification-send")
FUNCTIONS_JOB = "shop-functions"  # the job name knative/observability/prometheus.yml gives the functions
PLACED = "sum(shop_orders_placed_total)"
EMAILS = 'sum(shop_notifications_emails_sent_total{type="com.shop.order.placed"})'
CREATED = 'sum(shop_http_requests_total{route="order-place",status="201"})'
DELIVERED = 'sum(shop_eventing_deliveries_total{outcome="delivered"})'
CONSUMED = 'sum(shop_events_consumed_total{type="com.shop.order.placed",outcome="processed"})'
# Series a dashboard queries that only exist after rare events; none of them happens in this test.
RARE = {
    "shop_events_dead_lettered_total",  # an event whose delivery retries all failed
    "shop_eventing_delivery_retries_total",  # a delivery that failed once
    "shop_gateway_rate_limited_total",  # a client over its token bucket (429)
}


class PrometheusServer:
    """Debian's prometheus binary on a free port, with its TSDB in a temporary folder."""

    def __init__(self, binary: Path, config: Path, folder: Path) -> None:
        self.binary, self.config, self.folder = binary, config, folder
        self.url = ""
        self.log = folder / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        self.url = f"http://127.0.0.1:{free_port()}"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.folder / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        eventually(self._ready, timeout=30, interval=0.2)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log.read_text()}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _api(self, path: str, **params: str) -> Any:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self._api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def value(self, expr: str) -> float:
        """The value of an aggregating query now; no series at all is 0 (nothing counted yet)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} is not one number: {result}"
        return float(result[0]["value"][1]) if result else 0.0

    def up(self, job: str) -> set[str]:
        """Services of the job's targets whose last scrape succeeded."""
        return {series["metric"].get("service", "") for series in self.query(f'up{{job="{job}"}} == 1')}

    def names(self) -> set[str]:
        return set(self._api("label/__name__/values"))


@contextmanager
def pinned(stack: Any) -> Iterator[None]:
    """No function scales to zero meanwhile: a new process would start its counters again at 0."""
    original = {name: revision.idle_seconds for name, revision in stack.revisions.items()}
    for revision in stack.revisions.values():
        revision.idle_seconds = PINNED_IDLE_SECONDS
    try:
        yield
    finally:
        for name, seconds in original.items():
            stack.revisions[name].idle_seconds = seconds


def scrape_config(targets_url: str, runtime_address: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            # Labelled `service` by the discovery document, as the cluster's relabelling does.
            {"job_name": FUNCTIONS_JOB, "http_sd_configs": [{"url": targets_url, "refresh_interval": "1s"}]},
            # No `service` target label here: the runtime's own series carry one (cold starts by service).
            {
                "job_name": "local-runtime",
                "metrics_path": "/_local/metrics",
                "static_configs": [{"targets": [runtime_address]}],
            },
        ],
    }


@pytest.fixture(scope="module")
def prometheus_binary() -> Path:
    try:
        return tools.prometheus_bin_dir() / "prometheus"
    except tools.ToolUnavailable as missing:
        pytest.skip(str(missing))


@pytest.mark.slow
def test_prometheus_sees_orders_emails_and_deliveries(
    stack: Any, shop: Any, customer: Any, prometheus_binary: Path, tmp_path: Path
) -> None:
    targets_url = stack.url + discovery.PATH  # the runtime's http_sd document (local/prometheus.py)
    with pinned(stack):
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(targets_url, stack.url.removeprefix("http://"))))
        server = PrometheusServer(prometheus_binary, config, tmp_path).start()
        try:
            sku = shop.product(units=ORDERS * 2)
            for name in WARM:
                assert shop.ingress.call(name, "GET", "/healthz").status_code == 200, name
            # Every running function scraped at least once: the readings below are its counters.
            running = set(stack.running())
            eventually(lambda: server.up(FUNCTIONS_JOB) >= running, timeout=30, interval=0.5)
            before = {query: server.value(query) for query in (PLACED, EMAILS, CREATED, DELIVERED, CONSUMED)}

            numbers = []
            for _ in range(ORDERS):
                placed = shop.order(customer(), (sku, 1))
                assert placed.status_code == 201, placed.text
                numbers.append(placed.json()["orderNumber"])
            for number in numbers:
                shop.wait_for_mail(number)

            def counted() -> dict[str, float]:
                now = {query: server.value(query) - before[query] for query in before}
                done = now[PLACED] >= ORDERS and now[EMAILS] >= ORDERS and now[CREATED] >= ORDERS
                return now if done and now[DELIVERED] > 0 and now[CONSUMED] >= ORDERS * 2 else {}

            increase = eventually(counted, timeout=30, interval=0.5)
            assert increase[PLACED] == ORDERS, increase
            assert increase[EMAILS] == ORDERS, increase
            assert increase[CREATED] == ORDERS, increase
            assert increase[DELIVERED] >= ORDERS * 2, increase  # inventory-confirm and notification-send each
            assert increase[CONSUMED] == ORDERS * 2, increase  # the same two, each once, as the functions count
            assert server.query("shop_serving_cold_starts_total > 0"), "the runtime counted no process start"

            # What the dashboards need besides orders: an outbox sweep (outbox lag) and a request
            # through the gateway (its breaker, upstream attempts and latency).
            assert shop.fire("outbox-relay-orders")["delivered"]
            assert requests.get(f"{stack.url}/api/products?size=1", timeout=60).status_code == 200
            queried = set().union(*tools.dashboard_metric_names().values())
            assert queried >= RARE, f"allow-listed but queried by no dashboard: {sorted(RARE - queried)}"

            def missing() -> set[str]:
                return queried - RARE - server.names()

            try:
                eventually(lambda: not missing(), timeout=30, interval=0.5)
            except AssertionError:
                pytest.fail(f"dashboards query series Prometheus never saw: {sorted(missing())}")
        finally:
            server.stop()
