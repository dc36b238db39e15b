"""The gateway routing to an app known only to the Eureka-compatible registry."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.conftest import Ingress, eventually

APP = "RECOMMENDATIONS"


class App:
    """A real HTTP server standing in for a Spring Boot service: it answers with its own name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                app.hits += 1
                body = json.dumps({"servedBy": app.name, "path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def instance(self, status: str = "UP") -> dict[str, Any]:
        return {
            "instance": {
                "instanceId": f"{self.name}:{self.port}",
                "hostName": "127.0.0.1",
                "app": APP,
                "ipAddr": "127.0.0.1",
                "status": status,
                "port": {"$": self.port, "@enabled": "true"},
                "securePort": {"$": 443, "@enabled": "false"},
                "vipAddress": "recommendations",
                "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
                "leaseInfo": {"durationInSecs": 300, "renewalIntervalInSecs": 30},
            }
        }


@pytest.fixture
def apps(ingress: Ingress) -> Iterator[tuple[App, App]]:
    first, second = App("first"), App("second")
    for app in (first, second):
        registered = ingress.call("registry", "POST", f"/eureka/apps/{APP}", json=app.instance())
        assert registered.status_code == 204, registered.text
    yield first, second
    for app in (first, second):
        ingress.call("registry", "DELETE", f"/eureka/apps/{APP}/{app.name}:{app.port}")
        app.server.shutdown()
        app.server.server_close()


def test_the_gateway_balances_over_up_instances_and_skips_out_of_service_ones(
    stack: Any, ingress: Ingress, apps: tuple[App, App]
) -> None:
    _, second = apps
    served = Counter(
        requests.get(f"{stack.url}/api/recommendations?sku=pixel_8", timeout=30).json()["servedBy"] for _ in range(10)
    )
    assert served == {"first": 5, "second": 5}
    out = ingress.call("registry", "PUT", f"/eureka/apps/{APP}/second:{second.port}/status?value=OUT_OF_SERVICE")
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
